"""The L2T-DLF and L2T-DFM teachers: gradients against finite differences, selection, save/load."""

from __future__ import annotations

import math

import gymnasium as gym
import numpy as np
import pytest
import torch
import torch.nn.functional as F

import l2t_env  # noqa: F401
from l2t_agents import available_teachers, make_env, make_teacher, run_episode
from l2t_agents.l2t_dfm import STATISTICS, L2TDFMTeacher, student_statistics
from l2t_agents.l2t_dlf import L2TDLFTeacher, smoothed_error

TINY = dict(teaching_steps=6, unroll_steps=3, batch_size=8, val_batch_size=16, student_kwargs={"hidden": [16]})


def tiny(teacher, **kwargs) -> gym.Env:
    return make_env(teacher, "digits-mlp", **{**TINY, "dtype": "float64", "device": "cpu", **kwargs})


def test_registered_with_their_env_requirements():
    assert {"l2t-dlf", "l2t-dfm"} <= set(available_teachers())
    assert make_teacher("l2t-dlf").env_kwargs == {"loss": "dlf", "lookahead": "off", "action_mode": "set"}
    assert make_teacher("l2t-dfm").env_kwargs == {"loss": "dfm", "lookahead": "off", "action_mode": "set"}


def test_smoothed_error_is_the_papers_measure():
    z = torch.tensor([[2.0, 0.0, 0.0], [0.0, 1.0, 0.0]], dtype=torch.float64)
    y = torch.tensor([0, 0])
    p = torch.softmax(z, 1)
    expected = (0.0 + (2 * torch.sigmoid(50 * (p[1, 1] - p[1, 0])) - 1)) / 2  # the correct sample scores 0
    assert torch.allclose(smoothed_error(z, y), expected)
    assert smoothed_error(z, y, k=1e4) == pytest.approx(0.5, abs=1e-6)  # k -> inf: the 0-1 error


def test_dlf_teacher_starts_at_the_ce_surrogate():
    teacher = L2TDLFTeacher()
    env = tiny(teacher)
    obs, _ = env.reset(seed=0)
    teacher.reset(env)
    phi = teacher.parameters_for(obs).detach()
    assert torch.equal(phi, env.unwrapped.loss_family.init_params(0, torch.device("cpu"), torch.float64))


def _started_off_zero(teacher):
    """A tiny float64 env reset with seed 0, the teacher started on it and its weights moved off
    the zero head (so that every weight has a gradient): env, observation, core env, parameters,
    and the generator that moved them (the test draws on from it)."""
    env = tiny(teacher)
    obs, _ = env.reset(seed=0)
    teacher.reset(env)
    gen = torch.Generator().manual_seed(0)
    with torch.no_grad():
        for p in teacher.net.parameters():
            p.add_(0.3 * torch.randn(p.shape, generator=gen, dtype=p.dtype))
    return env, obs, env.unwrapped, list(teacher.net.parameters()), gen


def test_dlf_teacher_gradient_matches_central_finite_differences_in_float64():
    teacher = L2TDLFTeacher(hidden=8)
    env, obs, core, params, gen = _started_off_zero(teacher)

    def measure() -> torch.Tensor:
        return core.unrolled_val_loss(teacher.parameters_for(obs), measure=teacher.measure)

    grads = torch.autograd.grad(measure(), params)
    direction = [torch.randn(p.shape, generator=gen, dtype=p.dtype) for p in params]
    analytic = sum((g * d).sum() for g, d in zip(grads, direction))
    eps = 1e-6
    values = []
    for sign in (1.0, -1.0):
        with torch.no_grad():
            for p, d in zip(params, direction):
                p.add_(sign * eps * d)
        values.append(measure().item())  # the unroll needs autograd on, for the student's gradients
        with torch.no_grad():
            for p, d in zip(params, direction):
                p.sub_(sign * eps * d)
    fd = (values[0] - values[1]) / (2 * eps)
    assert abs(analytic.item()) > 1e-6, analytic  # not a vacuous comparison
    assert analytic.item() == pytest.approx(fd, rel=1e-5, abs=1e-10)


def test_dlf_learning_step_descends_its_measure():
    teacher = L2TDLFTeacher(lr=1e-3, measure="ce")
    env = tiny(teacher)
    obs, _ = env.reset(seed=1)
    teacher.reset(env)
    core = env.unwrapped
    before = [p.clone() for p in teacher.net.parameters()]
    m0 = core.unrolled_val_loss(teacher.parameters_for(obs), measure=teacher.measure).item()
    teacher.act(obs)  # learns from exactly this look-ahead, then returns phi
    assert teacher.iterations == 1 and teacher.last_value == pytest.approx(m0)
    assert any(not torch.equal(a, b) for a, b in zip(before, teacher.net.parameters()))
    m1 = core.unrolled_val_loss(teacher.parameters_for(obs), measure=teacher.measure).item()
    assert m1 < m0


