"""The L2T-DLN teacher and the baselines: gradients, the three stages, save/load, the CLI."""

from __future__ import annotations

import copy
import json

import gymnasium as gym
import numpy as np
import pytest
import torch
import torch.nn.functional as F
from torch.func import functional_call

import l2t_env  # noqa: F401
from l2t_agents import make_env, make_teacher, run_episode
from l2t_agents.l2t_dln import CoordinateLSTM, L2TDLNTeacher, preprocess_gradient

TINY = dict(teaching_steps=4, unroll_steps=3, batch_size=8, val_batch_size=16, student_kwargs={"hidden": [16]})


def tiny_env(**kwargs) -> gym.Env:
    return gym.make("L2T-v0", **{**TINY, "dtype": "float64", **kwargs})


def literal_dln(family, phi: torch.Tensor, logits: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """docs/method.md section 2.1's DLN read literally: every 1-vs-1 row through the bias-free MLP, mean of all rows."""
    h = family.one_vs_one(logits, y).reshape(-1, 4)
    weights = family.weights(phi)
    for w in weights[:-1]:
        h = F.leaky_relu(h @ w.T, 0.01)
    return (h @ weights[-1].T).mean()


def test_hypergradient_matches_central_finite_differences_in_float64():
    env = tiny_env()
    env.reset(seed=0)
    core = env.unwrapped
    grad = core.loss_gradient()
    direction = torch.randn(core.n_phi, generator=torch.Generator().manual_seed(1), dtype=torch.float64)
    eps = 1e-6
    plus = core.unrolled_val_loss(core.phi + eps * direction).detach()
    minus = core.unrolled_val_loss(core.phi - eps * direction).detach()
    fd = (plus - minus) / (2 * eps)
    analytic = grad @ direction
    assert analytic.abs() > 1e-6  # not a vacuous comparison
    assert torch.allclose(analytic, fd, rtol=1e-6, atol=1e-10), (analytic.item(), fd.item())
    for i in (0, 1234, 4999):  # single coordinates too, first, middle and last layer
        e = torch.zeros_like(direction)
        e[i] = 1.0
        fd_i = (core.unrolled_val_loss(core.phi + eps * e) - core.unrolled_val_loss(core.phi - eps * e)).detach() / (2 * eps)
        assert torch.allclose(grad[i], fd_i, rtol=1e-4, atol=1e-10), (grad[i].item(), fd_i.item())


def test_lstm_has_the_reference_size_and_preprocessing():
    assert sum(p.numel() for p in CoordinateLSTM().parameters()) == 84_236
    g = torch.tensor([1.0, -1e-3, 1e-6, -1e-6, 0.0], dtype=torch.float64)
    pre = preprocess_gradient(g, p=10.0)
    expected = torch.tensor(
        [[0.0, 1.0], [np.log(1e-3) / 10, -1.0], [-1.0, 1e-6 * np.exp(10)], [-1.0, -1e-6 * np.exp(10)], [-1.0, 0.0]],
        dtype=torch.float64,
    )
    assert torch.allclose(pre, expected, rtol=1e-12, atol=0)


def test_meta_gradient_reaches_and_changes_every_lstm_parameter():
    teacher = make_teacher("l2t-dln")
    env = make_env(teacher, **TINY)
    obs, _ = env.reset(seed=0)
    teacher.reset(env)
    before = [p.detach().clone() for p in teacher.lstm.parameters()]
    for iteration in range(2):
        # (on the first iteration the memory is zero, so the recurrent weights get no gradient yet)
        action = teacher.act(obs)
        assert env.action_space.contains(action.numpy())
        obs, _, _, _, info = env.step(action)
        assert info["reused_unroll"]  # stage 3's unroll is the commit: two unrolls per iteration
    for (name, p), p0 in zip(teacher.lstm.named_parameters(), before):
        assert p.grad is not None and torch.isfinite(p.grad).all() and p.grad.abs().sum() > 0, name
        assert not torch.equal(p.detach(), p0), name


def test_saved_and_reloaded_teacher_continues_identically(tmp_path):
    def start():
        env = make_env(make_teacher("l2t-dln"), **{**TINY, "teaching_steps": 6})
        obs, _ = env.reset(seed=3)
        teacher = make_teacher("l2t-dln", seed=5)
        teacher.reset(env)
        return env, teacher, obs

    env_a, a, obs_a = start()
    actions_a = []
    for _ in range(5):
        u = a.act(obs_a)
        actions_a.append(u.clone())
        obs_a, *_ = env_a.step(u)

    env_b, b, obs_b = start()
    for _ in range(2):
        obs_b, *_ = env_b.step(b.act(obs_b))
    b.save(tmp_path / "teacher.pt")
    c = L2TDLNTeacher(seed=99)  # different init: everything must come from the file
    c.load(tmp_path / "teacher.pt")
    c.attach(env_b)
    for i in range(2, 5):
        u = c.act(obs_b)
        assert torch.equal(u, actions_a[i]), i
        obs_b, *_ = env_b.step(u)
    for p, q in zip(a.lstm.parameters(), c.lstm.parameters()):
        assert torch.equal(p, q)
    assert a.optimizer.state_dict()["state"][0]["step"] == c.optimizer.state_dict()["state"][0]["step"]


def test_faithful_iteration_equals_a_slow_reference_in_float64():
    """One teacher iteration against docs/method.md section 2.4's three stages written out plainly."""
    env = tiny_env()
    obs, _ = env.reset(seed=2)
    core = env.unwrapped
    teacher = L2TDLNTeacher(seed=0)
    teacher.reset(env)
    ref_lstm = copy.deepcopy(teacher.lstm)
    ref_opt = torch.optim.Adam(ref_lstm.parameters(), lr=1e-3)
    module = copy.deepcopy(core.student.module)
    names = [n for n, _ in module.named_parameters()]
    theta0 = {n: p.detach().clone() for n, p in zip(names, core.params)}
    batches = core._next
    family = core.loss_family
    phi = core.phi.clone()

    def unroll(phi_):
        theta = {n: t.clone().requires_grad_(True) for n, t in theta0.items()}
        for k in range(core.config.unroll_steps):
            loss = literal_dln(family, phi_, functional_call(module, theta, (batches.x[k],)), batches.y[k])
            grads = torch.autograd.grad(loss, list(theta.values()), create_graph=True)
            theta = {n: t - core.config.lr * g for (n, t), g in zip(theta.items(), grads)}
        return F.cross_entropy(functional_call(module, theta, (batches.x_val,)), batches.y_val), theta

    # Stage 1: the hypergradient.
    phi_leaf = phi.clone().requires_grad_(True)
    val_loss, _ = unroll(phi_leaf)
    (g,) = torch.autograd.grad(val_loss, phi_leaf)
    assert torch.allclose(g, core.loss_grad, rtol=1e-9, atol=1e-14)
    # Stage 2: the LSTM's proposal from zero memory.
    state = ref_lstm.initial_state(len(g), g.device, g.dtype)
    u, _ = ref_lstm(preprocess_gradient(g), state)
    phi_new = phi - 1e-3 * u
    # Stage 3: unroll under phi'(psi), one Adam step on psi.
    val_loss_new, theta_k = unroll(phi_new)
    ref_opt.zero_grad()
    val_loss_new.backward()
    ref_opt.step()

    action = teacher.act(obs)
    assert torch.allclose(action, u.detach(), rtol=1e-12, atol=1e-15)
    for p, q in zip(teacher.lstm.parameters(), ref_lstm.parameters()):
        assert torch.allclose(p, q, rtol=1e-9, atol=1e-12)
    env.step(action)
    for p, (n, q) in zip(core.params, theta_k.items()):
        assert torch.allclose(p, q.detach(), rtol=1e-9, atol=1e-12), n
    assert torch.allclose(core.phi, phi_new.detach(), rtol=0, atol=1e-15)


def test_dln_fast_call_equals_the_literal_definition():
    env = tiny_env()
    env.reset(seed=0)
    core = env.unwrapped
    logits = torch.randn(8, 10, dtype=torch.float64, generator=torch.Generator().manual_seed(0))
    y = torch.arange(8) % 10
    assert torch.allclose(core.loss_family(core.phi, logits, y), literal_dln(core.loss_family, core.phi, logits, y), rtol=1e-12)


def _teacher_gradient_error(scale: float) -> float:
    env = tiny_env(action_scale=scale)
    obs, _ = env.reset(seed=1)
    core = env.unwrapped
    u = torch.linspace(-0.9, 0.9, core.n_phi, dtype=torch.float64)
    u_leaf = u.clone().requires_grad_(True)
    exact = torch.autograd.grad(core.unrolled_val_loss(core.phi_after(u_leaf)), u_leaf)[0]
    first_order = -scale * core.loss_grad
    return ((exact - first_order).norm() / exact.norm()).item()


def test_first_order_teacher_gradient_matches_exact_to_first_order():
    errors = [_teacher_gradient_error(s) for s in (1e-2, 1e-3, 1e-4, 1e-5)]
    assert errors[0] > errors[1] > errors[2] > errors[3], errors
    # first order: at and below the reference scale (1e-3) the relative error shrinks about
    # linearly with the action scale
    assert errors[1] / errors[2] > 5 and errors[2] / errors[3] > 5, errors
    assert errors[1] < 0.1


def test_first_order_teacher_runs_and_learns():
    env = make_env(make_teacher("l2t-dln"), **TINY)
    teacher = make_teacher("l2t-dln", first_order=True)
    before = [p.detach().clone() for p in teacher.lstm.parameters()]
    record = run_episode(env, teacher, seed=0)
    assert record.steps == TINY["teaching_steps"]
    assert all(not torch.equal(p, q) for p, q in zip(teacher.lstm.parameters(), before))


def test_frozen_teacher_does_not_learn():
    env = make_env(make_teacher("l2t-dln"), **TINY)
    teacher = make_teacher("l2t-dln")
    teacher.learning = False
    before = [p.detach().clone() for p in teacher.lstm.parameters()]
    run_episode(env, teacher, seed=0)
    assert all(torch.equal(p, q) for p, q in zip(teacher.lstm.parameters(), before))


def test_student_state_inputs_option():
    env = make_env(make_teacher("l2t-dln"), **TINY)
    teacher = make_teacher("l2t-dln", student_state_inputs=True, memory_truncation=2)
    assert teacher.lstm.cells[0].input_size == 10
    record = run_episode(env, teacher, seed=0)
    assert record.steps == TINY["teaching_steps"] and not record.diverged


def test_baselines_do_what_they_say():
    ce = make_teacher("ce")
    env = make_env(ce, **TINY)
    assert env.unwrapped.loss_family.name == "ce" and env.action_space.shape == (0,)
    fixed = make_teacher("fixed")
    env = make_env(fixed, **TINY)
    obs, _ = env.reset(seed=0)
    fixed.reset(env)
    phi0 = env.unwrapped.phi.clone()
    env.step(fixed.act(obs))
    assert torch.equal(env.unwrapped.phi, phi0)

    hyper = make_teacher("hypergrad", lr=0.5)
    env = make_env(hyper, **TINY)
    obs, _ = env.reset(seed=0)
    hyper.reset(env)
    phi0 = env.unwrapped.phi.clone()
    g = torch.as_tensor(obs["loss_grad"])
    env.step(hyper.act(obs))
    expected = phi0 - 1e-3 * torch.clamp(0.5 * g / 1e-3, -1, 1)
    assert torch.allclose(env.unwrapped.phi, expected, atol=1e-7)

    actions = []
    for _ in range(2):
        rnd = make_teacher("random", seed=3)
        env = make_env(rnd, **TINY)
        obs, _ = env.reset(seed=4)
        rnd.reset(env)
        actions.append(rnd.act(obs))
    assert np.array_equal(*actions) and env.action_space.contains(actions[0])
    with pytest.raises(ValueError, match="unknown teacher 'nope'.*l2t-dln"):
        make_teacher("nope")


def test_make_env_refuses_a_contradicting_argument():
    with pytest.raises(ValueError, match="needs loss='ce'"):
        make_env(make_teacher("ce"), loss="dln")


def test_cli_teach_writes_a_record_and_round_trips_a_checkpoint(tmp_path):
    from l2t_bench.cli import main

    out = tmp_path / "out"
    ckpt = tmp_path / "t.pt"
    args = ["teach", "--teacher", "l2t-dln", "--seed", "1", "--out", str(out), "--quiet"]
    args += ["--set", "teaching_steps=2", "--set", "unroll_steps=3", "--save", str(ckpt)]
    assert main(args) == 0
    (record_file,) = out.glob("*.json")
    record = json.loads(record_file.read_text())
    assert record["settings"]["seed"] == 1 and record["task"]["teaching_steps"] == 2
    assert len(record["record"]["curves"]["val_acc"]) == 3 and record["record"]["wall_time"] > 0
    assert main(["teach", "--teacher", "l2t-dln", "--load", str(ckpt), "--frozen", "--out", str(out), "--quiet", "--set", "teaching_steps=1"]) == 0
    assert main(["teach", "--teacher", "nope", "--out", str(out)]) == 2


def test_l2t_dln_refuses_a_short_lookahead():
    env = gym.make("L2T-v0", **TINY, lookahead=1)
    env.reset(seed=0)
    with pytest.raises(ValueError, match="full K-step look-ahead"):
        make_teacher("l2t-dln").reset(env)
