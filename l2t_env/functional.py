"""Functional students: one code path for the committed SGD step and the differentiable unroll.

A student's state is a list of parameter tensors and a list of buffer tensors (BatchNorm running
statistics) run through ``torch.func.functional_call`` on a module that only supplies structure.
:func:`sgd_unroll` takes K plain-SGD steps; with ``create_graph=True`` every step stays in the
autograd graph (``theta_{k+1} = theta_k - lr * grad``), so a validation loss after the unroll can
be differentiated with respect to the loss parameters phi (the hypergradient, docs/method.md section 2.4, stage 1).

Both modes use the same arithmetic (``p - lr * g``), so committing the result of a differentiable
unroll gives the same student as re-running the steps without a graph.

:func:`checkpointed_val_loss` is the same unroll with activation checkpointing at step granularity:
the forward keeps only the K parameter lists, and the backward recomputes one step's graph at a
time (a reverse pass of Hessian-vector products), so the memory of K graphs becomes that of one,
for about one extra plain pass through the K steps.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Callable, Optional

import torch
import torch.nn.functional as F
from torch import nn
from torch.func import functional_call, vmap

LossFn = Callable[[torch.Tensor, torch.Tensor], torch.Tensor]


class FunctionalStudent:
    """Calls an ``nn.Module`` with explicit parameter and buffer lists."""

    def __init__(self, module: nn.Module) -> None:
        self.module = module
        self.param_names = [name for name, _ in module.named_parameters()]
        self.buffer_names = [name for name, _ in module.named_buffers()]
        self._own_params = list(module.parameters())
        self._own_buffers = list(module.buffers())

    def own_state(self) -> tuple[list[torch.Tensor], list[torch.Tensor]]:
        """The module's own parameter and buffer tensors (the committed student's state).

        Calling with exactly these lists skips ``functional_call``'s re-parametrisation, which is
        the same computation with less Python per step; any other tensors go through it.
        """
        return self._own_params, self._own_buffers

    def __call__(self, params: list[torch.Tensor], buffers: list[torch.Tensor], x: torch.Tensor) -> torch.Tensor:
        if params is self._own_params and buffers is self._own_buffers:
            return self.module(x)
        state = dict(zip(self.param_names, params))
        state.update(zip(self.buffer_names, buffers))
        return functional_call(self.module, state, (x,))

    def train(self, mode: bool = True) -> None:
        self.module.train(mode)


class BatchedStudent:
    """N students of one architecture called as one through ``torch.func.vmap``.

    Parameters and buffers are lists of stacked tensors (student ``i`` is row ``i`` of each), the
    input is ``[N, B, ...]`` and the logits ``[N, B, C]``. In training mode BatchNorm updates each
    row of the stacked running statistics with its own student's batch statistics, in place, as
    the single module would. The module only supplies structure.
    """

    def __init__(self, module: nn.Module) -> None:
        self.module = module
        self.param_names = [name for name, _ in module.named_parameters()]
        self.buffer_names = [name for name, _ in module.named_buffers()]
        self._call = vmap(self._one)

    def _one(self, params: list[torch.Tensor], buffers: list[torch.Tensor], x: torch.Tensor) -> torch.Tensor:
        state = dict(zip(self.param_names, params))
        state.update(zip(self.buffer_names, buffers))
        return functional_call(self.module, state, (x,))

    def __call__(self, params: list[torch.Tensor], buffers: list[torch.Tensor], x: torch.Tensor) -> torch.Tensor:
        return self._call(params, buffers, x)

    def train(self, mode: bool = True) -> None:
        self.module.train(mode)


@dataclass
class UnrollStats:
    """What the student did over the K steps (detached tensors; read them with ``.item()`` once)."""

    train_loss: torch.Tensor  # mean cross-entropy on the K training batches, at each step's input
    train_acc: torch.Tensor
    loss_value: torch.Tensor  # mean of the taught loss over the K steps
    grad_norm: torch.Tensor  # L2 norm of the student's gradient at the last step
    finite: torch.Tensor  # bool: every loss and every parameter stayed finite


@dataclass
class UnrollRecord:
    """A differentiable look-ahead kept (by the env, and in its checkpoints) so that committing the
    same phi at the same step needs no second unroll: the step, phi, the unrolled parameters and
    buffers, and the unroll's statistics."""

    step: int
    phi: torch.Tensor
    params: list[torch.Tensor]
    buffers: list[torch.Tensor]
    stats: UnrollStats


