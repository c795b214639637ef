"""The episode rules of ``L2T-v0``, written once over a batch axis for the single and the vector env.

Everything that defines the MDP beyond training the student lives here: the observation's bounds
and the student-state vector, how an action becomes the next phi (the action modes), which bad
actions are refused, which steps are evaluated and monitored, the reward, the divergence rule and
the ``info`` of a step. :class:`l2t_env.env.L2TEnv` calls these with a batch of one,
:class:`l2t_env.vector_env.L2TVectorEnv` with its N sub-envs; each env keeps only what is truly its
own (one student or N stacked ones, and the unroll). A new reward or action mode is added here
(and to :data:`REWARDS` / :data:`ACTION_MODES`), and both envs have it.

Values are numpy arrays (rewards and statistics in float64) or torch tensors (phi and actions)
with a leading batch axis.
"""

from __future__ import annotations

from typing import Any, Optional, Sequence

import numpy as np
import torch

STUDENT_FEATURES = ("progress", "train_loss", "train_acc", "val_loss", "val_acc", "loss_value", "grad_norm", "lr")
STUDENT_LOW = np.array([0.0, 0.0, 0.0, 0.0, 0.0, -1e6, 0.0, 0.0], dtype=np.float32)
STUDENT_HIGH = np.array([1.0, 1e6, 1.0, 1e6, 1.0, 1e6, 1e6, 1e6], dtype=np.float32)
#: bound of the vector observations (``loss_grad``, ``loss_params``) and of ``"set"`` actions
VECTOR_BOUND = 1e6
REWARDS = ("val_loss_decrease", "val_acc_increase", "neg_val_loss")
ACTION_MODES = ("full", "layer", "global", "set", "control")
#: what ``info["monitor"]`` holds (``monitor_every``): the whole validation and test splits
MONITOR_SPLITS = ("val", "test")
MONITOR_KEYS = ("val_loss", "val_acc", "test_loss", "test_acc")
#: the per-step statistics of the student, in the order of ``last`` below
LAST_KEYS = ("train_loss", "train_acc", "loss_value", "grad_norm")

Groups = Sequence[tuple[str, slice]]


# ---------------------------------------------------------------------- settings
def check_reward(reward: str) -> str:
    if reward not in REWARDS:
        raise ValueError(f"unknown reward {reward!r}; valid: {list(REWARDS)}")
    return reward


def action_size(mode: str, n_phi: int, groups: Groups) -> int:
    """The action's length in ``mode``: one entry per loss parameter, per group, or one."""
    return {"full": n_phi, "layer": len(groups), "global": 1 if n_phi else 0, "set": n_phi, "control": n_phi}[mode]


def action_bound(mode: str) -> float:
    """``"set"`` actions are phi itself (bounded like the observation), the others in [-1, 1]."""
    return VECTOR_BOUND if mode == "set" else 1.0


def action_meaning(mode: str, groups: Groups) -> str:
    return {
        "full": "one entry per loss parameter",
        "layer": f"one scale per loss-parameter group {[name for name, _ in groups]}",
        "global": "one global scale",
        "set": "the new loss parameters phi",
        "control": f"one entry per hyper-parameter {[name for name, _ in groups]}, -1..1 mapped onto its control range",
    }[mode]


def control_range(family: Any, mode: str, device: torch.device, dtype: torch.dtype) -> Optional[tuple[torch.Tensor, torch.Tensor]]:
    """``(low, high)`` tensors ``[n_phi]`` of ``action_mode="control"`` (None in the other modes).

    Raises for a loss family without a finite range per parameter (``family.control_range()``
    None), naming it and the families that have one.
    """
    if mode != "control":
        return None
    ranges = family.control_range()
    if ranges is None:
        raise ValueError(
            f"action_mode='control' sets a few bounded loss hyper-parameters; loss family {family.name!r} "
            f"({family.n_params} parameters) has no control range. Use a robust loss (gce, sce, nce+rce, ls, "
            f"bootstrap, bootstrap-hard, focal) or 'dfm' (the fused metric's weights), or another action_mode"
        )
    low = torch.tensor([lo for lo, _ in ranges], device=device, dtype=dtype)
    high = torch.tensor([hi for _, hi in ranges], device=device, dtype=dtype)
    return low, high


