"""``checkpoint_unroll=True``: the step-checkpointed look-ahead gives the graph unroll's numbers."""

from __future__ import annotations

import gymnasium as gym
import pytest
import torch

import l2t_env  # noqa: F401
from l2t_agents.l2t_dln import L2TDLNTeacher
from l2t_env.tasks import RawData, TaskConfig

TINY = dict(teaching_steps=3, unroll_steps=3, batch_size=8, val_batch_size=16, dtype="float64")
TASKS = {
    "digits-mlp": dict(student_kwargs={"hidden": [16]}),
    # BatchNorm in train mode: the recomputed steps must see the running statistics they saw
    "random-cifar10-resnet8": dict(batch_size=4, val_batch_size=8, augment="crop-flip"),
}


def pair(task: str, **kwargs) -> tuple[gym.Env, gym.Env]:
    make = lambda ck: gym.make("L2T-v0", task=task, checkpoint_unroll=ck, **{**TINY, **TASKS.get(task, {}), **kwargs})  # noqa: E731
    return make(False), make(True)


@pytest.mark.parametrize("task", sorted(TASKS))
def test_checkpointed_hypergradient_and_teacher_gradient_equal_the_graph_unroll(task):
    graph, ckpt = pair(task)
    graph.reset(seed=3)
    ckpt.reset(seed=3)
    g, c = graph.unwrapped, ckpt.unwrapped
    assert torch.allclose(c.loss_grad, g.loss_grad, rtol=1e-10, atol=1e-15) and g.loss_grad.abs().sum() > 0
    results = []
    for core in (g, c):
        u = torch.linspace(-1, 1, core.n_phi, dtype=torch.float64).requires_grad_(True)
        val_loss = core.unrolled_val_loss(core.phi_after(u))
        (grad_u,) = torch.autograd.grad(val_loss, u)
        results.append((val_loss.detach(), grad_u, [p.clone() for p in core._unroll.params], [b.clone() for b in core._unroll.buffers]))
    (lg, gg, pg, bg), (lc, gc, pc, bc) = results
    assert torch.equal(lg, lc)  # the forward is the same arithmetic
    assert torch.allclose(gc, gg, rtol=1e-10, atol=1e-15)
    assert all(torch.equal(p, q) for p, q in zip(pg, pc)) and all(torch.equal(p, q) for p, q in zip(bg, bc))


def test_checkpointed_faithful_teacher_follows_the_same_trajectory():
    envs = pair("digits-mlp")
    teachers = [L2TDLNTeacher(seed=0), L2TDLNTeacher(seed=0)]
    obs = []
    for env, teacher in zip(envs, teachers):
        obs.append(env.reset(seed=1)[0])
        teacher.reset(env)
    for _ in range(3):
        steps = []
        for i, (env, teacher) in enumerate(zip(envs, teachers)):
            out = env.step(teacher.act(obs[i]))
            teacher.observe(*out[:4], out[4])
            obs[i] = out[0]
            steps.append(out)
        assert all(s[4]["reused_unroll"] for s in steps)  # the commit reuses the checkpointed unroll too
        assert steps[0][1] == pytest.approx(steps[1][1], rel=1e-9, abs=1e-12)
    for p, q in zip(*(t.lstm.parameters() for t in teachers)):
        assert torch.allclose(p, q, rtol=1e-8, atol=1e-12)
    assert torch.allclose(envs[0].unwrapped.phi, envs[1].unwrapped.phi, rtol=0, atol=1e-12)


def test_checkpointed_recompute_replays_the_random_state_of_each_step():
    """A student with dropout: the backward must recompute the same masks as the forward drew."""
    gen = torch.Generator().manual_seed(0)
    x = torch.randn(300, 6, generator=gen)
    y = (x[:, 0] + x[:, 1] > 0).long()
    data = RawData.from_tensors(x[:240], y[:240], x[240:], y[240:])
    grads = []
    for ck in (False, True):
        student = torch.nn.Sequential(torch.nn.Linear(6, 32), torch.nn.ReLU(), torch.nn.Dropout(0.5), torch.nn.Linear(32, 2))
        task = TaskConfig(name="dropout", dataset=data, student=student, teaching_steps=2, unroll_steps=4, batch_size=16)
        env = gym.make("L2T-v0", task=task, checkpoint_unroll=ck, dtype="float64")
        torch.manual_seed(7)  # dropout draws from the global generator
        env.reset(seed=0)
        rng_after = torch.get_rng_state()
        grads.append(env.unwrapped.loss_grad)
        if ck:  # the recompute in backward leaves the global random stream where the forward left it
            torch.manual_seed(7)
            env.reset(seed=0)
            assert torch.equal(torch.get_rng_state(), rng_after)
    assert grads[0].abs().sum() > 0
    assert torch.allclose(grads[1], grads[0], rtol=1e-10, atol=1e-15)


def test_checkpointed_unroll_is_first_order_only_and_validated():
    _, ckpt = pair("digits-mlp")
    ckpt.reset(seed=0)
    core = ckpt.unwrapped
    phi = core.phi.requires_grad_(True)
    (grad,) = torch.autograd.grad(core.unrolled_val_loss(phi), phi, create_graph=True)
    assert not grad.requires_grad  # once_differentiable: no silent wrong second derivative
    with pytest.raises(TypeError, match="checkpoint_unroll='yes'"):
        gym.make("L2T-v0", checkpoint_unroll="yes")


def test_checkpointed_hypergradient_with_batchnorm_matches_finite_differences():
    """Against an independent expectation, not only the graph unroll: the checkpointed look-ahead's
    gradient along a direction equals the central difference of the look-ahead loss (float64)."""
    _, ckpt = pair("random-cifar10-resnet8")
    ckpt.reset(seed=3)
    core = ckpt.unwrapped
    gen = torch.Generator().manual_seed(0)
    v = torch.randn(core.n_phi, dtype=torch.float64, generator=gen)
    # a point near the DLN's initial phi, not at it: the loss is only one-sided smooth there along v
    phi0 = core.phi.detach() + 0.01 * torch.randn(core.n_phi, dtype=torch.float64, generator=gen)
    phi = phi0.clone().requires_grad_(True)
    (grad,) = torch.autograd.grad(core.unrolled_val_loss(phi), phi)
    slope = float(grad @ v)
    eps = 1e-7
    up, down = (float(core.unrolled_val_loss(phi0 + s * eps * v).detach()) for s in (1, -1))
    assert abs(slope) > 1e-3
    assert (up - down) / (2 * eps) == pytest.approx(slope, rel=1e-5)
