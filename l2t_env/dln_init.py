"""Where the DLN starts: the ``init`` choice of ``loss_kwargs`` for the ``dln`` loss family.

The random Kaiming init of the reference code decides most of a run on its own (docs/method.md
section 2.5: the frozen DLN ends anywhere between 0.00 and 0.96 on digits). So the start is a
documented choice:

- ``"kaiming"`` (default): the reference code's Kaiming-normal, mode fan_out, drawn from the seed.
- ``"ce"``: a DLN fitted so that the student's gradient under it agrees with a well-behaved loss.
  Target: on every one-vs-one row (true class y, other class j) the pairwise logistic loss
  ``h = T * log(1 + exp(z_j - z_y))`` with ``T = 2``; its logit derivatives are
  ``dh/dz_j = T * sigmoid(z_j - z_y) = -dh/dz_y``. With the DLN's mean over all ``B*C`` rows,
  ``T = 2`` makes the student's gradient at equal logits equal to cross-entropy's for any C.
  The DLN sees ``s = sigmoid(z)``, so we regress the derivatives of ``g_phi(sigmoid(z_y),
  sigmoid(z_j))`` with respect to ``z_y`` and ``z_j`` onto those of ``h`` (mean squared error) on
  random logit pairs ``z ~ N(0, logit_std^2)``, by Adam from the Kaiming init of the same seed,
  a fixed number of steps, in float64 on one CPU thread: the seed alone fixes the result.
  Fits are cached in memory and on disk (:mod:`l2t_env.disk_cache`), so only the
  first episode of a seed pays for one (a few seconds).
- a tensor of ``n_params`` finite values (the flat phi), or the path of a file written by
  ``torch.save(phi)`` (a DLN saved from an earlier run; a dict with key ``"phi"`` also works).
"""

from __future__ import annotations

import hashlib
import math
import os
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Callable, Sequence, Union

import torch

from l2t_env.disk_cache import cache_root, cached

INIT_NAMES = ("kaiming", "ce")
InitSpec = Union[str, os.PathLike, torch.Tensor]


def expected_form(n_params: int) -> str:
    return (
        f"expected 'kaiming', 'ce', a tensor of {n_params} finite values (the flat DLN phi), "
        "or the path of an existing file saved with torch.save(phi)"
    )


def kaiming_init(shapes: Sequence[tuple[int, int]], seed: int) -> torch.Tensor:
    """Kaiming-normal, mode fan_out (torch's default gain sqrt(2)), float64 on the CPU."""
    gen = torch.Generator().manual_seed(int(seed))
    gain = math.sqrt(2.0)
    parts = [torch.randn(shape, generator=gen, dtype=torch.float64) * (gain / math.sqrt(shape[0])) for shape in shapes]
    return torch.cat([p.flatten() for p in parts])


def check_phi(phi: torch.Tensor, n_params: int, source: str) -> torch.Tensor:
    """A flat float64 CPU copy of a given phi, or a ValueError naming the expected form."""
    if not isinstance(phi, torch.Tensor):
        raise ValueError(f"dln init from {source}: got {type(phi).__name__}; {expected_form(n_params)}")
    if phi.numel() != n_params:
        raise ValueError(f"dln init from {source}: {phi.numel()} values; {expected_form(n_params)}")
    if not phi.is_floating_point() or not bool(torch.isfinite(phi).all()):
        raise ValueError(f"dln init from {source}: non-finite or non-float weights; {expected_form(n_params)}")
    return phi.detach().to(device="cpu", dtype=torch.float64).flatten().clone()


def load_phi(path: Union[str, os.PathLike], n_params: int) -> torch.Tensor:
    """A phi saved with ``torch.save`` (a tensor, or a dict holding it under ``"phi"``)."""
    obj = torch.load(Path(path), map_location="cpu", weights_only=True)
    if isinstance(obj, dict) and "phi" in obj:
        obj = obj["phi"]
    return check_phi(obj, n_params, repr(str(path)))


def parse_init(init: InitSpec, n_params: int) -> Union[str, torch.Tensor]:
    """``"kaiming"``/``"ce"`` as they are, a tensor or a file read once; anything else raises."""
    if isinstance(init, torch.Tensor):
        return check_phi(init, n_params, "a tensor")
    if isinstance(init, (str, os.PathLike)):
        if isinstance(init, str) and init in INIT_NAMES:
            return init
        path = Path(init).expanduser()
        if not path.is_file():
            raise ValueError(f"dln init={str(init)!r} is neither a known name nor an existing file; {expected_form(n_params)}")
        return load_phi(path, n_params)
    raise ValueError(f"dln init={init!r}; {expected_form(n_params)}")


