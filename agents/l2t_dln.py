"""The L2T-DLN teacher: a coordinate-wise LSTM that learns to update the Dynamic Loss Network.

Faithful to the authors' code (docs/method.md section 2); one teacher iteration, in order:

1. **Student stage (look-ahead).** The env's ``loss_grad`` observation is
   ``g = dL_val/dphi`` through a differentiable K-step unroll of the student from theta_0.
2. **DLN stage.** The LSTM ``m_psi`` maps ``pre(g)`` (Andrychowicz et al.'s preprocessing, p = 10)
   to ``u`` in (-1, 1) per DLN coordinate; ``phi' = phi - 1e-3 * u`` (the env's ``action_scale``).
3. **Teacher stage and commit.** The student is unrolled again from theta_0 under ``phi'(psi)``
   (``env.unrolled_val_loss``), one Adam step is taken on psi with ``dL'_val/dpsi``, and ``u`` is
   committed with ``env.step``, which reuses that unroll: two unrolls per iteration, as the reference.

The LSTM's hidden and cell states carry over between iterations (the teacher's "memory") and are
detached each iteration (or every ``memory_truncation`` iterations, an option beyond the code).
"""

from __future__ import annotations

import math
from collections import defaultdict
from dataclasses import asdict, dataclass
from typing import Any, Optional

import numpy as np
import torch
from torch import nn

from l2t_agents.base import BaseTeacher, is_vector_env, register_teacher

LSTMState = list[tuple[torch.Tensor, torch.Tensor]]


def preprocess_gradient(g: torch.Tensor, p: float = 10.0) -> torch.Tensor:
    """Andrychowicz et al. (2016): ``(log|g|/p, sign g)`` if ``|g| >= e^-p``, else ``(-1, e^p g)``."""
    big = g.abs() >= math.exp(-p)
    log_part = torch.where(big, g.abs().clamp_min(math.exp(-p)).log() / p, torch.full_like(g, -1.0))
    sign_part = torch.where(big, torch.sign(g), g * math.exp(p))
    return torch.stack([log_part, sign_part], dim=-1)


class CoordinateLSTM(nn.Module):
    """Stacked LSTMCells shared by every coordinate of phi (each coordinate is a batch row).

    Default 2 -> 64 -> 64 -> 64 -> 1: 84,236 parameters. The output is the last cell's hidden
    state, in (-1, 1).
    """

    def __init__(self, input_size: int = 2, hidden: int = 64, layers: int = 4) -> None:
        super().__init__()
        sizes = [input_size] + [hidden] * (layers - 1) + [1]
        self.cells = nn.ModuleList(nn.LSTMCell(sizes[i], sizes[i + 1]) for i in range(layers))

    def initial_state(self, n: int, device: torch.device, dtype: torch.dtype) -> LSTMState:
        return [
            (torch.zeros(n, c.hidden_size, device=device, dtype=dtype),) * 2 for c in self.cells
        ]

    def forward(self, x: torch.Tensor, state: LSTMState) -> tuple[torch.Tensor, LSTMState]:
        new_state = []
        h = x
        for cell, (h_prev, c_prev) in zip(self.cells, state):
            h, c = cell(h, (h_prev, c_prev))
            new_state.append((h, c))
        return h.squeeze(-1), new_state


