"""The L2T-DLF teacher (Wu et al., NeurIPS 2018; docs/method.md section 3): mu_theta(s_t) -> Phi_t.

A feed-forward network maps student-state features to the parameters ``(W, b)`` of the ``dlf``
loss ``-sigmoid((log p)^T W[:, y] + b_y)``. Its output is ``[I, 0] + head(h)`` with the head
initialised to zero, so the untrained teacher gives W = I, b = 0 (the CE surrogate). The loss is
set every teaching step (env ``action_mode="set"``, i.e. ``commit_phi``).

Teacher training, reverse-mode differentiation of the dev measure through the student's unrolled
SGD: the smoothed 0-1 error ``m = mean(2 sigma(k (max_c p_c - p_y)) - 1)`` (k = 50; ``measure="ce"``
uses the validation cross-entropy instead) on the env's validation batch after the next K student
steps, back through those K steps to Phi_t and to theta.

Our choices (the paper's full-trajectory details are not known to us; docs/method.md section 3):

- **Truncation: one teaching step (K = 15 student steps) per segment**, the env's
  differentiable look-ahead. The gradient of the dev measure reaches Phi_t through the K steps that
  Phi_t trains, not through later segments (Phi_t's effect on the student carried further is cut,
  as in L2T-DLN's teacher stage). Why: the memory of a segment is one K-step graph whatever the
  episode's length, the cost per step equals one L2T-DLN look-ahead (the comparison is on equal
  terms), and the truncation horizon is the one the other gradient teacher uses.
- **Online, with optional replay.** Within an episode the teacher updates after every segment.
  Replaying the same student from a fixed start, as the paper does, is running several episodes
  with the same seed: :meth:`reset` keeps the learnt weights and the optimiser
  (``l2t teach --seed S`` repeatedly with a saved teacher, or ``run_episode`` in a loop).
- Features (``student_features``): the env's ``student`` observation with losses and the gradient
  norm through ``log1p`` so that every input is O(1). Network: 8 -> ``hidden`` (tanh) -> C*C + C.
- Adam, ``lr = 1e-3`` by default (docs/method.md section 3: no teacher learning rate is known; it is L2T-DLN's).
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any

import numpy as np
import torch
from torch import nn

from l2t_agents.base import register_teacher
from l2t_agents.loss_setting import LossSettingTeacher

MEASURES = ("smoothed_error", "ce")


def smoothed_error(logits: torch.Tensor, targets: torch.Tensor, k: float = 50.0) -> torch.Tensor:
    """L2T-DLF's dev measure, a smooth 0-1 error: ``mean(2 sigma(k (max_c p_c - p_y)) - 1)``."""
    p = torch.softmax(logits, dim=1)
    gap = p.max(dim=1).values - p.gather(1, targets[:, None]).squeeze(1)
    return (2.0 * torch.sigmoid(k * gap) - 1.0).mean()


def student_features(obs: Any, device: torch.device, dtype: torch.dtype) -> torch.Tensor:
    """The env's 8 student-state entries, losses and gradient norm squashed by ``log1p``."""
    s = np.asarray(obs["student"] if isinstance(obs, dict) else obs, dtype=np.float64)[:8]
    progress, train_loss, train_acc, val_loss, val_acc, loss_value, grad_norm, lr = s
    feats = [progress, np.log1p(train_loss), train_acc, np.log1p(val_loss), val_acc,
             np.sign(loss_value) * np.log1p(abs(loss_value)), np.log1p(grad_norm), lr]
    return torch.tensor(feats, device=device, dtype=dtype)


class DLFParameterNet(nn.Module):
    """``mu_theta``: features -> flat ``[W (C*C), b (C)]``, equal to ``[I, 0]`` at initialisation."""

    def __init__(self, n_features: int, hidden: int, num_classes: int) -> None:
        super().__init__()
        c = num_classes
        self.body = nn.Sequential(nn.Linear(n_features, hidden), nn.Tanh())
        self.head = nn.Linear(hidden, c * c + c)
        nn.init.zeros_(self.head.weight)
        nn.init.zeros_(self.head.bias)
        self.register_buffer("base", torch.cat([torch.eye(c).flatten(), torch.zeros(c)]))

    def forward(self, features: torch.Tensor) -> torch.Tensor:
        return self.base + self.head(self.body(features))


@dataclass
class L2TDLFConfig:
    """Settings of the L2T-DLF teacher; the dev measure and k are the paper's."""

    hidden: int = 64
    #: Adam learning rate of theta
    lr: float = 1e-3
    #: dev measure: "smoothed_error" (the paper's) or "ce" (validation cross-entropy)
    measure: str = "smoothed_error"
    #: sharpness k of the smoothed 0-1 error
    k: float = 50.0
    #: seed of the network's initial weights
    seed: int = 0

    def __post_init__(self) -> None:
        if self.measure not in MEASURES:
            raise ValueError(f"l2t-dlf: measure={self.measure!r}, expected one of {list(MEASURES)}")
        if not self.k > 0:
            raise ValueError(f"l2t-dlf: k={self.k!r}, expected > 0")
        if int(self.hidden) < 1:
            raise ValueError(f"l2t-dlf: hidden={self.hidden!r}, expected >= 1")


@register_teacher("l2t-dlf")
class L2TDLFTeacher(LossSettingTeacher):
    """mu_theta(student state) -> dlf (W, b), trained on the smoothed dev error through the unroll."""

    env_kwargs = {"loss": "dlf", "lookahead": "off", "action_mode": "set"}
    loss_family = "dlf"

    def __init__(self, **config: Any) -> None:
        self.config = L2TDLFConfig(**config)
        super().__init__(self.config.lr)

    def build(self, n_phi: int, num_classes: int) -> nn.Module:
        return DLFParameterNet(8, self.config.hidden, num_classes)

    def measure(self, logits: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
        """The dev measure the teacher descends."""
        if self.config.measure == "ce":
            return nn.functional.cross_entropy(logits, targets)
        return smoothed_error(logits, targets, self.config.k)

    def parameters_for(self, obs: Any) -> torch.Tensor:
        """Phi_t = mu_theta(s_t), with the graph to theta."""
        assert self.net is not None, "call reset(env) first"
        core = self.env.unwrapped
        return self.net(student_features(obs, core.device, core.dtype))

    def act(self, obs: Any) -> torch.Tensor:
        with torch.set_grad_enabled(self.learning):
            phi = self.parameters_for(obs)
        if self.learning:
            self.learn(phi, self.measure)
        return phi.detach()

    def state_dict(self) -> dict:
        return {"config": asdict(self.config), **self.base_state()}

    def load_state_dict(self, state: dict) -> None:
        if state["config"] != asdict(self.config):
            self.__init__(**state["config"])
        self.load_base_state(state)
