"""Teachers on a batch: N stacked teachers on a vector env act as N separate ones on single envs."""

from __future__ import annotations

import gymnasium as gym
import numpy as np
import pytest
import torch

import l2t_env  # noqa: F401  (registers L2T-v0)
from l2t_agents import make_teacher
from l2t_agents.evaluation import make_env, run_episode, run_episodes

KW = dict(task="digits-mlp", unroll_steps=2, teaching_steps=3, device="cpu")


def make_vec(n: int, teacher, **kwargs):
    return gym.make_vec("L2T-v0", num_envs=n, vectorization_mode="vector_entry_point", **{**KW, **kwargs, **teacher.env_kwargs})


@pytest.mark.parametrize("name", ["ce", "fixed", "random", "hypergrad"])
def test_run_episodes_matches_run_episode_per_seed(name):
    teacher = make_teacher(name)
    records = run_episodes(make_vec(2, teacher), teacher, seed=4)
    assert [r.seed for r in records] == [4, 5]
    for record in records:
        single_teacher = make_teacher(name)
        single = run_episode(make_env(single_teacher, **KW), single_teacher, seed=record.seed)
        assert record.steps == single.steps == 3 and record.student_steps == single.student_steps
        for key, value in single.final.items():
            assert record.final[key] == pytest.approx(value, rel=1e-4, abs=1e-5), key
        np.testing.assert_allclose(record.curves["reward"], single.curves["reward"], rtol=1e-3, atol=1e-5)


@pytest.mark.parametrize("config", [{}, {"clip_meta_grad": 1e-3, "student_state_inputs": True}])
def test_stacked_l2t_dln_teachers_equal_separate_teachers(config):
    cfg = dict(hidden=8, layers=2, lr=1e-2, **config)
    stacked = make_teacher("l2t-dln", **cfg)
    venv = make_vec(2, stacked)
    obs, _ = venv.reset(seed=0)
    stacked.reset(venv)
    separate = [make_teacher("l2t-dln", **cfg) for _ in range(2)]
    envs = [make_env(t, **KW) for t in separate]
    single_obs = []
    for i, (teacher, env) in enumerate(zip(separate, envs)):
        single_obs.append(env.reset(seed=i)[0])
        teacher.reset(env)
    for step in range(3):
        u = stacked.act(obs)
        us = [teacher.act(o) for teacher, o in zip(separate, single_obs)]
        np.testing.assert_allclose(u.numpy(), torch.stack(us).numpy(), rtol=1e-4, atol=1e-6, err_msg=f"step {step} actions")
        out = venv.step(u)
        stacked.observe(*out)
        obs = out[0]
        single_obs = []
        for teacher, env, ui in zip(separate, envs, us):
            single_out = env.step(ui)
            teacher.observe(*single_out)
            single_obs.append(single_out[0])
    assert stacked.stack is not None
    rows = stacked.stack.parameters()
    for i, teacher in enumerate(separate):
        for row, own in zip(rows, teacher.lstm.parameters()):
            np.testing.assert_allclose(row[i].detach().numpy(), own.detach().numpy(), rtol=1e-4, atol=1e-6)
    # the teachers learnt, and differently from each other (different students)
    assert not torch.equal(rows[0][0], rows[0][1])
    assert not torch.equal(rows[0][0], stacked.lstm.cells[0].weight_ih)


def test_shared_l2t_dln_teacher_learns_from_all_students():
    cfg = dict(hidden=8, layers=2, lr=1e-2, shared=True)
    one = make_teacher("l2t-dln", **cfg)
    single = make_teacher("l2t-dln", **{k: v for k, v in cfg.items() if k != "shared"})
    run_episodes(make_vec(1, one), one, seed=3)  # one student: the shared teacher is the single one
    run_episode(make_env(single, **KW), single, seed=3)
    for a, b in zip(one.lstm.parameters(), single.lstm.parameters()):
        np.testing.assert_allclose(a.detach().numpy(), b.detach().numpy(), rtol=1e-4, atol=1e-6)
    shared = make_teacher("l2t-dln", **cfg)
    records = run_episodes(make_vec(2, shared), shared, seed=3)
    assert shared.stack is None and len(records) == 2
    moved = [not torch.allclose(a, b) for a, b in zip(shared.lstm.parameters(), one.lstm.parameters())]
    assert any(moved)  # two students' gradients, not one


def test_stacked_teacher_state_round_trips(tmp_path):
    teacher = make_teacher("l2t-dln", hidden=8, layers=2)
    run_episodes(make_vec(2, teacher), teacher, seed=0)
    teacher.save(tmp_path / "t.pt")
    other = make_teacher("l2t-dln", hidden=8, layers=2)
    other.load(tmp_path / "t.pt")
    for a, b in zip(teacher.stack.parameters(), other.stack.parameters()):
        assert torch.equal(a.detach(), b.detach())