def test_dfm_statistics_are_what_they_say():
    z = torch.tensor([[0.0, 0.0], [3.0, 0.0], [0.0, 3.0]], dtype=torch.float64)
    y = torch.tensor([0, 0, 0])
    obs = {"student": np.array([0.5, 1.0, 0.5, 1.5, 0.25, 0.0, math.e - 1, 0.1], dtype=np.float32)}
    s = dict(zip(STATISTICS, student_statistics(z, y, obs).tolist()))
    loss = F.cross_entropy(z, y, reduction="none")
    p = torch.softmax(z, 1)
    margin = p[:, 0] - p[:, 1]
    assert s["loss_mean"] == pytest.approx(loss.mean().item()) and s["loss_std"] == pytest.approx(loss.std(unbiased=False).item())
    assert s["margin_mean"] == pytest.approx(margin.mean().item()) and s["error_rate"] == pytest.approx(1 / 3)
    entropy = -(p * p.log()).sum(1).mean().item() / math.log(2)
    assert s["entropy"] == pytest.approx(entropy)
    assert s["loss_skew"] > 0  # one large loss among small ones
    assert s["progress"] == 0.5 and s["val_train_gap"] == pytest.approx(0.5) and s["log_grad_norm"] == pytest.approx(1.0, rel=1e-6)


def dfm_and_first_gradient(steps=None, **config):
    """A fresh DFM teacher on a tiny env, and d(val CE)/dw at its first (uniform) weights, taken on
    an identical twin env through a ``steps``-step look-ahead."""
    teacher = L2TDFMTeacher(**config)
    env = tiny(teacher)
    obs, _ = env.reset(seed=0)
    teacher.reset(env)
    twin = tiny(teacher)
    twin.reset(seed=0)
    w0 = torch.full((5,), 0.2, dtype=torch.float64, requires_grad=True)
    (g,) = torch.autograd.grad(twin.unwrapped.unrolled_val_loss(w0, steps=steps), w0)
    return teacher, env, obs, w0, g


def test_dfm_confidence_is_the_ema_of_gradient_agreement_and_selects():
    teacher, env, obs, w0, g = dfm_and_first_gradient(confidence_decay=0.9)
    w = teacher.act(obs)
    assert torch.allclose(w, w0.detach())  # zero head: uniform over the kept (all) metrics
    assert torch.allclose(teacher.confidence, 0.1 * (-g / g.abs().max()))
    # selection: metrics below the threshold get zero weight, at least min_keep stay
    teacher.confidence = torch.tensor([0.5, -0.1, 0.2, -0.3, -0.2], dtype=torch.float64)
    teacher.learning = False
    w = teacher.act(obs)
    assert (w[[1, 3, 4]] == 0).all() and w[[0, 2]].sum().item() == pytest.approx(1.0)
    teacher.confidence = -torch.tensor([0.5, 0.1, 0.2, 0.3, 0.2], dtype=torch.float64)
    w = teacher.act(obs)
    assert w.tolist() == [0.0, 1.0, 0.0, 0.0, 0.0]  # only the most confident one
    teacher.config.selection = False
    assert (teacher.act(obs) > 0).all()


def test_dfm_teacher_learns_online_and_frozen_does_not():
    teacher = L2TDFMTeacher()
    env = tiny(teacher)
    record = run_episode(env, teacher, seed=0)
    assert record.steps == TINY["teaching_steps"] and teacher.iterations == TINY["teaching_steps"]
    assert teacher.net.head.weight.abs().sum() > 0
    frozen = L2TDFMTeacher()
    frozen.load_state_dict(teacher.state_dict())
    frozen.learning = False
    before = {k: v.clone() for k, v in frozen.net.state_dict().items()}
    confidence = frozen.confidence.clone()
    run_episode(tiny(frozen), frozen, seed=1)
    assert all(torch.equal(before[k], v) for k, v in frozen.net.state_dict().items())
    assert torch.equal(confidence, frozen.confidence) and frozen.iterations == teacher.iterations


