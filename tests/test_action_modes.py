"""The low-dimensional action modes (``layer``: one scale per DLN layer, ``global``: one scale),
through which every SB3 teacher acts, against an independent expectation: a positive scale is a
small step *down* the look-ahead validation loss. A second env at the same state measures that
loss before and after the step with central finite differences in float64, so a step that went
up the hypergradient (a flipped sign in the direction) fails, whatever the env computes inside."""

from __future__ import annotations

import gymnasium as gym
import numpy as np
import pytest
import torch

import l2t_env  # noqa: F401  (registers L2T-v0)

SMALL = dict(task="digits-mlp", teaching_steps=2, unroll_steps=2, batch_size=16, val_batch_size=32,
             student_kwargs={"hidden": [16]}, dtype="float64",
             action_scale=1e-7)  # small: the loss is piecewise smooth (ReLUs), with kinks that larger steps cross


def _actions(n: int) -> list[np.ndarray]:
    """One scale for every group, and (layer mode) unequal scales, one group left still."""
    if n == 1:
        return [np.ones(1, np.float32)]
    return [np.ones(n, np.float32), np.linspace(0.0, 1.0, n, dtype=np.float32)]


def _check_descent(loss, phi0: torch.Tensor, delta: torch.Tensor) -> None:
    """``delta`` lowers ``loss`` at ``phi0`` to first order, row by row (one row per student): the
    central difference along it is negative and equals the directional derivative autograd gives,
    and the loss falls. ``loss(phi)`` gives one value per row, with the graph to ``phi``."""
    assert (delta.abs().amax(-1) > 0).all()
    up, down, here = (loss(phi).detach() for phi in (phi0 + delta, phi0 - delta, phi0))
    central = (up - down) / 2  # the slope along delta, to O(|delta|^3)
    phi = phi0.clone().requires_grad_(True)
    (grad,) = torch.autograd.grad(loss(phi).sum(), phi)  # rows are independent students
    slope = (grad * delta).sum(-1)
    assert (central < 0).all(), f"the step went up the look-ahead loss: central differences {central.tolist()}"
    torch.testing.assert_close(central, slope, rtol=1e-3, atol=0.0)
    assert (up < here).all()


@pytest.mark.parametrize("mode, n", [("layer", 5), ("global", 1)])
def test_single_env_steps_down_the_lookahead_loss(mode, n):
    stepper = gym.make("L2T-v0", action_mode=mode, **SMALL)
    probe = gym.make("L2T-v0", action_mode=mode, **SMALL).unwrapped  # never steps: its look-ahead stays put
    probe.reset(seed=3)
    phi0 = probe.phi.detach().clone()
    for action in _actions(n):
        stepper.reset(seed=3)
        assert torch.equal(stepper.unwrapped.phi, phi0)
        stepper.step(action)
        _check_descent(lambda phi: probe.unrolled_val_loss(phi[0])[None], phi0[None], (stepper.unwrapped.phi.detach() - phi0)[None])


@pytest.mark.parametrize("mode, n", [("layer", 5), ("global", 1)])
def test_vector_env_steps_down_the_lookahead_loss(mode, n):
    seeds = [3, 4]

    def make():
        return gym.make_vec("L2T-v0", num_envs=len(seeds), vectorization_mode="vector_entry_point", action_mode=mode, **SMALL).unwrapped

    stepper, probe = make(), make()
    probe.reset(seed=seeds)
    phi0 = probe.phi.clone()
    for action in _actions(n):
        stepper.reset(seed=seeds)
        stepper.step(np.stack([action, action]))
        _check_descent(probe.unrolled_val_loss, phi0, stepper.phi - phi0)
