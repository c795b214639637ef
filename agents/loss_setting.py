"""The common base of teachers that *output* the loss parameters and learn through the look-ahead.

L2T-DLF and L2T-DFM both map what they see of the student to a full phi (not a bounded step on
it), commit it with the env's ``action_mode="set"`` (``step(phi)`` is ``commit_phi(phi)``), and
learn online: each teaching step, ``env.unwrapped.unrolled_val_loss(phi(psi), measure=...)``
differentiates a validation measure through the student's next K unrolled SGD steps back to the
teacher's weights psi; one Adam step follows, and the commit reuses that very unroll (one
differentiable unroll per teaching step, where L2T-DLN needs two).
"""

from __future__ import annotations

import copy
from typing import Any, ClassVar, Optional

import torch
from torch import nn

from l2t_agents.base import BaseTeacher


def move_optimizer_state(optimizer: torch.optim.Optimizer, device: torch.device, dtype: torch.dtype) -> None:
    """Move an optimiser's per-parameter tensors (Adam's moments) to the weights' device and dtype."""
    for slot in optimizer.state.values():
        for key, value in slot.items():
            if torch.is_tensor(value) and key != "step":
                slot[key] = value.to(device=device, dtype=dtype)


class LossSettingTeacher(BaseTeacher):
    """Shared plumbing: env checks, the network and its Adam optimiser, the learning step, state.

    Subclasses set ``loss_family`` and ``env_kwargs``, build ``self.net`` in :meth:`build` and
    implement ``act``; per-episode state goes in :meth:`reset_episode`.
    """

    #: the env loss family the teacher's output parameterises
    loss_family: ClassVar[str] = ""

    def __init__(self, lr: float) -> None:
        super().__init__()
        if not lr > 0:
            raise ValueError(f"{self.name}: lr={lr!r}, expected > 0")
        self.net: Optional[nn.Module] = None
        self.optimizer: Optional[torch.optim.Optimizer] = None
        self.lr = float(lr)
        self.iterations = 0
        self.n_phi = 0
        self.num_classes = 0

    # ------------------------------------------------------------------ network
    def build(self, n_phi: int, num_classes: int) -> nn.Module:  # pragma: no cover - abstract
        raise NotImplementedError

    def _ensure_net(self, n_phi: int, num_classes: int, seed: int) -> None:
        if self.net is not None and (self.n_phi, self.num_classes) == (n_phi, num_classes):
            return
        if self.net is not None:
            raise ValueError(
                f"{self.name}: this teacher was built for {self.num_classes} classes ({self.n_phi} loss parameters); "
                f"the env has {num_classes} classes ({n_phi}): make a new teacher per task"
            )
        self.n_phi, self.num_classes = n_phi, num_classes
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(seed)
            self.net = self.build(n_phi, num_classes)
        self.optimizer = self.make_optimizer(self.net.parameters())

    def make_optimizer(self, params: Any) -> torch.optim.Optimizer:
        """The optimiser of the teacher's weights: Adam at ``self.lr`` unless a subclass says otherwise."""
        return torch.optim.Adam(params, lr=self.lr)

    # ------------------------------------------------------------------ episode
    def reset(self, env) -> None:
        """A new episode (a new student): bind to ``env``, clear per-episode state, keep what was learnt."""
        self.attach(env)
        self.reset_episode()

    def reset_episode(self) -> None:
        return None

    def attach(self, env) -> None:
        """Bind to ``env`` mid-episode, keeping all state (e.g. to continue after ``load``)."""
        core = env.unwrapped
        family = getattr(getattr(core, "loss_family", None), "name", None)
        if family != self.loss_family or getattr(core, "action_mode", None) != "set":
            raise ValueError(
                f"the {self.name} teacher outputs the loss parameters itself: it needs loss={self.loss_family!r} and "
                f"action_mode='set'; got loss={family!r}, action_mode={getattr(core, 'action_mode', None)!r}"
            )
        if self.learning and not callable(getattr(core, "unrolled_val_loss", None)):
            raise ValueError(
                f"the {self.name} teacher learns through the env's differentiable look-ahead "
                "(env.unwrapped.unrolled_val_loss); this env has none"
            )
        super().reset(env)
        self._ensure_net(core.n_phi, core.raw.num_classes, self.seed)
        assert self.net is not None and self.optimizer is not None
        self.net.to(device=core.device, dtype=core.dtype)
        move_optimizer_state(self.optimizer, core.device, core.dtype)

    # ------------------------------------------------------------------ learning
    def learn(self, phi: torch.Tensor, measure: Any = None, horizon: Optional[int] = None) -> torch.Tensor:
        """One teacher update: the measure after the look-ahead under ``phi`` (a function of the
        network's weights), back to the weights, one Adam step. Returns ``d measure / d phi``.

        ``horizon``: student steps of the look-ahead (default all K). With all K the env keeps the
        unroll, so committing ``phi.detach()`` next costs no second run; a shorter horizon costs a
        fraction of the differentiable unroll plus a plain K-step commit.
        """
        assert self.net is not None and self.optimizer is not None
        core = self.env.unwrapped
        phi_leaf = phi.detach().requires_grad_(True)
        steps = None if horizon is None else min(int(horizon), core.config.unroll_steps)
        value = core.unrolled_val_loss(phi_leaf, steps=steps, measure=measure)
        (grad_phi,) = torch.autograd.grad(value, phi_leaf)
        self.optimizer.zero_grad(set_to_none=True)
        torch.autograd.backward([phi], [self.phi_gradient(phi_leaf.detach(), grad_phi)])
        self.optimizer.step()
        self.iterations += 1
        self.last_value = float(value.detach())
        return grad_phi

    def phi_gradient(self, phi: torch.Tensor, grad_phi: torch.Tensor) -> torch.Tensor:
        """The gradient sent from phi into the network: ``d measure / d phi`` itself unless a subclass
        adds terms of its own objective that depend on phi alone (e.g. a proximity penalty)."""
        return grad_phi

    # ------------------------------------------------------------------ state
    def base_state(self) -> dict:
        assert self.net is not None and self.optimizer is not None, f"{self.name}: nothing to save before the first reset"
        return {
            "n_phi": self.n_phi,
            "num_classes": self.num_classes,
            "net": {k: v.detach().cpu().clone() for k, v in self.net.state_dict().items()},
            "optimizer": copy.deepcopy(self.optimizer.state_dict()),
            "iterations": self.iterations,
            "learning": self.learning,
        }

    def load_base_state(self, state: dict) -> None:
        self._ensure_net(state["n_phi"], state["num_classes"], self.seed)
        assert self.net is not None and self.optimizer is not None
        device = next(self.net.parameters()).device
        # the saved dtype (float64 in a float64 env): loading into float32 weights would round them
        self.net.to(dtype=next(iter(state["net"].values())).dtype)
        self.net.load_state_dict(state["net"])
        self.optimizer.load_state_dict(state["optimizer"])
        move_optimizer_state(self.optimizer, device, next(self.net.parameters()).dtype)
        self.iterations = state["iterations"]
        self.learning = state["learning"]

    @property
    def seed(self) -> int:
        return int(getattr(self, "config").seed)

    def numel(self) -> int:
        return 0 if self.net is None else sum(p.numel() for p in self.net.parameters())