@pytest.mark.parametrize("name", ["l2t-dlf", "l2t-dfm"])
def test_saved_teacher_reloads_and_continues_identically(name, tmp_path):
    teacher = make_teacher(name, seed=3)
    env = tiny(teacher)
    obs, _ = env.reset(seed=5)
    teacher.reset(env)
    committed = []
    for _ in range(2):
        phi = teacher.act(obs)
        committed.append(phi)
        obs, *_ = env.step(phi)
    teacher.save(tmp_path / "t.pt")
    ahead = []
    for _ in range(2):
        phi = teacher.act(obs)
        ahead.append(phi)
        obs, *_ = env.step(phi)
    # a fresh env replays the committed phis, a fresh teacher loads the checkpoint and continues
    clone = make_teacher(name)
    env2 = tiny(clone)
    obs2, _ = env2.reset(seed=5)
    for phi in committed:
        obs2, *_ = env2.step(phi)
    clone.load(tmp_path / "t.pt")
    clone.attach(env2)
    for phi in ahead:
        mine = clone.act(obs2)
        assert torch.equal(mine, phi)
        obs2, *_ = env2.step(mine)
    assert clone.iterations == teacher.iterations


@pytest.mark.parametrize("name, family", [("l2t-dlf", "dlf"), ("l2t-dfm", "dfm")])
def test_wrong_env_raises_naming_what_is_needed(name, family):
    teacher = make_teacher(name)
    env = gym.make("L2T-v0", **TINY, loss="dln", lookahead="off")
    env.reset(seed=0)
    with pytest.raises(ValueError, match=rf"needs loss='{family}' and action_mode='set'; got loss='dln', action_mode='full'"):
        teacher.reset(env)
    env = gym.make("L2T-v0", **TINY, loss=family, lookahead="off")
    env.reset(seed=0)
    with pytest.raises(ValueError, match=r"action_mode='set'"):
        teacher.reset(env)
    with pytest.raises(ValueError, match=r"needs loss="):
        make_env(teacher, "digits-mlp", loss="ce")


def test_bad_options_raise():
    with pytest.raises(ValueError, match=r"measure='acc', expected one of \['smoothed_error', 'ce'\]"):
        L2TDLFTeacher(measure="acc")
    with pytest.raises(ValueError, match=r"confidence_decay=1.0, expected in \[0, 1\)"):
        L2TDFMTeacher(confidence_decay=1.0)
    with pytest.raises(ValueError, match=r"lr=0, expected > 0"):
        L2TDFMTeacher(lr=0)


def test_dfm_shorter_horizon_learns_through_fewer_steps_and_commits_all_k():
    teacher, env, obs, _, g = dfm_and_first_gradient(steps=1, horizon=1)
    w = teacher.act(obs)
    assert torch.allclose(teacher.confidence, 0.1 * (-g / g.abs().max()))
    _, _, _, _, info = env.step(w)
    assert not info["reused_unroll"] and info["student_steps"] == TINY["unroll_steps"]
    with pytest.raises(ValueError, match=r"horizon=0, expected None \(all K steps\) or >= 1"):
        L2TDFMTeacher(horizon=0)


def test_dfm_teacher_gradient_matches_central_finite_differences_in_float64():
    """The gradient the L2T-DFM teacher's update uses (the look-ahead measure, back through the
    metric weights to the GRU and head), against central differences of that measure."""
    teacher = L2TDFMTeacher()
    env, obs, core, params, gen = _started_off_zero(teacher)
    hidden = teacher.hidden.clone()
    horizon = teacher.config.horizon
    steps = None if horizon is None else min(int(horizon), core.config.unroll_steps)
    teacher.optimizer.step = lambda *args, **kwargs: None  # keep the weights: read the gradient the update uses
    teacher.act(obs)
    grads = [p.grad.clone() for p in params]

    def measure() -> float:
        teacher.hidden = hidden.clone()  # weights_for advances the memory: start each from the same
        return core.unrolled_val_loss(teacher.weights_for(obs), steps=steps).item()

    direction = [torch.randn(p.shape, generator=gen, dtype=p.dtype) for p in params]
    analytic = sum((g * d).sum() for g, d in zip(grads, direction)).item()
    eps = 1e-6
    values = []
    for sign in (1.0, -1.0):
        with torch.no_grad():
            for p, d in zip(params, direction):
                p.add_(sign * eps * d)
        values.append(measure())
        with torch.no_grad():
            for p, d in zip(params, direction):
                p.sub_(sign * eps * d)
    fd = (values[0] - values[1]) / (2 * eps)
    assert abs(analytic) > 1e-8, analytic  # not a vacuous comparison
    assert analytic == pytest.approx(fd, rel=1e-5, abs=1e-10)