class StackedLSTM:
    """N independent :class:`CoordinateLSTM` teachers as one set of stacked ``[N, ...]`` leaves.

    The LSTM cells' arithmetic (torch's ``LSTMCell``: gates ``i, f, g, o``) in batched matmuls, so
    N teachers act on N students' ``[N, n_phi, features]`` inputs in one pass. Adam is elementwise,
    so one Adam over the stacked leaves is N independent Adams (same step count, same settings).
    """

    def __init__(self, lstm: CoordinateLSTM, n: int) -> None:
        self.n = n
        self.cells = [
            [getattr(cell, name).detach().unsqueeze(0).repeat(n, *[1] * getattr(cell, name).dim()).requires_grad_(True)
             for name in ("weight_ih", "weight_hh", "bias_ih", "bias_hh")]
            for cell in lstm.cells
        ]
        self.hidden_sizes = [cell.hidden_size for cell in lstm.cells]

    def parameters(self) -> list[torch.Tensor]:
        return [p for cell in self.cells for p in cell]

    def initial_state(self, n_coords: int, device: torch.device, dtype: torch.dtype) -> LSTMState:
        return [(torch.zeros(self.n, n_coords, h, device=device, dtype=dtype),) * 2 for h in self.hidden_sizes]

    def to(self, device: torch.device, dtype: torch.dtype) -> None:
        with torch.no_grad():
            self.cells = [[p.detach().to(device=device, dtype=dtype).requires_grad_(True) for p in cell] for cell in self.cells]

    def __call__(self, x: torch.Tensor, state: LSTMState) -> tuple[torch.Tensor, LSTMState]:
        new_state = []
        h = x
        for (w_ih, w_hh, b_ih, b_hh), (h_prev, c_prev) in zip(self.cells, state):
            gates = torch.baddbmm((b_ih + b_hh)[:, None, :], h, w_ih.transpose(1, 2)) + torch.bmm(h_prev, w_hh.transpose(1, 2))
            i, f, g, o = gates.chunk(4, dim=-1)
            c = torch.sigmoid(f) * c_prev + torch.sigmoid(i) * torch.tanh(g)
            h = torch.sigmoid(o) * torch.tanh(c)
            new_state.append((h, c))
        return h.squeeze(-1), new_state

    def row_grad_norms(self) -> torch.Tensor:
        """Each teacher's gradient norm over all its leaves, ``[N]``."""
        norms = [p.grad.reshape(self.n, -1).norm(dim=1) for p in self.parameters() if p.grad is not None]
        return torch.stack(norms, 1).norm(dim=1)


@dataclass
class L2TDLNConfig:
    """The teacher's settings; the defaults are the reference code's."""

    hidden: int = 64
    layers: int = 4
    #: gradient preprocessing constant p
    preprocess_p: float = 10.0
    #: Adam learning rate of the teacher
    lr: float = 1e-3
    #: also feed the env's student-state vector to every coordinate (the paper's "student states")
    student_state_inputs: bool = False
    #: iterations of backpropagation through the LSTM's memory (1 = the reference: detach each one)
    memory_truncation: int = 1
    #: take the teacher's gradient from stage 1's hypergradient instead of a second unroll
    first_order: bool = False
    #: seed of the LSTM's initial weights
    seed: int = 0
    #: on a vector env: one LSTM learning from all N students (mean of their gradients) instead of
    #: N independent LSTMs (the default, each exactly a single teacher of its sub-env)
    shared: bool = False
    # Stabilisers (all off by default = the reference code). A random or fitted DLN can be wrecked
    # by the teacher's first, untrained moves; these keep phi near where the episode started it.
    #: zero the last LSTM cell's weights and biases, so the untrained teacher outputs u = 0 (leaves
    #: the DLN at its init) until its Adam steps move it; the other cells keep the reference init
    zero_init_output: bool = False
    #: trust region as a penalty: the teacher minimises L'_val + proximity * ||phi' - phi_0||^2,
    #: phi_0 the DLN at the episode's start (0 = off)
    proximity: float = 0.0
    #: hard trust region: |phi' - phi_0| <= max_drift per coordinate, by clamping u (None = off)
    max_drift: Optional[float] = None
    #: clip the L2 norm of the teacher's (meta-)gradient before each Adam step (None = off)
    clip_meta_grad: Optional[float] = None


