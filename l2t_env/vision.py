"""Vision data sets (CIFAR-10/100, MNIST, random CIFAR-shaped data) and the CIFAR augmentation.

torchvision is an optional extra (``pip install "l2t-env[vision]"``) and is imported only inside
the loaders that read real data, so the package and the random benchmark data work without it.
Downloads are opt-in (``download=True``). Images are read once into normalised float32 tensors
``[N, C, H, W]``; the official training set is the pool (split into train/val by the episode
seed), the official test set is the test split.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Optional

import torch
import torch.nn.functional as F

from l2t_env.tasks import RawData, TaskConfig

CIFAR10_MEAN, CIFAR10_STD = (0.4914, 0.4822, 0.4465), (0.2470, 0.2435, 0.2616)
CIFAR100_MEAN, CIFAR100_STD = (0.5071, 0.4865, 0.4409), (0.2673, 0.2564, 0.2762)
MNIST_MEAN, MNIST_STD = (0.1307,), (0.3081,)


def _options(name: str, config: TaskConfig, defaults: dict[str, Any]) -> dict[str, Any]:
    """``config.dataset_kwargs`` over ``defaults``; an unknown key raises with the valid ones."""
    kwargs = dict(config.dataset_kwargs or {})
    unknown = sorted(set(kwargs) - set(defaults))
    if unknown:
        raise ValueError(f"{name}: unknown dataset_kwargs {unknown}; valid: {sorted(defaults)}")
    return {**defaults, **kwargs}


def _import_torchvision() -> Any:
    try:
        import torchvision  # noqa: F401
        import torchvision.datasets as datasets
    except Exception as err:  # a broken install (e.g. a CUDA wheel on a CPU torch) is not only ImportError
        raise ImportError(
            'reading CIFAR/MNIST needs torchvision; install it with pip install "l2t-env[vision]" '
            f"(a torchvision build matching your torch). Original error: {type(err).__name__}: {err}"
        ) from err
    return datasets


def _missing(what: str, folder: Path, config: TaskConfig, archive: str) -> FileNotFoundError:
    return FileNotFoundError(
        f"{what} not found: expected the folder {folder} (data_root={config.data_root!r}). "
        f'Let torchvision fetch it by passing download=True, e.g. gym.make("L2T-v0", task={config.name!r}, '
        f"download=True), or by setting `download: true` in the task config; or place the official "
        f"{archive} there yourself."
    )


def _subset(x: torch.Tensor, y: torch.Tensor, n: Optional[int], key: str, name: str) -> tuple:
    if n is None:
        return x, y
    if not isinstance(n, int) or isinstance(n, bool) or n < 1:
        raise ValueError(f"{name}: dataset_kwargs {key}={n!r}, expected a positive integer or null")
    return x[:n], y[:n]


def _normalise(x_uint8_nchw: torch.Tensor, mean: tuple, std: tuple) -> torch.Tensor:
    x = x_uint8_nchw.float().div_(255.0)
    m = torch.tensor(mean, dtype=torch.float32).view(1, -1, 1, 1)
    s = torch.tensor(std, dtype=torch.float32).view(1, -1, 1, 1)
    return x.sub_(m).div_(s)


def _load_cifar(config: TaskConfig, which: str) -> RawData:
    name = config.dataset if isinstance(config.dataset, str) else which
    opts = _options(name, config, {"n_pool": None, "n_test": None})
    datasets = _import_torchvision()
    if which == "cifar10":
        cls, folder_name, classes, mean, std = datasets.CIFAR10, "cifar-10-batches-py", 10, CIFAR10_MEAN, CIFAR10_STD
        what, archive = "CIFAR-10", "CIFAR-10 python version archive (cifar-10-python.tar.gz, extracted)"
    else:
        cls, folder_name, classes, mean, std = datasets.CIFAR100, "cifar-100-python", 100, CIFAR100_MEAN, CIFAR100_STD
        what, archive = "CIFAR-100", "CIFAR-100 python version archive (cifar-100-python.tar.gz, extracted)"
    root = Path(config.data_root).expanduser()
    folder = root / folder_name
    if not config.download and not folder.is_dir():
        raise _missing(what, folder, config, archive)
    try:
        splits = [cls(str(root), train=train, download=bool(config.download)) for train in (True, False)]
    except RuntimeError as err:  # torchvision: "Dataset not found or corrupted"
        if "not found" in str(err).lower() or "corrupt" in str(err).lower():
            raise _missing(what, folder, config, archive) from err
        raise
    out = []
    for ds in splits:
        x = torch.from_numpy(ds.data).permute(0, 3, 1, 2).contiguous()  # uint8 [N, 32, 32, 3] -> NCHW
        out.append((_normalise(x, mean, std), torch.as_tensor(ds.targets, dtype=torch.long)))
    (x_pool, y_pool), (x_test, y_test) = out
    x_pool, y_pool = _subset(x_pool, y_pool, opts["n_pool"], "n_pool", name)
    x_test, y_test = _subset(x_test, y_test, opts["n_test"], "n_test", name)
    return RawData(x_pool, y_pool, x_test, y_test, num_classes=classes)


def load_cifar10(config: TaskConfig) -> RawData:
    """CIFAR-10 through torchvision: pool = the 50k training images, test = the 10k test images.

    ``dataset_kwargs``: ``n_pool`` / ``n_test`` keep only the first n images (default: all).
    Files are expected in ``<data_root>/cifar-10-batches-py``.
    """
    return _load_cifar(config, "cifar10")


def load_cifar100(config: TaskConfig) -> RawData:
    """CIFAR-100 (fine labels) through torchvision; as :func:`load_cifar10`, files in
    ``<data_root>/cifar-100-python``."""
    return _load_cifar(config, "cifar100")


def load_mnist(config: TaskConfig) -> RawData:
    """MNIST through torchvision: pool = the 60k training digits, test = the 10k test digits, 1x28x28.

    ``dataset_kwargs``: ``n_pool`` / ``n_test`` as for CIFAR. Files are expected in
    ``<data_root>/MNIST/raw``.
    """
    name = config.dataset if isinstance(config.dataset, str) else "mnist"
    opts = _options(name, config, {"n_pool": None, "n_test": None})
    datasets = _import_torchvision()
    root = Path(config.data_root).expanduser()
    folder = root / "MNIST" / "raw"
    archive = "MNIST idx files (train-images-idx3-ubyte etc., gunzipped)"
    if not config.download and not folder.is_dir():
        raise _missing("MNIST", folder, config, archive)
    try:
        splits = [datasets.MNIST(str(root), train=train, download=bool(config.download)) for train in (True, False)]
    except RuntimeError as err:
        if "not found" in str(err).lower() or "corrupt" in str(err).lower():
            raise _missing("MNIST", folder, config, archive) from err
        raise
    out = []
    for ds in splits:
        x = torch.as_tensor(ds.data).unsqueeze(1)  # uint8 [N, 1, 28, 28]
        out.append((_normalise(x, MNIST_MEAN, MNIST_STD), torch.as_tensor(ds.targets, dtype=torch.long)))
    (x_pool, y_pool), (x_test, y_test) = out
    x_pool, y_pool = _subset(x_pool, y_pool, opts["n_pool"], "n_pool", name)
    x_test, y_test = _subset(x_test, y_test, opts["n_test"], "n_test", name)
    return RawData(x_pool, y_pool, x_test, y_test, num_classes=10)


def _load_random(config: TaskConfig, num_classes: int) -> RawData:
    name = config.dataset if isinstance(config.dataset, str) else f"random-cifar{num_classes}"
    opts = _options(name, config, {"seed": 0, "n_pool": 5000, "n_test": 1000})
    for key in ("n_pool", "n_test"):
        n = opts[key]
        if not isinstance(n, int) or isinstance(n, bool) or n < 1:
            raise ValueError(f"{name}: dataset_kwargs {key}={n!r}, expected a positive integer")
    g = torch.Generator().manual_seed(int(opts["seed"]))
    n_pool, n_test = opts["n_pool"], opts["n_test"]
    x_pool = torch.randn(n_pool, 3, 32, 32, generator=g)
    y_pool = torch.randint(0, num_classes, (n_pool,), generator=g)
    x_test = torch.randn(n_test, 3, 32, 32, generator=g)
    y_test = torch.randint(0, num_classes, (n_test,), generator=g)
    return RawData(x_pool, y_pool, x_test, y_test, num_classes=num_classes)


def load_random_cifar10(config: TaskConfig) -> RawData:
    """Random CIFAR-shaped data (N(0,1) images 3x32x32, uniform labels of 10 classes).

    For speed benchmarks and tests: no files, no torchvision. ``dataset_kwargs``: ``seed``
    (default 0), ``n_pool`` (5000), ``n_test`` (1000).
    """
    return _load_random(config, 10)


def load_random_cifar100(config: TaskConfig) -> RawData:
    """As :func:`load_random_cifar10` with 100 classes."""
    return _load_random(config, 100)


def random_crop_flip(x: torch.Tensor, generator: torch.Generator, padding: int = 4) -> torch.Tensor:
    """Batched CIFAR augmentation on ``x``'s device: random crop after zero padding, random h-flip.

    Each image ``[C, H, W]`` is zero-padded by ``padding`` on every side and an ``H x W`` window is
    cut at a per-sample offset in ``0..2*padding`` (both axes), then flipped left-right with
    probability 0.5. Offsets and flips are drawn on the CPU from ``generator`` and moved to the
    device, so one generator state gives the same result on every device. Zero padding is applied
    to the already normalised images (the channel mean, not black). One gather, no Python loop.
    """
    if x.dim() != 4:
        raise ValueError(f"random_crop_flip expects [N, C, H, W], got shape {tuple(x.shape)}")
    n, c, h, w = x.shape
    span = 2 * padding + 1
    offsets = torch.randint(0, span, (n, 2), generator=generator)
    flips = torch.randint(0, 2, (n,), generator=generator).bool()
    device = x.device
    offsets, flips = offsets.to(device), flips.to(device)
    padded = F.pad(x, (padding, padding, padding, padding))
    pw = w + 2 * padding
    rows = offsets[:, :1] + torch.arange(h, device=device)  # [N, H]
    cols_ = torch.arange(w, device=device)
    cols = offsets[:, 1:] + torch.where(flips[:, None], cols_.flip(0), cols_)  # [N, W]
    index = (rows[:, :, None] * pw + cols[:, None, :]).view(n, 1, h * w).expand(n, c, h * w)
    return padded.flatten(2).gather(2, index).view(n, c, h, w)