def sgd_unroll(
    student: FunctionalStudent,
    params: list[torch.Tensor],
    buffers: list[torch.Tensor],
    xs: torch.Tensor,
    ys: torch.Tensor,
    loss_fn: LossFn,
    lr: float,
    *,
    create_graph: bool,
    steps: Optional[int] = None,
    keep_states: Optional[list] = None,
    summary: Optional[Callable[..., UnrollStats]] = None,
) -> tuple[list[torch.Tensor], UnrollStats]:
    """K steps of plain SGD (no momentum, no weight decay) on ``loss_fn(logits, y)``.

    Without a graph the parameter leaves are updated in place, as ``torch.optim.SGD`` does.
    With ``create_graph=True`` the new parameters are functions of the old ones and of whatever
    ``loss_fn`` closes over (phi), ready for a second-order backward pass. ``buffers`` are
    updated in place by BatchNorm; pass copies when the unroll is only a look-ahead.
    ``keep_states``, a list, receives a copy of each step's input state (parameters, buffers,
    random state), what a checkpointed backward pass needs to recompute the step.

    For N batched students (:class:`BatchedStudent`, ``xs`` of shape ``[K, N, B, ...]``),
    ``loss_fn`` returns the ``[N]`` per-student losses; the gradient of their sum is each
    student's own gradient (the students share no weights), and ``summary=summarise_batched``
    gives per-student statistics.
    """
    steps = len(xs) if steps is None else steps
    logits_seen, losses = [], []
    grads: tuple[torch.Tensor, ...] = ()
    for k in range(steps):
        if keep_states is not None:
            keep_states.append(([p.detach().clone() for p in params], [b.clone() for b in buffers], _rng_states(xs.device)))
        logits = student(params, buffers, xs[k])
        loss = loss_fn(logits, ys[k])
        grads = torch.autograd.grad(loss.sum() if loss.dim() else loss, params, create_graph=create_graph)
        if create_graph:
            params = [p - lr * g for p, g in zip(params, grads)]
        else:
            with torch.no_grad():
                torch._foreach_sub_(params, torch._foreach_mul(grads, lr))
        logits_seen.append(logits.detach())
        losses.append(loss.detach())
    with torch.no_grad():
        stats = (summary or summarise)(logits_seen, ys[:steps], losses, grads, params)
    return params, stats


PhiLossFn = Callable[[torch.Tensor, torch.Tensor, torch.Tensor], torch.Tensor]
#: a validation measure ``(logits, y) -> scalar``, differentiable in the logits
MeasureFn = Callable[[torch.Tensor, torch.Tensor], torch.Tensor]


@dataclass
class _CheckpointedRun:
    """Inputs of a checkpointed unroll, and its side results (final student, statistics)."""

    student: FunctionalStudent
    params: list[torch.Tensor]
    buffers: list[torch.Tensor]
    xs: torch.Tensor
    ys: torch.Tensor
    loss: PhiLossFn
    lr: float
    x_val: torch.Tensor
    y_val: torch.Tensor
    steps: int
    measure: MeasureFn = F.cross_entropy
    saved: Optional[list[tuple[list[torch.Tensor], list[torch.Tensor], Any]]] = None
    final_params: Optional[list[torch.Tensor]] = None
    stats: Optional[UnrollStats] = None


def _rng_states(device: torch.device) -> tuple:
    cuda = torch.cuda.get_rng_state(device) if device.type == "cuda" else None
    return torch.get_rng_state(), cuda


def _set_rng_states(states: tuple, device: torch.device) -> None:
    torch.set_rng_state(states[0])
    if states[1] is not None:
        torch.cuda.set_rng_state(states[1], device)


