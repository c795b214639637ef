"""The fused metric of L2T-DFM: a weighted sum of similarity metrics between prediction and label.

Only the abstract of L2T-DFM is known (docs/method.md section 4): every choice below is ours. The
metrics, each a batch mean of a per-sample value, with ``p = softmax(z)``:

- ``ce``: cross-entropy ``-log p_y``;
- ``brier``: squared error on probabilities ``sum_c (p_c - onehot(y)_c)^2``;
- ``focal``: focal loss ``-(1 - p_y)^gamma log p_y`` (``focal_gamma``, default 2, Lin et al. 2017);
- ``hinge``: the multi-class margin loss of Weston and Watkins as ``torch.nn.MultiMarginLoss``
  computes it, ``sum_{j != y} max(0, margin - z_y + z_j) / C`` (``hinge_margin``, default 1);
- ``kl``: ``KL(q || p)`` to the label-smoothed target ``q = (1 - eps) onehot(y) + eps / C``
  (``smoothing`` eps, default 0.1);
- ``gce``, ``rce``, ``nce``: the robust members, so that a teacher can move toward the losses of the
  noisy-label literature (:mod:`l2t_env.robust_losses`, whose functions compute them):
  generalized cross-entropy ``(1 - p_y^q) / q`` (``gce_q``, default 0.7, Zhang & Sabuncu 2018),
  reverse cross-entropy ``-A (1 - p_y)`` (``rce_A``, default -4, Wang et al. 2019; MAE is the
  same up to scale, so a linear fusion gains nothing from both) and normalized cross-entropy
  ``log p_y / sum_k log p_k`` (Ma et al. 2020).

``METRICS`` lists every metric; ``DEFAULT_METRICS``, the ``dfm`` family's default, is the first
five: the robust members are opt-in (``loss_kwargs={"metrics": METRICS}``) because adding them
changes the teacher's action space and so every recorded ``l2t-dfm`` result (measured in
docs/dlf-dfm.md).

The per-metric parameters are fixed when the family is made (``loss_kwargs``), not part of phi:
phi is the metric weights alone, so a teacher's action space is as small as the abstract suggests.
The loss family itself (:class:`l2t_env.losses.FusedMetricLoss`, registry name ``dfm``) lives beside
the other families; this module holds the metrics so that teachers can reuse them as statistics.
"""

from __future__ import annotations

import math
from typing import Callable

import torch
import torch.nn.functional as F

from l2t_env import robust_losses

METRICS = ("ce", "brier", "focal", "hinge", "kl", "gce", "rce", "nce")
DEFAULT_METRICS = ("ce", "brier", "focal", "hinge", "kl")


def metric_values(
    logits: torch.Tensor,
    targets: torch.Tensor,
    metrics: tuple[str, ...] = DEFAULT_METRICS,
    *,
    focal_gamma: float = 2.0,
    hinge_margin: float = 1.0,
    smoothing: float = 0.1,
    gce_q: float = 0.7,
    rce_A: float = -4.0,
) -> torch.Tensor:
    """The batch-mean value of each metric, in the order of ``metrics``: a tensor ``[len(metrics)]``.

    One ``log_softmax`` is shared by the probability-based metrics.
    """
    log_p = F.log_softmax(logits, dim=1)
    log_p_y = log_p.gather(1, targets[:, None]).squeeze(1)
    c = logits.shape[1]
    values: dict[str, Callable[[], torch.Tensor]] = {
        "ce": lambda: -log_p_y.mean(),
        "brier": lambda: (log_p.exp() - F.one_hot(targets, c).to(logits.dtype)).square().sum(dim=1).mean(),
        "focal": lambda: -((1.0 - log_p_y.exp()).pow(focal_gamma) * log_p_y).mean(),
        "hinge": lambda: _multi_margin(logits, targets, hinge_margin),
        "kl": lambda: _smoothed_kl(log_p, targets, smoothing),
        "gce": lambda: robust_losses.gce(logits, targets, gce_q).mean(),
        "rce": lambda: robust_losses.rce(logits, targets, rce_A).mean(),
        "nce": lambda: robust_losses.nce(logits, targets).mean(),
    }
    return torch.stack([values[m]() for m in metrics])


def _multi_margin(logits: torch.Tensor, targets: torch.Tensor, margin: float) -> torch.Tensor:
    """``F.multi_margin_loss`` written out: torch has no double backward for it, and the look-ahead needs one."""
    z_y = logits.gather(1, targets[:, None])
    hinge = (margin - z_y + logits).clamp_min(0.0).scatter(1, targets[:, None], 0.0)
    return hinge.sum(dim=1).mean() / logits.shape[1]


def _smoothed_kl(log_p: torch.Tensor, targets: torch.Tensor, eps: float) -> torch.Tensor:
    c = log_p.shape[1]
    q = torch.full_like(log_p, eps / c).scatter_(1, targets[:, None], 1.0 - eps + eps / c)
    return F.kl_div(log_p, q, reduction="batchmean")


def check_metric_options(
    metrics: tuple[str, ...],
    focal_gamma: float,
    hinge_margin: float,
    smoothing: float,
    gce_q: float = 0.7,
    rce_A: float = -4.0,
) -> None:
    """Raise on an unknown or repeated metric name or an out-of-range metric parameter."""
    unknown = [m for m in metrics if m not in METRICS]
    if unknown or not metrics or len(set(metrics)) != len(metrics):
        raise ValueError(f"dfm: metrics={list(metrics)!r}, expected distinct names from {list(METRICS)}")
    if not focal_gamma >= 0:
        raise ValueError(f"dfm: focal_gamma={focal_gamma!r}, expected >= 0")
    if not hinge_margin > 0:
        raise ValueError(f"dfm: hinge_margin={hinge_margin!r}, expected > 0")
    if not 0 <= smoothing < 1:
        raise ValueError(f"dfm: smoothing={smoothing!r}, expected in [0, 1)")
    if not 0 < gce_q <= 1:
        raise ValueError(f"dfm: gce_q={gce_q!r}, expected in (0, 1]")
    if not (rce_A < 0 and math.isfinite(rce_A)):
        raise ValueError(f"dfm: rce_A={rce_A!r}, expected a finite number < 0 (the log of the clipped zero label)")
