"""The L2T-DFM teacher (Pattern Recognition 2024): a GRU over student statistics -> fused-metric weights.

Only the abstract is known (docs/method.md section 4): **every choice in this module is ours.**

- **Statistics, not raw states** (``student_statistics``): from the current student's logits on
  the first ``stats_batches`` (default 1, i.e. 25 samples) of the next step's K training batches
  (``env.unwrapped.batch_logits``, one forward pass; a fraction 1/K of the batches keeps it cheap,
  and the GRU integrates over steps) the
  per-sample cross-entropy's mean, spread (std) and skew, the mean prediction entropy (divided by
  log C), the mean and std of the margin ``p_y - max_{c != y} p_c`` and the error rate; from the
  env's student observation the progress, the train/validation gap (val CE - train CE), the
  validation accuracy and ``log1p`` of the gradient norm. 11 numbers.
- **Temporal teacher**: a ``GRUCell(11, hidden)`` integrates them over teaching steps; a linear head
  (initialised to zero) gives one logit per metric of the ``dfm`` family. The hidden state carries
  over between steps and is detached each step (one-step truncation, as L2T-DLN's memory).
- **Confidence-based selection**: after each look-ahead, ``a = -g / max|g|`` with
  ``g = dL_val/dw`` (``w`` the metric weights): since the fused loss is linear in ``w``, ``-g_m`` is,
  to first order, ``lr`` times the inner product of metric m's training gradient with the
  validation-loss gradient summed over the K unrolled steps, i.e. the agreement between metric m's
  gradient and the validation loss's. The confidence is its exponential moving average
  (``confidence_decay``, 0.9). Each step keeps the metrics whose confidence is at least
  ``threshold`` (0: on average they lowered the validation loss), at least ``min_keep`` of them
  (the most confident), and gives zero weight to the rest; the kept ones are weighed by a softmax
  of the GRU's logits over the kept set (weights sum to 1). Confidences start at 0 (all kept).
  A zeroed metric still has a gradient ``g_m``, so it can return.
- **Learning online** through the env's differentiable look-ahead, like L2T-DLN: the validation CE
  after the next K unrolled student steps under ``w(psi)`` is differentiated back to the GRU and
  head, one Adam step (lr 1e-2: the head starts at zero and an episode is only ~100 steps); the
  commit reuses that unroll, so an iteration costs one differentiable unroll and its backward.
  ``horizon=h < K`` learns through only the first h of the K steps (cheaper, more myopic); the
  commit is then a plain K-step run.
- Frozen mode (``learning = False``): no look-ahead, the confidences stay as learnt.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass
from typing import Any, Optional

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from l2t_agents.base import register_teacher
from l2t_agents.loss_setting import LossSettingTeacher

STATISTICS = (
    "loss_mean", "loss_std", "loss_skew", "entropy", "margin_mean", "margin_std", "error_rate",
    "progress", "val_train_gap", "val_acc", "log_grad_norm",
)


def student_statistics(logits: torch.Tensor, targets: torch.Tensor, obs: Any) -> torch.Tensor:
    """The 11 statistics of ``STATISTICS`` (see the module docstring), on the logits' device and dtype."""
    log_p = F.log_softmax(logits, dim=1)
    p = log_p.exp()
    loss = -log_p.gather(1, targets[:, None]).squeeze(1)
    mean, std = loss.mean(), loss.std(unbiased=False)
    skew = (((loss - mean) / std.clamp_min(1e-8)) ** 3).mean().clamp(-5.0, 5.0)
    entropy = -(p * log_p).sum(dim=1).mean() / math.log(logits.shape[1])
    p_y = p.gather(1, targets[:, None]).squeeze(1)
    p_other = p.scatter(1, targets[:, None], -1.0).max(dim=1).values
    margin = p_y - p_other
    s = np.asarray(obs["student"] if isinstance(obs, dict) else obs, dtype=np.float64)
    progress, train_loss, _, val_loss, val_acc, _, grad_norm, _ = s[:8]
    from_obs = torch.tensor([progress, val_loss - train_loss, val_acc, np.log1p(grad_norm)], device=logits.device, dtype=logits.dtype)
    stats = torch.stack([mean, std, skew, entropy, margin.mean(), margin.std(unbiased=False), (margin < 0).to(logits.dtype).mean()])
    return torch.cat([stats, from_obs])