# ---------------------------------------------------------------------- actions
def as_action_tensor(action: Any, shape: tuple, device: torch.device, dtype: torch.dtype, noun: str, meaning: str) -> torch.Tensor:
    """An action (tensor or array) as a float tensor on the env's device, after checking shape and dtype.

    ``noun`` starts the messages ("action has", "actions have"); ``meaning`` says what the shape is.
    """
    if isinstance(action, torch.Tensor):
        if tuple(action.shape) != shape:
            raise ValueError(f"{noun} shape {tuple(action.shape)}, expected {shape} ({meaning})")
        if not action.is_floating_point():
            raise TypeError(f"{noun} dtype {action.dtype}, expected a float tensor of shape {shape}")
        return action.detach().to(device=device, dtype=dtype)
    arr = np.asarray(action)
    if arr.shape != shape:
        raise ValueError(f"{noun} shape {arr.shape}, expected {shape} ({meaning})")
    if arr.dtype.kind != "f":
        raise TypeError(f"{noun} dtype {arr.dtype}, expected float32 of shape {shape}")
    return torch.as_tensor(arr).to(device=device, dtype=dtype)


def check_action_values(a: torch.Tensor, bound: float, batched: bool) -> None:
    """Refuse non-finite or out-of-bound actions (the env is left unchanged); ``batched`` names the sub-envs."""
    if not a.numel():
        return
    bad = ~torch.isfinite(a)
    if bool(bad.any()):
        if batched:
            rows = sorted(set(torch.nonzero(bad)[:, 0].tolist()))
            raise ValueError(f"actions hold non-finite values in sub-env(s) {rows}; env state unchanged")
        raise ValueError(f"action holds {int(bad.sum())} non-finite value(s) (NaN or inf); env state unchanged")
    lo, hi = float(a.min()), float(a.max())
    if lo < -bound or hi > bound:
        fmt = ".4g" if batched else "g"
        raise ValueError(f"action values span [{lo:.4g}, {hi:.4g}], expected within [{-bound:{fmt}}, {bound:{fmt}}]; env state unchanged")


def checked_phi(phi: Any, shape: tuple, device: torch.device, dtype: torch.dtype) -> torch.Tensor:
    """Loss parameters given to ``commit_phi``: a finite tensor of ``shape``, detached onto the env's device."""
    if not isinstance(phi, torch.Tensor) or tuple(phi.shape) != shape:
        raise ValueError(f"phi must be a tensor of shape {shape}, got {getattr(phi, 'shape', type(phi))}")
    phi = phi.detach().to(device=device, dtype=dtype)
    if not bool(torch.isfinite(phi).all()):
        raise ValueError("phi holds non-finite values; env state unchanged")
    return phi


def gradient_direction(loss_grad: torch.Tensor, groups: Groups) -> torch.Tensor:
    """The low-dimensional modes' step direction ``[N, n_phi]``: per row and group, ``loss_grad /
    rms(loss_grad)`` clipped to [-1, 1], so a scale of +1 moves phi down the hypergradient by up to
    ``action_scale`` per coordinate, whatever the gradient's raw magnitude."""
    parts = []
    for _, s in groups:
        part = loss_grad[:, s]
        rms = part.square().mean(1, keepdim=True).sqrt()
        parts.append((part / (rms + 1e-12)).clamp(-1.0, 1.0))
    return torch.cat(parts, 1)


def phi_after(
    phi: torch.Tensor,
    action: torch.Tensor,
    mode: str,
    scale: float,
    groups: Groups,
    direction,
    control: Optional[tuple[torch.Tensor, torch.Tensor]] = None,
) -> torch.Tensor:
    """The next phi ``[N, n_phi]`` of actions ``[N, n_action]``: ``phi - scale * action`` in
    ``"full"`` mode; in ``"layer"``/``"global"`` the action first becomes a per-coordinate move
    (each group's scale times ``direction()``, :func:`gradient_direction`); in ``"set"`` the
    action is phi; in ``"control"`` the action in [-1, 1] is mapped linearly onto the ``control``
    range ``(low, high)`` (-1 -> low, 1 -> high), whatever phi was. Keeps the action's graph."""
    if mode == "set":
        return action
    if mode == "control":
        low, high = control
        return low + (action + 1.0) * (0.5 * (high - low))
    if mode != "full":
        d = direction()
        scales = action.expand(-1, len(groups)) if mode == "global" else action
        action = torch.cat([scales[:, i : i + 1] * d[:, s] for i, (_, s) in enumerate(groups)], 1)
    return phi - scale * action