class _CheckpointedUnroll(torch.autograd.Function):
    """``phi -> val CE after K SGD steps under loss(phi)``, storing parameters instead of graphs."""

    @staticmethod
    def forward(ctx: Any, phi: torch.Tensor, run: _CheckpointedRun) -> torch.Tensor:  # type: ignore[override]
        device = phi.device
        phi_value = phi.detach()
        run.saved = []
        with torch.enable_grad():
            params = [p.detach().clone().requires_grad_(True) for p in run.params]
            params, run.stats = sgd_unroll(
                run.student, params, run.buffers, run.xs, run.ys, lambda z, y: run.loss(phi_value, z, y), run.lr,
                create_graph=False, steps=run.steps, keep_states=run.saved,
            )
        params = [p.detach() for p in params]
        run.saved.append((params, [b.clone() for b in run.buffers], _rng_states(device)))
        val_buffers = [b.clone() for b in run.buffers]  # the val forward must not move the kept stats
        with torch.no_grad():
            val_loss = run.measure(run.student(params, val_buffers, run.x_val), run.y_val)
        run.final_params = params
        ctx.run = run
        ctx.save_for_backward(phi_value)
        return val_loss

    @staticmethod
    @torch.autograd.function.once_differentiable
    def backward(ctx: Any, grad_out: torch.Tensor) -> tuple[torch.Tensor, None]:  # type: ignore[override]
        run: _CheckpointedRun = ctx.run
        (phi_value,) = ctx.saved_tensors
        device = phi_value.device
        saved = run.saved
        assert saved is not None, "a checkpointed unroll can be differentiated once"
        grad_phi = torch.zeros_like(phi_value)
        cuda_devices = [device.index if device.index is not None else torch.cuda.current_device()] if device.type == "cuda" else []
        with torch.random.fork_rng(devices=cuda_devices), torch.enable_grad():
            # adjoint of the final parameters: d(val CE)/d(theta_K)
            params, buffers, rng = saved[-1]
            _set_rng_states(rng, device)
            leaves = [p.detach().requires_grad_(True) for p in params]
            # each saved state is used once, so its buffers (copies) may be moved by the recompute
            val_loss = run.measure(run.student(leaves, buffers, run.x_val), run.y_val)
            adjoint = [grad_out * a for a in torch.autograd.grad(val_loss, leaves)]
            phi_leaf = phi_value.detach().requires_grad_(True)
            for k in reversed(range(run.steps)):
                # theta_{k+1} = theta_k - lr * g_k(theta_k, phi): pull the adjoint back through one step
                params, buffers, rng = saved[k]
                _set_rng_states(rng, device)
                leaves = [p.detach().requires_grad_(True) for p in params]
                loss = run.loss(phi_leaf, run.student(leaves, buffers, run.xs[k]), run.ys[k])
                grads = torch.autograd.grad(loss, leaves, create_graph=True)
                dot = torch.stack([(g * a).sum() for g, a in zip(grads, adjoint)]).sum()
                *hvp, d_phi = torch.autograd.grad(dot, [*leaves, phi_leaf], allow_unused=True)
                adjoint = [a - run.lr * h if h is not None else a for a, h in zip(adjoint, hvp)]
                if d_phi is not None:
                    grad_phi.sub_(run.lr * d_phi)
                saved[k] = None  # type: ignore[call-overload]  # free step k's copy as soon as it is used
        run.saved = None
        return grad_phi, None


def checkpointed_val_loss(
    student: FunctionalStudent,
    params: list[torch.Tensor],
    buffers: list[torch.Tensor],
    xs: torch.Tensor,
    ys: torch.Tensor,
    loss: PhiLossFn,
    phi: torch.Tensor,
    lr: float,
    x_val: torch.Tensor,
    y_val: torch.Tensor,
    *,
    steps: Optional[int] = None,
    measure: MeasureFn = F.cross_entropy,
) -> tuple[torch.Tensor, list[torch.Tensor], UnrollStats]:
    """The validation CE (or ``measure(logits, y)``) after K SGD steps under ``loss(phi, logits, y)``, differentiable in ``phi``.

    The same value and gradient as ``sgd_unroll(create_graph=True)`` followed by the validation
    forward, with step-level activation checkpointing: memory holds K + 1 parameter lists and one
    step's double-backward graph instead of K graphs. The backward pass (once only) recomputes each
    step, with the RNG state it had, and pulls the adjoint back with a Hessian-vector product.
    ``buffers`` are updated in place as in :func:`sgd_unroll`. Returns the loss, the final
    (detached) parameters and the unroll's statistics.
    """
    run = _CheckpointedRun(student, params, buffers, xs, ys, loss, lr, x_val, y_val, len(xs) if steps is None else steps, measure)
    val_loss = _CheckpointedUnroll.apply(phi, run)
    assert run.final_params is not None and run.stats is not None
    return val_loss, run.final_params, run.stats