class MetricWeightGRU(nn.Module):
    """GRU over the statistics, a linear head to one logit per metric (head zero-initialised)."""

    def __init__(self, n_inputs: int, hidden: int, n_metrics: int) -> None:
        super().__init__()
        self.gru = nn.GRUCell(n_inputs, hidden)
        self.head = nn.Linear(hidden, n_metrics)
        nn.init.zeros_(self.head.weight)
        nn.init.zeros_(self.head.bias)

    def forward(self, x: torch.Tensor, h: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        h = self.gru(x[None], h[None])[0]
        return self.head(h), h


@dataclass
class L2TDFMConfig:
    """Settings of the L2T-DFM teacher (all ours; the abstract gives none)."""

    hidden: int = 32
    #: Adam learning rate of the GRU and head
    lr: float = 1e-2
    #: EMA decay of the metric confidences
    confidence_decay: float = 0.9
    #: keep a metric while its confidence is >= threshold
    threshold: float = 0.0
    #: always keep at least this many metrics (the most confident)
    min_keep: int = 1
    #: False: no selection, every metric keeps its softmax weight
    selection: bool = True
    #: statistics from the first this many of the next K training batches
    stats_batches: int = 1
    #: student steps of the look-ahead the teacher learns through (None: all K, and the commit
    #: reuses it); fewer make the iteration cheaper and the teacher's gradient more myopic
    horizon: Optional[int] = None
    #: seed of the network's initial weights
    seed: int = 0

    def __post_init__(self) -> None:
        if self.horizon is not None and int(self.horizon) < 1:
            raise ValueError(f"l2t-dfm: horizon={self.horizon!r}, expected None (all K steps) or >= 1")
        if int(self.stats_batches) < 1:
            raise ValueError(f"l2t-dfm: stats_batches={self.stats_batches!r}, expected >= 1")
        if int(self.hidden) < 1:
            raise ValueError(f"l2t-dfm: hidden={self.hidden!r}, expected >= 1")
        if not 0 <= self.confidence_decay < 1:
            raise ValueError(f"l2t-dfm: confidence_decay={self.confidence_decay!r}, expected in [0, 1)")
        if int(self.min_keep) < 1:
            raise ValueError(f"l2t-dfm: min_keep={self.min_keep!r}, expected >= 1")


@register_teacher("l2t-dfm")
class L2TDFMTeacher(LossSettingTeacher):
    """GRU(statistics) -> confidence-selected fused-metric weights, learning online; see the module."""

    env_kwargs = {"loss": "dfm", "lookahead": "off", "action_mode": "set"}
    loss_family = "dfm"

    def __init__(self, **config: Any) -> None:
        self.config = L2TDFMConfig(**config)
        super().__init__(self.config.lr)
        self.hidden: Optional[torch.Tensor] = None
        self.confidence: Optional[torch.Tensor] = None

    def build(self, n_phi: int, num_classes: int) -> nn.Module:
        return MetricWeightGRU(len(STATISTICS), self.config.hidden, n_phi)

    def attach(self, env) -> None:
        super().attach(env)
        core = env.unwrapped
        if self.confidence is None:
            self.confidence = torch.zeros(self.n_phi, dtype=torch.float64)
        if self.hidden is not None:
            self.hidden = self.hidden.to(core.device, core.dtype)

    def reset_episode(self) -> None:
        """A new student: the GRU's memory starts over; the confidences (what was learnt) stay."""
        core = self.env.unwrapped
        self.hidden = torch.zeros(self.config.hidden, device=core.device, dtype=core.dtype)

    def kept(self) -> torch.Tensor:
        """The metrics selected this step (bool per metric)."""
        assert self.confidence is not None
        if not self.config.selection:
            return torch.ones(self.n_phi, dtype=torch.bool)
        keep = self.confidence >= self.config.threshold
        top = torch.topk(self.confidence, min(self.config.min_keep, self.n_phi)).indices
        keep[top] = True
        return keep

    def weights_for(self, obs: Any) -> torch.Tensor:
        """The metric weights for this step (graph to the GRU and head); advances the GRU's memory."""
        assert self.net is not None and self.hidden is not None, "call reset(env) first"
        core = self.env.unwrapped
        logits, y = core.batch_logits(min(self.config.stats_batches, core.config.unroll_steps))
        stats = student_statistics(logits, y, obs)
        scores, h = self.net(stats, self.hidden)
        self.hidden = h.detach()
        keep = self.kept().to(scores.device)
        return torch.softmax(scores.masked_fill(~keep, float("-inf")), dim=0)

    def act(self, obs: Any) -> torch.Tensor:
        with torch.set_grad_enabled(self.learning):
            w = self.weights_for(obs)
        if self.learning:
            g = self.learn(w, horizon=self.config.horizon).detach().to("cpu", torch.float64)
            agreement = -g / g.abs().max().clamp_min(1e-30)
            d = self.config.confidence_decay
            assert self.confidence is not None
            self.confidence = d * self.confidence + (1.0 - d) * agreement
        return w.detach()

    def state_dict(self) -> dict:
        return {
            "config": asdict(self.config),
            **self.base_state(),
            "hidden": None if self.hidden is None else self.hidden.detach().cpu(),
            "confidence": None if self.confidence is None else self.confidence.clone(),
        }

    def load_state_dict(self, state: dict) -> None:
        if state["config"] != asdict(self.config):
            self.__init__(**state["config"])
        self.load_base_state(state)
        device = next(self.net.parameters()).device  # type: ignore[union-attr]
        self.hidden = None if state["hidden"] is None else state["hidden"].to(device)
        self.confidence = None if state["confidence"] is None else state["confidence"].clone()
