"""MNIST-1D (Greydanus 2020): 1-D digit sequences generated procedurally, no download.

The ``mnist1d`` package's ``make_dataset`` draws 5,000 sequences of 40 values (10 classes) from
one seed: 4,000 for the pool (split into train/val per episode) and 1,000 for test. Generation
takes about a second and a half, so each data seed is generated once and kept in memory and in
``$L2T_CACHE_DIR`` (default ``~/.cache/l2t-env``)/``mnist1d``. Install it with the ``mnist1d``
extra: ``pip install 'l2t-env[mnist1d]'``.
"""

from __future__ import annotations

import random

import numpy as np
import torch

from l2t_env.disk_cache import cache_root, cached
from l2t_env.tasks import RawData, TaskConfig

#: the package's own default seed, the one behind its published data set
DEFAULT_DATA_SEED = 42

_MEMORY: dict[int, dict[str, torch.Tensor]] = {}


def generate(data_seed: int) -> dict[str, torch.Tensor]:
    """The 4,000/1,000 split of ``mnist1d.data.make_dataset`` for one seed (inputs standardised)."""
    try:
        from mnist1d.data import get_dataset_args, make_dataset
    except ImportError as err:
        raise ImportError(
            "the MNIST-1D tasks need the mnist1d package: pip install 'l2t-env[mnist1d]' (or pip install mnist1d)"
        ) from err
    args = get_dataset_args()
    args.seed = int(data_seed)
    # make_dataset seeds numpy's and random's global generators; leave the caller's untouched.
    np_state, py_state = np.random.get_state(), random.getstate()
    try:
        data = make_dataset(args)
    finally:
        np.random.set_state(np_state)
        random.setstate(py_state)
    return {
        "x": torch.tensor(data["x"], dtype=torch.float32),
        "y": torch.tensor(data["y"], dtype=torch.long),
        "x_test": torch.tensor(data["x_test"], dtype=torch.float32),
        "y_test": torch.tensor(data["y_test"], dtype=torch.long),
    }


def load_mnist1d(config: TaskConfig) -> RawData:
    """MNIST-1D from ``dataset_kwargs.data_seed`` (default 42, the package's).

    ``dataset_kwargs.channel=True`` gives inputs of shape ``[1, 40]`` for 1-D convolutions.
    """
    kwargs = dict(config.dataset_kwargs)
    data_seed = kwargs.pop("data_seed", DEFAULT_DATA_SEED)
    channel = bool(kwargs.pop("channel", False))
    if kwargs:
        raise ValueError(f"mnist1d: unknown dataset_kwargs {sorted(kwargs)}; valid: ['channel', 'data_seed']")
    if isinstance(data_seed, bool) or not isinstance(data_seed, int) or data_seed < 0:
        raise ValueError(f"mnist1d: data_seed={data_seed!r}, expected an integer >= 0")
    if data_seed not in _MEMORY:
        keys = {"x", "y", "x_test", "y_test"}
        _MEMORY[data_seed] = cached(
            cache_root() / "mnist1d" / f"seed{data_seed}.pt",
            lambda: generate(data_seed),
            lambda obj: isinstance(obj, dict) and set(obj) == keys,
        )
    d = _MEMORY[data_seed]
    x, x_test = d["x"], d["x_test"]
    if channel:
        x, x_test = x[:, None, :], x_test[:, None, :]
    return RawData(x.clone(), d["y"].clone(), x_test.clone(), d["y_test"].clone(), num_classes=10)