# ---------------------------------------------------------------------- cadence
def evaluated(t: np.ndarray, reward_every: int, teaching_steps: int) -> np.ndarray:
    """Whether the step that reached teaching step ``t`` evaluates the fixed validation subset:
    every ``reward_every``-th step and the last."""
    return (t % reward_every == 0) | (t >= teaching_steps)


def monitored(t: np.ndarray, monitor_every: int, done: np.ndarray) -> np.ndarray:
    """Whether a step reports ``info["monitor"]``: every ``monitor_every``-th step and the last (never with 0)."""
    if not monitor_every:
        return np.zeros(np.shape(t), dtype=bool)
    return (t % monitor_every == 0) | done


# ---------------------------------------------------------------------- reward and episode end
def outcome(
    reward: str,
    penalty: float,
    prev_val: np.ndarray,
    val: np.ndarray,
    was_evaluated: np.ndarray,
    finite: np.ndarray,
    t: np.ndarray,
    teaching_steps: int,
) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """``(reward, terminated, truncated, diverged)`` of a step, per row.

    ``prev_val`` and ``val`` are ``[N, 2]`` (loss, accuracy) of the fixed validation subset at its
    latest evaluation before and after the step. A student diverges when its step had a non-finite
    loss, gradient or parameter (``finite`` False) or its evaluated validation loss is non-finite;
    it gets ``penalty`` and terminates. Unevaluated steps get 0 (the difference rewards then credit
    the change at the next evaluation). The episode is truncated at ``teaching_steps``.
    """
    diverged = ~finite | (was_evaluated & ~np.isfinite(val[:, 0]))
    if reward == "val_loss_decrease":
        r = prev_val[:, 0] - val[:, 0]
    elif reward == "val_acc_increase":
        r = val[:, 1] - prev_val[:, 1]
    else:
        r = -val[:, 0]
    r = np.where(was_evaluated, r, 0.0)
    r = np.where(diverged, penalty, r)
    return r, diverged, ~diverged & (t >= teaching_steps), diverged


# ---------------------------------------------------------------------- observation and info
def student_observation(t: np.ndarray, teaching_steps: int, last: np.ndarray, val: np.ndarray, lr: float) -> np.ndarray:
    """The ``student`` observation ``[N, 8]`` (:data:`STUDENT_FEATURES`), float32; non-finite values
    (a diverged student) are mapped to the bounds."""
    n = len(t)
    student = np.stack([t / teaching_steps, last[:, 0], last[:, 1], val[:, 0], val[:, 1], last[:, 2], last[:, 3], np.full(n, lr)], axis=1)
    student = np.clip(np.nan_to_num(student, nan=1e6, posinf=1e6, neginf=-1e6), STUDENT_LOW, STUDENT_HIGH)
    return student.astype(np.float32)


def to_box(t: torch.Tensor) -> np.ndarray:
    """A vector observation (``loss_grad``, ``loss_params``) as float32 within ``VECTOR_BOUND``; NaN -> 0."""
    t = torch.nan_to_num(t.detach(), nan=0.0, posinf=VECTOR_BOUND, neginf=-VECTOR_BOUND).clamp(-VECTOR_BOUND, VECTOR_BOUND)
    return t.to("cpu", torch.float32).numpy()


def step_info(
    val: np.ndarray,
    last: np.ndarray,
    t: np.ndarray,
    student_steps: np.ndarray,
    diverged: np.ndarray,
    was_evaluated: np.ndarray,
    reused: np.ndarray,
) -> dict[str, np.ndarray]:
    """The ``info`` of a step, per row (copies): the fixed subset's latest validation loss and accuracy,
    the student's statistics over the step, the counters and flags."""
    return {
        "val_loss": val[:, 0].copy(),
        "val_acc": val[:, 1].copy(),
        **{key: last[:, i].copy() for i, key in enumerate(LAST_KEYS)},
        "teaching_step": t.copy(),
        "student_steps": student_steps.copy(),
        "diverged": diverged.copy(),
        "evaluated": was_evaluated.copy(),
        "reused_unroll": reused.copy(),
    }


def end_info(final: dict[str, Any]) -> dict[str, Any]:
    """What the last step of an episode adds to ``info``: ``final`` (whole train/val/test splits)
    and the test loss and accuracy on their own."""
    return {"final": final, "test_loss": final["test_loss"], "test_acc": final["test_acc"]}


def monitor_info(metrics: dict[str, Any]) -> dict[str, Any]:
    """``info["monitor"]``: the whole validation and test splits' loss and accuracy (reporting only)."""
    return {"monitor": {key: metrics[key] for key in MONITOR_KEYS}}
