"""Functional students: one code path for the committed SGD step and the differentiable unroll.

A student's state is a list of parameter tensors and a list of buffer tensors (BatchNorm running
statistics) run through ``torch.func.functional_call`` on a module that only supplies structure.
:func:`sgd_unroll` takes K plain-SGD steps; with ``create_graph=True`` every step stays in the
autograd graph (``theta_{k+1} = theta_k - lr * grad``), so a validation loss after the unroll can
be differentiated with respect to the loss parameters phi (the hypergradient, METHOD.md stage 1).

Both modes use the same arithmetic (``p - lr * g``), so committing the result of a differentiable
unroll gives the same student as re-running the steps without a graph.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable, Optional

import torch
import torch.nn.functional as F
from torch import nn
from torch.func import functional_call

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


@dataclass
class UnrollStats:
    """What the student did over the K steps (detached tensors; read them with ``.item()`` once)."""

    train_loss: torch.Tensor  # mean cross-entropy on the K training batches, at each step's input
    train_acc: torch.Tensor
    loss_value: torch.Tensor  # mean of the taught loss over the K steps
    grad_norm: torch.Tensor  # L2 norm of the student's gradient at the last step
    finite: torch.Tensor  # bool: every loss and every parameter stayed finite


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
) -> tuple[list[torch.Tensor], UnrollStats]:
    """K steps of plain SGD (no momentum, no weight decay) on ``loss_fn(logits, y)``.

    Without a graph the parameter leaves are updated in place, as ``torch.optim.SGD`` does.
    With ``create_graph=True`` the new parameters are functions of the old ones and of whatever
    ``loss_fn`` closes over (phi), ready for a second-order backward pass. ``buffers`` are
    updated in place by BatchNorm; pass copies when the unroll is only a look-ahead.
    """
    steps = len(xs) if steps is None else steps
    logits_seen, losses = [], []
    grads: tuple[torch.Tensor, ...] = ()
    for k in range(steps):
        logits = student(params, buffers, xs[k])
        loss = loss_fn(logits, ys[k])
        grads = torch.autograd.grad(loss, params, create_graph=create_graph)
        if create_graph:
            params = [p - lr * g for p, g in zip(params, grads)]
        else:
            with torch.no_grad():
                torch._foreach_sub_(params, torch._foreach_mul(grads, lr))
        logits_seen.append(logits.detach())
        losses.append(loss.detach())
    with torch.no_grad():
        stats = summarise(logits_seen, ys[:steps], losses, grads, params)
    return params, stats


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