@register_teacher("l2t-dln")
class L2TDLNTeacher(BaseTeacher):
    """The reference agent of ``L2T-v0``; see the module docstring for the iteration."""

    env_kwargs = {"lookahead": "K", "action_mode": "full"}
    batched = True

    def __init__(self, **config: Any) -> None:
        super().__init__()
        self.config = L2TDLNConfig(**config)
        cfg = self.config
        if cfg.memory_truncation < 1:
            raise ValueError(f"memory_truncation={cfg.memory_truncation}, expected >= 1")
        for key in ("proximity", "max_drift", "clip_meta_grad"):
            value = getattr(cfg, key)
            if value is not None and not (isinstance(value, (int, float)) and math.isfinite(value) and value >= 0):
                raise ValueError(f"{key}={value!r}, expected a finite number >= 0" + ("" if key == "proximity" else " or None"))
        self.n_student_features = 8 if cfg.student_state_inputs else 0
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(cfg.seed)
            self.lstm = CoordinateLSTM(2 + self.n_student_features, cfg.hidden, cfg.layers)
        if cfg.zero_init_output:
            with torch.no_grad():
                for p in self.lstm.cells[-1].parameters():
                    p.zero_()
        self.optimizer = torch.optim.Adam(self.lstm.parameters(), lr=cfg.lr)
        self.state: Optional[LSTMState] = None
        self.phi0: Optional[torch.Tensor] = None  # the DLN at the episode's start (trust regions)
        self._pending: list[tuple[torch.Tensor, torch.Tensor]] = []  # (u, dL/du) awaiting backward
        self.iterations = 0
        self.stack: Optional[StackedLSTM] = None  # N independent teachers on a vector env
        self.stack_optimizer: Optional[torch.optim.Adam] = None
        self._resetting: Optional[np.ndarray] = None  # vector env: rows whose next step is an autoreset

    # ------------------------------------------------------------------ episode
    def reset(self, env) -> None:
        """A new episode: bind to ``env`` and clear the memory (a new student and a new DLN).

        On a vector env of N sub-envs: N independent teachers (``shared=False``), each starting
        from this teacher's weights and Adam state, stacked as one :class:`StackedLSTM`; or this
        one LSTM for all (``shared=True``). Each episode on the vector env starts a fresh stack.
        """
        self.attach(env)
        core = env.unwrapped
        self._pending = []
        self.phi0 = core.phi.detach().clone()
        if not is_vector_env(env):
            self.state = self.lstm.initial_state(core.n_phi, core.device, core.dtype)
            return
        n = core.num_envs
        self._resetting = np.zeros(n, dtype=bool)
        if self.config.shared:
            self.stack, self.stack_optimizer = None, None
            self.state = [(h.view(n, core.n_phi, -1), c.view(n, core.n_phi, -1)) for h, c in self.lstm.initial_state(n * core.n_phi, core.device, core.dtype)]
            return
        self.stack = StackedLSTM(self.lstm, n)
        self.stack_optimizer = torch.optim.Adam(self.stack.parameters(), lr=self.config.lr)
        own = self.optimizer.state_dict()["state"]
        for i, p in enumerate(self.stack.parameters()):  # each teacher continues this one's Adam
            if i in own:
                self.stack_optimizer.state[p] = {
                    k: (v.unsqueeze(0).repeat(n, *[1] * v.dim()).to(core.device, core.dtype) if k != "step" else v.clone())
                    for k, v in own[i].items()
                }
        self.state = self.stack.initial_state(core.n_phi, core.device, core.dtype)

    def attach(self, env) -> None:
        """Bind to ``env`` mid-episode, keeping the memory (e.g. to continue after ``load``)."""
        super().reset(env)
        core = env.unwrapped
        if core.action_mode != "full" or core.lookahead_steps != core.config.unroll_steps:
            raise ValueError(
                "the l2t-dln teacher needs action_mode='full' and the full K-step look-ahead (lookahead='K'); "
                f"got action_mode={core.action_mode!r}, lookahead steps={core.lookahead_steps} of K={core.config.unroll_steps}"
            )
        self.lstm.to(device=core.device, dtype=core.dtype)
        for slot in self.optimizer.state.values():  # Adam's moments follow the weights
            for key, value in slot.items():
                if torch.is_tensor(value) and key != "step":
                    slot[key] = value.to(device=core.device, dtype=core.dtype)
        if self.state is not None:
            self.state = [(h.to(core.device, core.dtype), c.to(core.device, core.dtype)) for h, c in self.state]
        if self.stack is not None:
            old = self.stack.parameters()
            self.stack.to(core.device, core.dtype)
            if self.stack_optimizer is not None:  # the optimizer follows the moved leaves, moments too
                new = self.stack.parameters()
                self.stack_optimizer.param_groups[0]["params"] = new
                moved = {}
                for before, after in zip(old, new):
                    if before in self.stack_optimizer.state:
                        slot = self.stack_optimizer.state[before]
                        moved[after] = {k: v.to(core.device, core.dtype) if torch.is_tensor(v) and k != "step" else v for k, v in slot.items()}
                self.stack_optimizer.state = defaultdict(dict, moved)
        if self.phi0 is None or self.phi0.shape != core.phi.shape:
            self.phi0 = core.phi.detach().clone()
        self.phi0 = self.phi0.to(core.device, core.dtype)

    # ------------------------------------------------------------------ one teacher iteration
    def act(self, obs: Any) -> torch.Tensor:
        env = self.env.unwrapped
        # Stage 1 (student stage): the hypergradient g = dL_val/dphi, computed by the env's look-ahead.
        g = env.loss_grad
        # Stage 2 (DLN stage): u = m_psi(pre(g)); phi' = phi - 1e-3 * u.
        x = preprocess_gradient(g, self.config.preprocess_p)
        if self.n_student_features:
            s = torch.as_tensor(obs["student"], device=g.device, dtype=g.dtype)
            x = torch.cat([x, s.unsqueeze(-2).expand(*g.shape, -1)], dim=-1)
        with torch.set_grad_enabled(self.learning):
            if self.stack is not None:
                u, self.state = self.stack(x, self.state)
            elif g.dim() == 2:  # one shared LSTM over all N students' coordinates
                flat = [(h.flatten(0, 1), c.flatten(0, 1)) for h, c in self.state]
                u, flat = self.lstm(x.flatten(0, 1), flat)
                u, self.state = u.view(g.shape), [(h.view(*g.shape, -1), c.view(*g.shape, -1)) for h, c in flat]
            else:
                u, self.state = self.lstm(x, self.state)
            u = self._trust_region(u, env)
        if self.learning:
            # Stage 3 (teacher stage): dL'_val/du, then one Adam step on psi through the LSTM.
            if self.config.first_order:
                # phi moves by at most action_scale per coordinate, so to first order in that scale
                # dL'/du ~= dL/dphi * dphi'/du = -action_scale * g (measured on digits at 1e-3:
                # cosine >= 0.999 to the exact gradient, 0.6-4.5% relative error; see
                # benchmarks/first_order_gradient.py). The commit is then a plain K-step run.
                grad_u = -env.action_scale * g
            else:
                u_leaf = u.detach().requires_grad_(True)
                val_loss = env.unrolled_val_loss(env.phi_after(u_leaf))  # kept by env for the commit
                (grad_u,) = torch.autograd.grad(val_loss.sum(), u_leaf)  # [N] on a vector env: N independent losses
            if self.config.proximity:
                # d/du of proximity * ||phi - scale*u - phi_0||^2
                drift = env.phi_after(u.detach()) - self.phi0
                grad_u = grad_u - 2.0 * self.config.proximity * env.action_scale * drift
            if g.dim() == 2:
                if self._resetting is not None and self._resetting.any():  # the env ignores these rows' action
                    grad_u = grad_u.masked_fill(torch.as_tensor(self._resetting, device=g.device)[:, None], 0.0)
                if self.stack is None:  # shared: the mean of the N students' gradients
                    grad_u = grad_u / len(g)
            self._pending.append((u, grad_u))
            self.iterations += 1
            if self.iterations % self.config.memory_truncation == 0:
                self._teacher_update()
        else:
            self.state = [(h.detach(), c.detach()) for h, c in self.state]
        # The commit: env.step(u) sets phi <- phi' and, in the faithful mode, reuses stage 3's unroll.
        return u.detach()

    def _trust_region(self, u: torch.Tensor, env) -> torch.Tensor:
        """Clamp u so that phi' = phi - scale*u stays within ``max_drift`` of phi_0 per coordinate."""
        if self.config.max_drift is None:
            return u
        offset = (env.phi - self.phi0).detach() / env.action_scale  # phi' - phi_0 = scale * (offset - u)
        radius = self.config.max_drift / env.action_scale
        return torch.minimum(torch.maximum(u, offset - radius), offset + radius)

    def _teacher_update(self) -> None:
        """Backpropagate the pending dL/du through the LSTM (and its memory), step Adam, detach."""
        us, grads = zip(*self._pending)
        if self.stack is not None:
            assert self.stack_optimizer is not None
            self.stack_optimizer.zero_grad(set_to_none=True)
            torch.autograd.backward(list(us), list(grads))
            if self.config.clip_meta_grad is not None:  # per teacher, as N separate ones would clip
                scale = (self.config.clip_meta_grad / (self.stack.row_grad_norms() + 1e-6)).clamp(max=1.0)
                for p in self.stack.parameters():
                    if p.grad is not None:
                        p.grad.mul_(scale.view(-1, *[1] * (p.dim() - 1)))
            self.stack_optimizer.step()
            self._pending = []
            self.state = [(h.detach(), c.detach()) for h, c in self.state]
            return
        self.optimizer.zero_grad(set_to_none=True)
        torch.autograd.backward(list(us), list(grads))
        if self.config.clip_meta_grad is not None:
            torch.nn.utils.clip_grad_norm_(self.lstm.parameters(), self.config.clip_meta_grad)
        self.optimizer.step()
        self._pending = []
        self.state = [(h.detach(), c.detach()) for h, c in self.state]

    def observe(self, obs: Any, reward: Any, terminated: Any, truncated: Any, info: dict) -> None:
        done = np.asarray(terminated) | np.asarray(truncated)
        if done.any() and self._pending:
            self._teacher_update()
        if self._resetting is not None:
            # rows reset by the step just taken start a new episode: fresh memory and phi_0
            rows = torch.as_tensor(self._resetting, device=self.phi0.device)
            if self._resetting.any() and self.state is not None:
                self.state = [(h.masked_fill(rows[:, None, None], 0.0), c.masked_fill(rows[:, None, None], 0.0)) for h, c in self.state]
                self.phi0 = torch.where(rows[:, None], self.env.unwrapped.phi, self.phi0)
            self._resetting = done.copy()

    # ------------------------------------------------------------------ state
    def state_dict(self) -> dict:
        to_cpu = lambda t: t.detach().cpu()  # noqa: E731
        return {
            "config": asdict(self.config),
            "lstm": {k: to_cpu(v) for k, v in self.lstm.state_dict().items()},
            "optimizer": self.optimizer.state_dict(),
            "memory": None if self.state is None else [(to_cpu(h), to_cpu(c)) for h, c in self.state],
            "phi0": None if self.phi0 is None else to_cpu(self.phi0),
            "iterations": self.iterations,
            "learning": self.learning,
            "stack": None if self.stack is None else [to_cpu(p) for p in self.stack.parameters()],
            "stack_optimizer": None if self.stack_optimizer is None else self.stack_optimizer.state_dict(),
            "resetting": None if self._resetting is None else self._resetting.tolist(),
        }

    def load_state_dict(self, state: dict) -> None:
        if state["config"] != asdict(self.config):
            self.__init__(**state["config"])
        self.lstm.load_state_dict(state["lstm"])
        self.optimizer.load_state_dict(state["optimizer"])
        device = next(self.lstm.parameters()).device
        self.state = None if state["memory"] is None else [(h.to(device), c.to(device)) for h, c in state["memory"]]
        self.iterations = state["iterations"]
        self.learning = state["learning"]
        if state.get("stack") is not None:
            stacked = state["stack"]
            self.stack = StackedLSTM(self.lstm, len(stacked[0]))
            leaves = iter(stacked)
            self.stack.cells = [[next(leaves).to(device).requires_grad_(True) for _ in cell] for cell in self.stack.cells]
            self.stack_optimizer = torch.optim.Adam(self.stack.parameters(), lr=self.config.lr)
            self.stack_optimizer.load_state_dict(state["stack_optimizer"])
        if state.get("resetting") is not None:  # a vector env's rows whose next step is an autoreset
            self._resetting = np.asarray(state["resetting"], dtype=bool)
        if state.get("phi0") is not None:  # absent in teachers saved before it was kept
            self.phi0 = state["phi0"].to(device)

    def checkpointable(self) -> bool:
        """False while gradients of several iterations wait for one update (``memory_truncation``
        > 1): their graph through the LSTM's memory cannot be saved."""
        return not self._pending

    def numel(self) -> int:
        return sum(p.numel() for p in self.lstm.parameters())
