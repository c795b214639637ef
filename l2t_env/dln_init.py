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
- a robust loss's name (``"gce"``, ``"sce"``, ... any key of
  :data:`l2t_env.robust_losses.ROBUST_LOSSES`), with ``init_kwargs`` its hyper-parameters (e.g.
  ``{"q": 0.5}``; the authors' defaults otherwise): a DLN fitted so that the student's gradient
  under it agrees with that loss's (:func:`fit_target`, settings :class:`TargetFit`). Such a loss
  is not pairwise (its derivative on logit k depends on the whole softmax), so the fit is on whole
  examples: over random logit vectors ``z`` ``[N, C]`` and labels ``y``, the DLN's per-example
  gradient ``d (B * DLN(z, y)) / d z`` (the DLN averages over its ``B*C`` rows, so this is the
  gradient one example sends to its logits) is regressed onto ``d loss(z_i, y_i) / d z_i`` by
  least squares, relative to the target's squared norm in each batch. Logits are drawn like those
  of a training student: ``z_ik ~ N(0, sigma_i^2)`` with ``sigma_i ~ U(0, logit_std)`` (from the
  start at ``z = 0`` to a trained student's spread), plus ``u_i ~ U(0, margin)`` on the labelled
  class, so that the batch holds examples the student gets wrong (a noisy label: small ``p_y``,
  where the robust losses differ from CE) and examples it has learnt (large ``p_y``), and all of an
  example's logits moved by one ``U(-shift, shift)`` (the target ignores it, the DLN does not).
  Frozen, these fits do not yet reach their targets' accuracy (docs/tasks-and-inits.md). Adam from the
  Kaiming init of the same seed, float64, one thread, cached like ``"ce"``. The ``"ce"`` fit above
  is unchanged (its pairwise target and settings), so its cached fits and results stay valid.
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
from l2t_env.robust_losses import ROBUST_LOSSES

INIT_NAMES = ("kaiming", "ce", *ROBUST_LOSSES)
InitSpec = Union[str, os.PathLike, torch.Tensor]
#: a per-example loss ``loss(logits [N, C], targets [N]) -> [N]``
TargetLoss = Callable[[torch.Tensor, torch.Tensor], torch.Tensor]


def expected_form(n_params: int) -> str:
    return (
        f"expected 'kaiming', 'ce', a tensor of {n_params} finite values (the flat DLN phi), "
        "the path of an existing file saved with torch.save(phi), "
        f"or a robust loss to fit ({', '.join(repr(n) for n in ROBUST_LOSSES)})"
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


def _check_fit(fit: object, counts: tuple, positive: tuple, non_negative: tuple) -> None:
    """Raise, naming the field, unless ``counts`` are integers >= 1, ``positive`` finite numbers > 0
    and ``non_negative`` finite numbers >= 0 (the fit settings' checks)."""
    for key in counts:
        value = getattr(fit, key)
        if isinstance(value, bool) or not isinstance(value, int) or value < 1:
            raise ValueError(f"dln init fit: {key}={value!r}, expected a positive integer")
    for keys, low, what in ((positive, 0.0, "> 0"), (non_negative, None, ">= 0")):
        for key in keys:
            value = getattr(fit, key)
            number = not isinstance(value, bool) and isinstance(value, (int, float)) and math.isfinite(value)
            if not number or (value <= 0 if low is not None else value < 0):
                raise ValueError(f"dln init fit: {key}={value!r}, expected a finite number {what}")


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
        _check_fit(self, counts=("steps", "rows"), positive=("lr", "logit_std", "target_scale"), non_negative=("balance",))

    def cache_key(self) -> list:
        """The settings that name a fit (``balance`` only when set, so older caches stay valid)."""
        return sorted((k, v) for k, v in asdict(self).items() if not (k == "balance" and v == 0))


@dataclass(frozen=True)
class TargetFit:
    """Settings of a robust-loss fit (``loss_kwargs={"init": "gce", "fit": {...}}``), see the module docstring."""

    #: fewer than ``"ce"``'s 1500: the fit error stops falling after a few hundred steps (the DLN's
    #: pairwise view, not the optimiser, limits it; docs/tasks-and-inits.md)
    steps: int = 600
    #: examples per Adam step (each gives C logits, so ``examples * C`` DLN rows)
    examples: int = 64
    lr: float = 1e-3
    #: each example's logits are ``N(0, sigma^2)`` with ``sigma ~ U(0, logit_std)``
    logit_std: float = 3.0
    #: the labelled class's logit is raised by ``U(0, margin)``
    margin: float = 6.0
    #: every logit of an example is moved by the same ``U(-shift, shift)``: the target (a function
    #: of softmax) ignores such a move, the DLN (a function of sigmoid) does not, and a student's
    #: logits do drift together
    shift: float = 3.0
    #: weight of a penalty on each example's ``(sum_k d DLN / d z_k)^2`` (the target's is zero)
    balance: float = 0.0

    def __post_init__(self) -> None:
        _check_fit(self, counts=("steps", "examples"), positive=("lr", "logit_std"), non_negative=("margin", "shift", "balance"))

    def cache_key(self) -> list:
        return sorted(asdict(self).items())


def make_fit(options: Union[dict, CEFit, TargetFit, None], init: object = "ce") -> Union[CEFit, TargetFit]:
    """The fit settings for ``init``: :class:`TargetFit` for a robust loss's name, else :class:`CEFit`."""
    kind = TargetFit if isinstance(init, str) and init in ROBUST_LOSSES else CEFit
    if isinstance(options, kind):
        return options
    if isinstance(options, (CEFit, TargetFit)):
        raise ValueError(f"dln init={init!r}: fit is a {type(options).__name__}, expected a {kind.__name__} or a dict")
    options = dict(options or {})
    valid = sorted(kind.__dataclass_fields__)
    unknown = sorted(set(options) - set(valid))
    if unknown:
        raise ValueError(f"dln init fit: unknown key(s) {unknown}; valid: {valid}")
    return kind(**options)


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


# ----------------------------------------------------------------------------- robust-loss targets
def draw_logits(gen: torch.Generator, n: int, num_classes: int, logit_std: float, margin: float,
                shift: float = 0.0) -> tuple[torch.Tensor, torch.Tensor]:
    """Logits ``[n, C]`` and labels ``[n]`` as the fit sees them: ``N(0, sigma_i^2)`` with a scale
    ``sigma_i ~ U(0, logit_std)`` per example, the label's raised by ``U(0, margin)``, then all
    of an example's logits moved by one ``U(-shift, shift)``.

    The per-example scale puts examples near ``z = 0``, where every student starts: with one scale
    (3) for all, a fit to GCE got the sign of the true class's gradient wrong there and the frozen
    DLN trained digits-mlp-noisy to 0.35 (docs/tasks-and-inits.md).
    """
    scale = torch.rand(n, 1, generator=gen, dtype=torch.float64) * logit_std
    z = torch.randn(n, num_classes, generator=gen, dtype=torch.float64) * scale
    y = torch.randint(0, num_classes, (n,), generator=gen)
    lift = torch.rand(n, generator=gen, dtype=torch.float64) * margin
    z = z.scatter_add(1, y[:, None], lift[:, None])
    if shift:  # no draw when 0: the same stream as before the option
        z = z + (torch.rand(n, 1, generator=gen, dtype=torch.float64) * 2.0 - 1.0) * shift
    return z, y


def per_example_grads(loss: Callable[[torch.Tensor, torch.Tensor], torch.Tensor], z: torch.Tensor, y: torch.Tensor,
                      create_graph: bool = False) -> torch.Tensor:
    """``d loss(z, y) / d z`` ``[N, C]`` for a scalar ``loss`` that sums (not averages) over the examples."""
    z = z.detach().requires_grad_(True)
    return torch.autograd.grad(loss(z, y), z, create_graph=create_graph)[0]


def dln_example_grads(dln: Callable[[torch.Tensor, torch.Tensor, torch.Tensor], torch.Tensor], phi: torch.Tensor,
                      z: torch.Tensor, y: torch.Tensor, create_graph: bool = False) -> torch.Tensor:
    """The gradient each example sends to its logits under the DLN ``dln(phi, z, y)`` (a batch mean): ``N * d dln / d z``."""
    return per_example_grads(lambda zz, yy: dln(phi, zz, yy) * zz.shape[0], z, y, create_graph)


def target_example_grads(target: TargetLoss, z: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """``d target(z_i, y_i) / d z_i`` for every example, ``[N, C]``."""
    return per_example_grads(lambda zz, yy: target(zz, yy).sum(), z, y)


def gradient_agreement(dln: Callable, phi: torch.Tensor, target: TargetLoss, z: torch.Tensor, y: torch.Tensor) -> dict[str, float]:
    """How close the DLN's per-example logit gradients come to the target's on ``(z, y)``.

    ``cosine``: the cosine between the two ``[N, C]`` gradients of the whole batch (it sees how
    the examples are weighed against each other, which is where the robust losses differ from CE:
    GCE's gradient is CE's times ``p_y^q``, example by example); ``example_cosine``: the mean over
    examples of the cosine between the two ``C``-vectors (blind to that weighing); ``rel_error``:
    ``||g_dln - g_target||^2 / ||g_target||^2`` over the batch (the fit's objective).
    """
    with torch.enable_grad():
        got = dln_example_grads(dln, phi.to(torch.float64), z, y)
        want = target_example_grads(target, z, y)
    cos = torch.nn.functional.cosine_similarity
    return {
        "cosine": float(cos(got.flatten(), want.flatten(), dim=0, eps=1e-12)),
        "example_cosine": float(cos(got, want, dim=1, eps=1e-12).mean()),
        "rel_error": float((got - want).pow(2).sum() / want.pow(2).sum()),
    }


def fit_target(
    shapes: Sequence[tuple[int, int]],
    dln: Callable[[torch.Tensor, torch.Tensor, torch.Tensor], torch.Tensor],
    seed: int,
    fit: TargetFit,
    num_classes: int,
    name: str,
    target_kwargs: dict,
    target: TargetLoss,
) -> torch.Tensor:
    """A DLN init fitted to the robust loss ``target`` for one seed (float64, CPU), served from the caches after the first time.

    ``dln(phi, z, y)`` is the DLN's batch loss; ``name`` and ``target_kwargs`` name ``target`` in
    the cache key (the same name and keywords must give the same function).
    """
    kwargs_key = sorted((k, float(v)) for k, v in target_kwargs.items())
    key_src = repr((tuple(map(tuple, shapes)), int(seed), int(num_classes), name, kwargs_key, fit.cache_key(), "target-v3"))
    key = hashlib.sha256(key_src.encode()).hexdigest()[:20]
    if key not in _MEMORY:
        n = sum(a * b for a, b in shapes)
        _MEMORY[key] = cached(
            cache_root() / "dln-init" / f"{name.replace('+', '_')}-{key}.pt",
            lambda: _fit_target(shapes, dln, seed, fit, num_classes, target),
            lambda obj: isinstance(obj, torch.Tensor) and obj.numel() == n and obj.dtype == torch.float64,
        )
    return _MEMORY[key].clone()


def _fit_target(shapes, dln, seed: int, fit: TargetFit, num_classes: int, target: TargetLoss) -> torch.Tensor:
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # the same sums in the same order on every machine
    try:
        with torch.random.fork_rng(devices=[]), torch.enable_grad():
            gen = torch.Generator().manual_seed(int(seed) + 1)
            phi = kaiming_init(shapes, seed).requires_grad_(True)
            opt = torch.optim.Adam([phi], lr=fit.lr)
            for _ in range(fit.steps):
                z, y = draw_logits(gen, fit.examples, num_classes, fit.logit_std, fit.margin, fit.shift)
                want = target_example_grads(target, z, y)
                got = dln_example_grads(dln, phi, z, y, create_graph=True)
                loss = (got - want).pow(2).sum() / want.pow(2).sum().clamp_min(1e-12)
                if fit.balance:
                    loss = loss + fit.balance * got.sum(dim=1).pow(2).sum() / want.pow(2).sum().clamp_min(1e-12)
                opt.zero_grad()
                loss.backward()
                opt.step()
        return phi.detach().clone()
    finally:
        torch.set_num_threads(threads)