@dataclass(frozen=True)
class CEFit:
    """Settings of the ``"ce"`` fit (``loss_kwargs={"init": "ce", "fit": {...}}``)."""

    steps: int = 1500
    rows: int = 1024
    lr: float = 1e-3
    logit_std: float = 3.0
    target_scale: float = 2.0
    #: weight of an extra penalty on each row's ``(dg/dz_y + dg/dz_j)^2``: the target's row sums are
    #: zero (shifting all logits changes nothing), and a fitted DLN that misses this drifts every
    #: logit of the student the same way until sigmoid saturates
    balance: float = 0.0

    def __post_init__(self) -> None:
        for key in ("steps", "rows"):
            value = getattr(self, key)
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise ValueError(f"dln init fit: {key}={value!r}, expected a positive integer")
        for key in ("lr", "logit_std", "target_scale"):
            value = getattr(self, key)
            if not isinstance(value, (int, float)) or not math.isfinite(value) or value <= 0:
                raise ValueError(f"dln init fit: {key}={value!r}, expected a finite number > 0")
        if isinstance(self.balance, bool) or not isinstance(self.balance, (int, float)) or not (
            math.isfinite(self.balance) and self.balance >= 0
        ):
            raise ValueError(f"dln init fit: balance={self.balance!r}, expected a finite number >= 0")

    def cache_key(self) -> list:
        """The settings that name a fit (``balance`` only when set, so older caches stay valid)."""
        return sorted((k, v) for k, v in asdict(self).items() if not (k == "balance" and v == 0))


def make_fit(options: Union[dict, CEFit, None]) -> CEFit:
    if isinstance(options, CEFit):
        return options
    options = dict(options or {})
    valid = sorted(CEFit.__dataclass_fields__)
    unknown = sorted(set(options) - set(valid))
    if unknown:
        raise ValueError(f"dln init fit: unknown key(s) {unknown}; valid: {valid}")
    return CEFit(**options)


def pair_logit_grads(score: Callable[[torch.Tensor], torch.Tensor], z: torch.Tensor) -> torch.Tensor:
    """d score(sigmoid(z)) / d z for rows ``z = [z_y, z_j]`` ([N, 2]), keeping the graph."""
    z = z.detach().requires_grad_(True)
    value = score(torch.sigmoid(z)).sum()
    return torch.autograd.grad(value, z, create_graph=True)[0]


def pairwise_logistic_grads(z: torch.Tensor, scale: float) -> torch.Tensor:
    """Logit derivatives of ``scale * log(1 + exp(z_j - z_y))``: ``[-scale*q, scale*q]``, q = sigmoid(z_j - z_y)."""
    q = torch.sigmoid(z[:, 1] - z[:, 0]) * scale
    return torch.stack([-q, q], dim=1)


_MEMORY: dict[str, torch.Tensor] = {}


def fit_ce(
    shapes: Sequence[tuple[int, int]],
    score: Callable[[torch.Tensor, torch.Tensor], torch.Tensor],
    seed: int,
    fit: CEFit,
) -> torch.Tensor:
    """The ``"ce"`` init for one seed (float64, CPU), fitted once and then served from the caches.

    ``score(phi, s)`` scores rows ``s = [s_y, s_j]`` ([N, 2]) with the DLN ``phi``.
    """
    key_src = repr((tuple(map(tuple, shapes)), int(seed), fit.cache_key(), "v1"))
    key = hashlib.sha256(key_src.encode()).hexdigest()[:20]
    if key not in _MEMORY:
        n = sum(a * b for a, b in shapes)
        _MEMORY[key] = cached(
            cache_root() / "dln-init" / f"ce-{key}.pt",
            lambda: _fit(shapes, score, seed, fit),
            lambda obj: isinstance(obj, torch.Tensor) and obj.numel() == n and obj.dtype == torch.float64,
        )
    return _MEMORY[key].clone()


def _fit(shapes, score, seed: int, fit: CEFit) -> torch.Tensor:
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # the same sums in the same order on every machine
    try:
        with torch.random.fork_rng(devices=[]), torch.enable_grad():
            gen = torch.Generator().manual_seed(int(seed) + 1)
            phi = kaiming_init(shapes, seed).requires_grad_(True)
            opt = torch.optim.Adam([phi], lr=fit.lr)
            for _ in range(fit.steps):
                z = torch.randn(fit.rows, 2, generator=gen, dtype=torch.float64) * fit.logit_std
                got = pair_logit_grads(lambda s: score(phi, s), z)
                loss = (got - pairwise_logistic_grads(z, fit.target_scale)).pow(2).mean()
                if fit.balance:
                    loss = loss + fit.balance * got.sum(dim=1).pow(2).mean()
                opt.zero_grad()
                loss.backward()
                opt.step()
        return phi.detach().clone()
    finally:
        torch.set_num_threads(threads)
