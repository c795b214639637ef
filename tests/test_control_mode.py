"""``action_mode="control"``: an action in [-1, 1] sets a loss's few hyper-parameters within their
control ranges. Checked against values written here (the ranges' ends and midpoints), against
``"set"`` mode given the mapped phi (the same student trajectory), and sub-env by sub-env against
the vector env."""

from __future__ import annotations

import gymnasium as gym
import numpy as np
import pytest

import l2t_env  # noqa: F401  (registers L2T-v0)
from l2t_env.robust_losses import ROBUST_LOSSES

TINY = dict(task="digits-mlp", teaching_steps=3, unroll_steps=2, batch_size=16, val_batch_size=32,
            student_kwargs={"hidden": [16]}, lookahead="off", device="cpu")
CONTROLLED = [name for name, spec in ROBUST_LOSSES.items() if spec.params]


@pytest.mark.parametrize("loss", CONTROLLED)
def test_control_ranges_lie_inside_the_valid_bounds(loss):
    spec = ROBUST_LOSSES[loss]
    assert list(spec.control) == list(spec.params), "one control range per hyper-parameter, in phi's order"
    for key, (lo, hi) in spec.control.items():
        b_lo, b_hi = spec.bounds[key]
        assert np.isfinite([lo, hi]).all() and lo < hi
        assert (b_lo is None or lo >= b_lo) and (b_hi is None or hi <= b_hi), f"{loss}.{key}: control [{lo}, {hi}] leaves {spec.bounds[key]}"


@pytest.mark.parametrize(
    "loss, kwargs, low, high",
    [("gce", {}, [0.01], [1.0]), ("sce", {}, [0.0, 0.0], [1.0, 2.0]), ("ls", {}, [0.0], [0.5]),
     ("dfm", {"metrics": ["ce", "gce", "rce"]}, [0.0] * 3, [1.0] * 3)],
)
def test_actions_map_onto_the_control_range(loss, kwargs, low, high):
    env = gym.make("L2T-v0", loss=loss, loss_kwargs=kwargs, action_mode="control", **TINY)
    low, high = np.array(low), np.array(high)
    assert env.action_space.shape == low.shape and env.action_space.low.min() == -1 and env.action_space.high.max() == 1
    obs, _ = env.reset(seed=0)
    start = obs["loss_params"].copy()
    for action, expected in ((-np.ones_like(low), low), (np.ones_like(low), high), (np.zeros_like(low), (low + high) / 2)):
        obs, *_ = env.step(action.astype(np.float32))
        np.testing.assert_allclose(obs["loss_params"], expected, rtol=0, atol=1e-6)
    obs, _ = env.reset(seed=0)
    np.testing.assert_array_equal(obs["loss_params"], start)  # each episode starts at the family's start


def test_control_trains_the_student_as_set_mode_with_the_mapped_phi():
    control = gym.make("L2T-v0", loss="sce", action_mode="control", **TINY)
    setter = gym.make("L2T-v0", loss="sce", action_mode="set", **TINY)
    control.reset(seed=5)
    setter.reset(seed=5)
    rng = np.random.default_rng(0)
    for _ in range(3):
        a = rng.uniform(-1, 1, 2).astype(np.float32)
        phi = np.array([0.0, 0.0]) + (a + 1) / 2 * np.array([1.0, 2.0])  # sce: alpha in [0, 1], beta in [0, 2]
        oc, rc, *_ = control.step(a)
        os_, rs, *_ = setter.step(phi.astype(np.float32))
        np.testing.assert_allclose(oc["loss_params"], os_["loss_params"], rtol=1e-6)
        np.testing.assert_allclose(oc["student"], os_["student"], rtol=1e-5)
        assert rc == pytest.approx(rs, rel=1e-5, abs=1e-7)


def test_vector_env_follows_single_envs_in_control_mode():
    kwargs = dict(loss="gce", action_mode="control", **TINY)
    venv = gym.make_vec("L2T-v0", num_envs=2, vectorization_mode="vector_entry_point", **kwargs)
    singles = [gym.make("L2T-v0", **kwargs) for _ in range(2)]
    vobs, _ = venv.reset(seed=[7, 8])
    for env, seed in zip(singles, (7, 8)):
        env.reset(seed=seed)
    for a in (np.array([[-0.5], [0.9]], np.float32), np.array([[1.0], [-1.0]], np.float32)):
        vobs, vr, *_ = venv.step(a)
        for i, env in enumerate(singles):
            obs, r, *_ = env.step(a[i])
            np.testing.assert_allclose(vobs["loss_params"][i], obs["loss_params"], rtol=1e-6)
            np.testing.assert_allclose(vobs["student"][i], obs["student"], rtol=1e-4, atol=1e-6)
            assert vr[i] == pytest.approx(r, rel=1e-4, abs=1e-6)


def test_control_mode_refuses_a_family_without_ranges_and_bad_actions_leave_the_env_usable():
    with pytest.raises(ValueError, match=r"action_mode='control'.*'dln'.*5000 parameters.*gce"):
        gym.make("L2T-v0", action_mode="control", **TINY)
    env = gym.make("L2T-v0", loss="gce", action_mode="control", **TINY)
    env.reset(seed=0)
    with pytest.raises(ValueError, match=r"span \[1\.5, 1\.5\], expected within \[-1, 1\]"):
        env.step(np.array([1.5], np.float32))
    with pytest.raises(ValueError, match="non-finite"):
        env.step(np.array([np.nan], np.float32))
    obs, *_ = env.step(np.array([1.0], np.float32))
    assert obs["loss_params"][0] == pytest.approx(1.0)


def test_constant_teacher_holds_one_loss_of_the_family_single_and_batched():
    from l2t_agents import make_teacher, make_vector_env, run_episode, run_episodes
    from l2t_agents.evaluation import make_env

    kwargs = dict(loss="dfm", loss_kwargs={"metrics": ["ce", "gce", "rce"]}, action_mode="control", **{k: v for k, v in TINY.items() if k != "lookahead"})
    teacher = make_teacher("constant", action=[-1.0, 1.0, 0.0])  # weights ce 0, gce 1, rce 0.5
    env = make_env(teacher, **kwargs)
    single = run_episode(env, teacher, seed=4)
    np.testing.assert_allclose(env.unwrapped.phi.numpy(), [0.0, 1.0, 0.5], atol=1e-7)
    venv = make_vector_env(teacher, 2, **kwargs)
    batched = run_episodes(venv, teacher, [4, 5])
    np.testing.assert_allclose(venv.unwrapped.phi.numpy(), [[0.0, 1.0, 0.5]] * 2, atol=1e-7)
    assert batched[0].final["test_acc"] == pytest.approx(single.final["test_acc"], abs=1e-6)
    with pytest.raises(ValueError, match=r"constant: action has 2 entries, the env's action space is Box"):
        make_teacher("constant", action=[0.0, 0.0]).reset(make_env(teacher, **kwargs))
