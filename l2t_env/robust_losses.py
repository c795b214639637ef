"""Losses of the noisy-label literature, per example: the baselines a learned loss must beat.

Each function takes logits ``z`` ``[B, C]`` and labels ``y`` ``[B]`` and returns the per-example
loss ``[B]``, with ``p = softmax(z)``. Hyper-parameters are plain floats or 0-dim tensors (so a
teacher can set them, and a look-ahead can differentiate through them). The formulas, the
authors' defaults and the noise definitions are summarised in ``docs/method.md`` ("Baselines
from the noisy-label literature"). :data:`ROBUST_LOSSES` lists them with their hyper-parameters;
the loss family :class:`l2t_env.losses.HyperparameterLoss` turns each into an env loss
(``gym.make("L2T-v0", loss="gce")``) whose phi is its hyper-parameters.

Symmetric losses (:func:`mae`, :func:`rce`, :func:`nce`) satisfy ``sum_j L(z, j) = constant`` for
every ``z``, Ghosh et al.'s condition under which symmetric label noise below ``(C - 1) / C``
leaves the risk minimiser unchanged.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Callable, Union

import torch
import torch.nn.functional as F

Number = Union[float, torch.Tensor]


def _log_p_y(logits: torch.Tensor, targets: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    log_p = F.log_softmax(logits, dim=1)
    return log_p, log_p.gather(1, targets[:, None]).squeeze(1)


def ce(logits: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
    """Cross-entropy ``-log p_y``."""
    return _log_p_y(logits, targets)[1].neg()


def mae(logits: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
    """Mean absolute error (Ghosh, Kumar & Sastry, AAAI 2017): ``sum_k |p_k - e_y,k| = 2 (1 - p_y)``.

    The L1 distance of the paper; the Active-Passive-Losses code uses half of it, ``1 - p_y``.
    Symmetric: ``sum_j (2 - 2 p_j) = 2 (C - 1)``.
    """
    p_y = _log_p_y(logits, targets)[1].exp()
    return 2.0 * (1.0 - p_y)


def gce(logits: torch.Tensor, targets: torch.Tensor, q: Number = 0.7) -> torch.Tensor:
    """Generalized cross-entropy (Zhang & Sabuncu, NeurIPS 2018): ``(1 - p_y^q) / q``.

    ``q -> 0`` gives cross-entropy, ``q = 1`` gives ``1 - p_y`` (half of :func:`mae`); the
    authors' default is ``q = 0.7``. Valid for ``0 < q <= 1``.
    """
    log_p_y = _log_p_y(logits, targets)[1]
    return (1.0 - torch.exp(q * log_p_y)) / q


def rce(logits: torch.Tensor, targets: torch.Tensor, A: Number = -4.0) -> torch.Tensor:
    """Reverse cross-entropy (Wang et al., ICCV 2019): ``-sum_k p_k log e_y,k`` with ``log 0 := A``,
    i.e. ``-A (1 - p_y)``. The paper uses ``A = -4``; clipping the one-hot at 1e-4, as the
    Active-Passive-Losses code does, is ``A = log(1e-4) = -9.21``. Symmetric for any ``A``."""
    p_y = _log_p_y(logits, targets)[1].exp()
    return -A * (1.0 - p_y)


def nce(logits: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
    """Normalized cross-entropy (Ma et al., ICML 2020): ``-log p_y / (-sum_k log p_k)``.

    Symmetric: the normalised terms sum to 1 over the labels.
    """
    log_p, log_p_y = _log_p_y(logits, targets)
    return log_p_y / log_p.sum(dim=1)


def sce(logits: torch.Tensor, targets: torch.Tensor, alpha: Number = 0.1, beta: Number = 1.0, A: Number = -4.0) -> torch.Tensor:
    """Symmetric cross-entropy (Wang et al., ICCV 2019): ``alpha CE + beta RCE``.

    Defaults: the paper's CIFAR-10 values ``alpha = 0.1, beta = 1, A = -4``.
    """
    return alpha * ce(logits, targets) + beta * rce(logits, targets, A)


def nce_rce(logits: torch.Tensor, targets: torch.Tensor, alpha: Number = 1.0, beta: Number = 1.0, A: Number = -9.2103) -> torch.Tensor:
    """NCE+RCE, an active-passive loss (Ma et al., ICML 2020): ``alpha NCE + beta RCE``.

    Defaults: the authors' CIFAR-10 values ``alpha = beta = 1``, and their code's RCE
    (``A = log 1e-4``).
    """
    return alpha * nce(logits, targets) + beta * rce(logits, targets, A)


def label_smoothing(logits: torch.Tensor, targets: torch.Tensor, eps: Number = 0.1) -> torch.Tensor:
    """Label smoothing (Szegedy et al., CVPR 2016): cross-entropy against ``(1 - eps) e_y + eps / C``."""
    log_p, log_p_y = _log_p_y(logits, targets)
    return -(1.0 - eps) * log_p_y - eps * log_p.mean(dim=1)


def bootstrap_soft(logits: torch.Tensor, targets: torch.Tensor, beta: Number = 0.95) -> torch.Tensor:
    """Soft bootstrapping (Reed et al., ICLR workshop 2015): ``-sum_k (beta e_y,k + (1 - beta) p_k) log p_k``.

    The prediction in the target is not detached: as in the paper (an entropy-minimising term)
    and the authors' Keras code. Default ``beta = 0.95``.
    """
    log_p, log_p_y = _log_p_y(logits, targets)
    return -beta * log_p_y - (1.0 - beta) * (log_p.exp() * log_p).sum(dim=1)


def bootstrap_hard(logits: torch.Tensor, targets: torch.Tensor, beta: Number = 0.8) -> torch.Tensor:
    """Hard bootstrapping (Reed et al., 2015): ``-beta log p_y - (1 - beta) log p_argmax``. Default ``beta = 0.8``."""
    log_p, log_p_y = _log_p_y(logits, targets)
    log_p_hat = log_p.gather(1, logits.detach().argmax(dim=1, keepdim=True)).squeeze(1)
    return -beta * log_p_y - (1.0 - beta) * log_p_hat


def focal(logits: torch.Tensor, targets: torch.Tensor, gamma: Number = 2.0) -> torch.Tensor:
    """Focal loss (Lin et al., ICCV 2017): ``-(1 - p_y)^gamma log p_y``; ``gamma = 0`` is cross-entropy."""
    log_p_y = _log_p_y(logits, targets)[1]
    return -((1.0 - log_p_y.exp()).clamp_min(0.0) ** gamma) * log_p_y


@dataclass(frozen=True)
class RobustLossSpec:
    """A registered robust loss: its per-example function and its hyper-parameters.

    ``params`` are the hyper-parameters a teacher may set (the loss family's phi, in this order),
    with their defaults; ``bounds`` their valid closed ranges (``None``: unbounded on that side);
    ``constants`` are fixed keyword options that are not part of phi (e.g. RCE's ``A``).
    ``control`` is the finite range of each hyper-parameter that the env's ``action_mode="control"``
    maps an action in [-1, 1] onto: the literature's values with room on both sides (for GCE,
    ``q`` from near cross-entropy to MAE), narrower than ``bounds`` where those are open.
    """

    name: str
    fn: Callable[..., torch.Tensor]
    params: dict[str, float]
    bounds: dict[str, tuple]
    constants: dict[str, float]
    citation: str
    control: dict[str, tuple] = field(default_factory=dict)


ROBUST_LOSSES: dict[str, RobustLossSpec] = {
    spec.name: spec
    for spec in (
        RobustLossSpec("gce", gce, {"q": 0.7}, {"q": (1e-3, 1.0)}, {}, "Zhang & Sabuncu, NeurIPS 2018",
                       control={"q": (0.01, 1.0)}),
        RobustLossSpec("sce", sce, {"alpha": 0.1, "beta": 1.0}, {"alpha": (0.0, None), "beta": (0.0, None)}, {"A": -4.0},
                       "Wang et al., ICCV 2019", control={"alpha": (0.0, 1.0), "beta": (0.0, 2.0)}),
        RobustLossSpec("nce+rce", nce_rce, {"alpha": 1.0, "beta": 1.0}, {"alpha": (0.0, None), "beta": (0.0, None)},
                       {"A": -9.2103}, "Ma et al., ICML 2020", control={"alpha": (0.0, 10.0), "beta": (0.0, 10.0)}),
        RobustLossSpec("mae", mae, {}, {}, {}, "Ghosh, Kumar & Sastry, AAAI 2017"),
        RobustLossSpec("ls", label_smoothing, {"eps": 0.1}, {"eps": (0.0, 1.0)}, {}, "Szegedy et al., CVPR 2016", control={"eps": (0.0, 0.5)}),
        RobustLossSpec("bootstrap", bootstrap_soft, {"beta": 0.95}, {"beta": (0.0, 1.0)}, {}, "Reed et al., ICLR-W 2015 (soft)", control={"beta": (0.0, 1.0)}),
        RobustLossSpec("bootstrap-hard", bootstrap_hard, {"beta": 0.8}, {"beta": (0.0, 1.0)}, {}, "Reed et al., ICLR-W 2015 (hard)", control={"beta": (0.0, 1.0)}),
        RobustLossSpec("focal", focal, {"gamma": 2.0}, {"gamma": (0.0, None)}, {}, "Lin et al., ICCV 2017", control={"gamma": (0.0, 5.0)}),
    )
}


def check_value(loss: str, key: str, value: float, bounds: tuple) -> None:
    """Raise, naming the loss, the key and the valid range, if ``value`` is not a finite number in ``bounds``."""
    lo, hi = bounds
    ok = isinstance(value, (int, float)) and not isinstance(value, bool) and value == value and abs(value) != float("inf")
    ok = ok and (lo is None or value >= lo) and (hi is None or value <= hi)
    if not ok:
        where = f"[{'-inf' if lo is None else lo}, {'inf' if hi is None else hi}]"
        raise ValueError(f"{loss}: {key}={value!r}, expected a finite number in {where}")