# ------------------------------------------------------------------ l2t-dlf: doing no harm to its start
def _dlf_start(env) -> torch.Tensor:
    core = env.unwrapped
    return core.loss_family.init_params(0, core.device, core.dtype)


def _flat_measure(logits: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
    """A dev measure with zero gradient everywhere (the student's logits times 0)."""
    return (logits * 0.0).sum()


@pytest.mark.parametrize("options", [{}, {"optimizer": "adam", "proximity": 0.0}, {"max_drift": 0.1}])
def test_dlf_teacher_with_zero_hypergradient_keeps_phi_at_its_start(options):
    teacher = L2TDLFTeacher(**options)
    teacher.measure = _flat_measure  # type: ignore[method-assign]
    env = tiny(teacher)
    committed = []
    run_episode(env, teacher, 0, on_step=lambda t, info: committed.append(env.unwrapped.phi.clone()))
    assert teacher.iterations == TINY["teaching_steps"]
    for phi in committed:
        assert torch.equal(phi, _dlf_start(env))


def test_dlf_proximity_pulls_phi_back_to_its_start():
    drifts = {}
    for proximity in (0.0, 1.0):
        teacher = L2TDLFTeacher(optimizer="sgd", lr=1e-2, proximity=proximity)
        teacher.measure = _flat_measure  # type: ignore[method-assign]
        env = tiny(teacher)
        obs, _ = env.reset(seed=0)
        teacher.reset(env)
        with torch.no_grad():
            teacher.net.head.bias.fill_(0.1)  # start the episode away from [I, 0]
        series = []
        for _ in range(4):
            phi = teacher.act(obs)
            series.append((phi - _dlf_start(env)).abs().max().item())
            obs, *_ = env.step(phi)
        drifts[proximity] = series
    assert drifts[0.0] == pytest.approx([0.1] * 4)  # no measure gradient, no pull: it stays where it is
    assert all(b < a for a, b in zip(drifts[1.0], drifts[1.0][1:]))  # the pull shrinks the drift every step
    assert drifts[1.0][-1] < 0.1


def test_dlf_proximity_gradient_is_that_of_the_penalty():
    teacher = L2TDLFTeacher(proximity=0.7)
    env = tiny(teacher)
    env.reset(seed=0)
    teacher.reset(env)
    phi = _dlf_start(env) + torch.linspace(-1, 1, env.unwrapped.n_phi, dtype=torch.float64)
    leaf = phi.clone().requires_grad_(True)
    (expected,) = torch.autograd.grad(0.7 * (leaf - _dlf_start(env)).pow(2).sum(), leaf)
    g = torch.full_like(phi, 0.25)
    assert torch.allclose(teacher.phi_gradient(phi, g), g + expected)


def test_dlf_max_drift_bounds_every_committed_phi():
    teacher = L2TDLFTeacher(optimizer="adam", lr=0.5, proximity=0.0, max_drift=0.03)
    env = tiny(teacher)
    committed = []
    run_episode(env, teacher, 0, on_step=lambda t, info: committed.append(env.unwrapped.phi.clone()))
    drift = torch.stack([(phi - _dlf_start(env)).abs().max() for phi in committed])
    assert drift.max() <= 0.03 + 1e-12  # (1 + d) - 1 rounds in the last bit
    assert drift.max() > 0.01  # it did move: the bound is what held it


def test_dlf_old_behaviour_is_reachable():
    teacher = L2TDLFTeacher(optimizer="adam", lr=1e-3, proximity=0.0)
    env = tiny(teacher)
    env.reset(seed=0)
    teacher.reset(env)
    assert isinstance(teacher.optimizer, torch.optim.Adam)
    teacher = L2TDLFTeacher()
    teacher.reset(tiny(teacher))
    assert isinstance(teacher.optimizer, torch.optim.SGD) and teacher.config.proximity == 1.0


@pytest.mark.parametrize(
    "options, message",
    [
        ({"optimizer": "rmsprop"}, r"optimizer='rmsprop', expected one of \['adam', 'sgd'\]"),
        ({"proximity": -1.0}, r"proximity=-1.0, expected a finite number >= 0"),
        ({"proximity": float("nan")}, r"proximity=nan, expected a finite number >= 0"),
        ({"max_drift": 0.0}, r"max_drift=0.0, expected None or a finite number > 0"),
        ({"max_drift": "big"}, r"max_drift='big', expected None or a finite number > 0"),
    ],
)
def test_dlf_bad_no_harm_options_raise(options, message):
    with pytest.raises(ValueError, match=message):
        L2TDLFTeacher(**options)