def summarise(
    logits_seen: list[torch.Tensor],
    ys: torch.Tensor,
    losses: list[torch.Tensor],
    grads: tuple[torch.Tensor, ...],
    params: list[torch.Tensor],
) -> UnrollStats:
    """Batched statistics of an unroll: a handful of ops, no host sync."""
    logits = torch.stack(logits_seen).flatten(0, 1)
    y = ys.flatten()
    loss_value = torch.stack(losses).mean()
    grad_norm = torch.linalg.vector_norm(torch.stack(torch._foreach_norm(grads))) if grads else loss_value.new_zeros(())
    param_norm = torch.stack(torch._foreach_norm([p.detach() for p in params]))
    finite = torch.isfinite(loss_value) & torch.isfinite(param_norm).all() & torch.isfinite(grad_norm)
    return UnrollStats(
        train_loss=F.cross_entropy(logits, y),
        train_acc=(logits.argmax(dim=-1) == y).to(logits.dtype).mean(),
        loss_value=loss_value,
        grad_norm=grad_norm,
        finite=finite,
    )


def summarise_batched(
    logits_seen: list[torch.Tensor],
    ys: torch.Tensor,
    losses: list[torch.Tensor],
    grads: tuple[torch.Tensor, ...],
    params: list[torch.Tensor],
) -> UnrollStats:
    """:func:`summarise` per student of a batched unroll: every statistic is an ``[N]`` tensor."""
    logits = torch.stack(logits_seen, 1)  # [N, K, B, C]
    n = logits.shape[0]
    logits = logits.reshape(n, -1, logits.shape[-1])
    y = ys.transpose(0, 1).reshape(n, -1)
    loss_value = torch.stack(losses, 1).mean(1)
    if grads:
        grad_norm = torch.linalg.vector_norm(torch.stack([torch.linalg.vector_norm(g.reshape(n, -1), dim=1) for g in grads], 1), dim=1)
    else:
        grad_norm = loss_value.new_zeros(n)
    param_norm = torch.stack([torch.linalg.vector_norm(p.detach().reshape(n, -1), dim=1) for p in params], 1)
    finite = torch.isfinite(loss_value) & torch.isfinite(param_norm).all(1) & torch.isfinite(grad_norm)
    return UnrollStats(
        train_loss=batched_cross_entropy(logits, y),
        train_acc=(logits.argmax(dim=-1) == y).to(logits.dtype).mean(1),
        loss_value=loss_value,
        grad_norm=grad_norm,
        finite=finite,
    )


def batched_cross_entropy(logits: torch.Tensor, y: torch.Tensor, reduction: str = "mean") -> torch.Tensor:
    """Per-student cross-entropy of ``[N, B, C]`` logits: ``[N]`` means (or sums)."""
    ce = F.cross_entropy(logits.flatten(0, 1), y.flatten(), reduction="none").view(y.shape)
    return ce.mean(1) if reduction == "mean" else ce.sum(1)


@torch.no_grad()
def evaluate_batched(
    student: BatchedStudent,
    params: list[torch.Tensor],
    buffers: list[torch.Tensor],
    take: Callable[[int, int], tuple[torch.Tensor, torch.Tensor]],
    n: int,
    chunk: int = 1000,
) -> tuple[torch.Tensor, torch.Tensor]:
    """:func:`evaluate` for N students: ``take(start, stop)`` gives their ``[N, m, ...]`` inputs and
    ``[N, m]`` labels (gathered chunk by chunk, so N copies of a split never sit in memory);
    returns ``[N]`` float64 losses and accuracies."""
    student.train(False)
    try:
        total_loss, correct = None, None
        for start in range(0, n, chunk):
            x, y = take(start, min(start + chunk, n))
            logits = student(params, buffers, x)
            loss = batched_cross_entropy(logits.double(), y, reduction="sum")
            hits = (logits.argmax(dim=-1) == y).sum(1, dtype=torch.float64)
            total_loss = loss if total_loss is None else total_loss + loss
            correct = hits if correct is None else correct + hits
    finally:
        student.train(True)
    assert total_loss is not None and correct is not None
    return total_loss / n, correct / n


@torch.no_grad()
def evaluate(
    student: FunctionalStudent,
    params: list[torch.Tensor],
    buffers: list[torch.Tensor],
    x: torch.Tensor,
    y: torch.Tensor,
    chunk: int = 1000,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Mean cross-entropy and accuracy in eval mode (BatchNorm uses running statistics)."""
    student.train(False)
    try:
        total_loss = x.new_zeros((), dtype=torch.float64)
        correct = x.new_zeros((), dtype=torch.float64)
        for start in range(0, len(x), chunk):
            logits = student(params, buffers, x[start : start + chunk])
            yy = y[start : start + chunk]
            total_loss += F.cross_entropy(logits.double(), yy, reduction="sum")
            correct += (logits.argmax(dim=-1) == yy).sum()
    finally:
        student.train(True)
    return total_loss / len(x), correct / len(x)
