"""Behaviour of the L2T-v0 environment: spaces, dynamics, seeds, bad input, hooks."""

from __future__ import annotations

import subprocess
import sys
import warnings

import gymnasium as gym
import numpy as np
import pytest
import torch

import l2t_env
from l2t_env.env import STUDENT_FEATURES, L2TEnv


def make(**kwargs) -> gym.Env:
    kwargs.setdefault("teaching_steps", 3)
    return gym.make("L2T-v0", **kwargs)


def rollout(env: gym.Env, seed: int, n: int, action_seed: int = 0):
    obs, _ = env.reset(seed=seed)
    rng = np.random.default_rng(action_seed)
    out = [obs]
    rewards = []
    for _ in range(n):
        obs, reward, terminated, truncated, info = env.step(rng.uniform(-1, 1, env.action_space.shape).astype(np.float32))
        out.append(obs)
        rewards.append(reward)
    return out, rewards, info


def test_import_is_light_and_make_without_import_works():
    code = (
        "import sys, gymnasium as gym\n"
        "env = gym.make('l2t_env:L2T-v0', teaching_steps=1)\n"
        "obs, info = env.reset(seed=0)\n"
        "print(sorted(obs))\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert "loss_grad" in out.stdout
    light = subprocess.run(
        [sys.executable, "-c", "import sys, l2t_env; print('torch' in sys.modules)"], capture_output=True, text=True, check=True
    )
    assert light.stdout.strip() == "False"


def test_spaces_match_spec_and_observations_lie_in_them():
    env = make()
    core = env.unwrapped
    assert env.action_space == gym.spaces.Box(-1, 1, (5000,), np.float32)
    assert set(env.observation_space.spaces) == {"student", "loss_grad", "loss_params"}
    assert env.observation_space["student"].shape == (len(STUDENT_FEATURES),)
    obs_list, rewards, info = rollout(env, seed=0, n=3)
    for obs in obs_list:
        assert env.observation_space.contains(obs)
    np.testing.assert_allclose(obs_list[-1]["loss_params"], core.phi.numpy(), rtol=0, atol=0)
    assert np.isfinite(rewards).all()


def test_step_moves_phi_by_action_scale_times_action():
    env = make()
    obs, _ = env.reset(seed=0)
    phi0 = env.unwrapped.phi.clone()
    action = np.random.default_rng(1).uniform(-1, 1, 5000).astype(np.float32)
    env.step(action)
    expected = phi0 - 1e-3 * torch.as_tensor(action)
    assert torch.equal(env.unwrapped.phi, expected)
    assert env.unwrapped.student_steps == 15


def test_episode_truncates_after_teaching_steps_with_test_metrics():
    env = make(teaching_steps=2)
    env.reset(seed=0)
    _, _, term, trunc, info = env.step(np.zeros(5000, np.float32))
    assert not term and not trunc and "test_acc" not in info
    _, _, term, trunc, info = env.step(np.zeros(5000, np.float32))
    assert trunc and not term
    assert 0.0 <= info["test_acc"] <= 1.0
    assert set(info["final"]) == {f"{s}_{m}" for s in ("train", "val", "test") for m in ("loss", "acc")}
    with pytest.raises(RuntimeError, match="reset"):
        env.step(np.zeros(5000, np.float32))
    env.reset(seed=1)  # usable again
    env.step(np.zeros(5000, np.float32))


def test_same_seed_same_actions_bit_identical_and_other_seed_differs():
    a = rollout(make(), seed=3, n=3)
    b = rollout(make(), seed=3, n=3)
    c = rollout(make(), seed=4, n=3)
    for oa, ob in zip(a[0], b[0]):
        for key in oa:
            assert np.array_equal(oa[key], ob[key]), key
    assert a[1] == b[1]
    assert not np.array_equal(a[0][0]["loss_params"], c[0][0]["loss_params"])
    assert not np.array_equal(a[0][1]["student"], c[0][1]["student"])


def test_seed_fixes_split_student_phi_and_batches():
    e1, e2 = make().unwrapped, make().unwrapped
    e1.reset(seed=7)
    e2.reset(seed=7)
    assert torch.equal(e1.splits.y_val, e2.splits.y_val)
    assert all(torch.equal(p, q) for p, q in zip(e1.params, e2.params))
    assert torch.equal(e1.phi, e2.phi)
    assert torch.equal(e1._next.x, e2._next.x)
    e2.reset(seed=8)
    assert not torch.equal(e1.splits.y_val, e2.splits.y_val)
    assert not torch.equal(e1._next.x, e2._next.x)


@pytest.mark.parametrize(
    "action, error, match",
    [
        (np.zeros(4999, np.float32), ValueError, r"shape \(4999,\), expected \(5000,\)"),
        (np.zeros((1, 5000), np.float32), ValueError, r"expected \(5000,\)"),
        (np.zeros(5000, np.int64), TypeError, r"dtype int64, expected float32 of shape \(5000,\)"),
        (np.full(5000, np.nan, np.float32), ValueError, "non-finite"),
        (np.full(5000, np.inf, np.float32), ValueError, "non-finite"),
        (np.full(5000, 2.0, np.float32), ValueError, r"within \[-1, 1\]"),
    ],
)
def test_bad_actions_raise_and_leave_state_unchanged(action, error, match):
    env = make()
    env.reset(seed=0)
    core = env.unwrapped
    phi, params, t = core.phi.clone(), [p.detach().clone() for p in core.params], core.t
    with pytest.raises(error, match=match):
        env.step(action)
    assert torch.equal(core.phi, phi) and core.t == t
    assert all(torch.equal(p, q) for p, q in zip(core.params, params))
    # still usable, and the same as an env that never saw the bad action
    obs, reward, *_ = env.step(np.zeros(5000, np.float32))
    fresh = make()
    fresh.reset(seed=0)
    obs2, reward2, *_ = fresh.step(np.zeros(5000, np.float32))
    assert reward == reward2 and np.array_equal(obs["student"], obs2["student"])


def test_unknown_task_and_keys_list_the_valid_ones():
    with pytest.raises(ValueError, match="unknown task 'nope'.*digits-mlp"):
        gym.make("L2T-v0", task="nope")
    with pytest.raises(ValueError, match="unknown task config key.*'lrr'.*valid keys.*'lr'"):
        gym.make("L2T-v0", lrr=0.1)
    with pytest.raises(ValueError, match="unknown reward 'acc'.*val_loss_decrease"):
        gym.make("L2T-v0", reward="acc")
    with pytest.raises(ValueError, match="lookahead=7.5"):
        gym.make("L2T-v0", lookahead=7.5)
    with pytest.raises(ValueError, match="lr=-1"):
        gym.make("L2T-v0", lr=-1)


def test_rewards_are_the_documented_differences():
    for name in ("val_loss_decrease", "val_acc_increase", "neg_val_loss"):
        env = make(reward=name, lookahead="off")
        _, info0 = env.reset(seed=0)
        _, reward, *_, info = env.step(np.zeros(5000, np.float32))
        expected = {
            "val_loss_decrease": info0["val_loss"] - info["val_loss"],
            "val_acc_increase": info["val_acc"] - info0["val_acc"],
            "neg_val_loss": -info["val_loss"],
        }[name]
        assert reward == pytest.approx(expected, abs=1e-12)


def test_reward_every_evaluates_every_nth_step_and_keeps_the_return():
    dense = make(teaching_steps=5, lookahead="off")
    sparse = make(teaching_steps=5, lookahead="off", reward_every=2)
    obs_d, rewards_d, info_d = rollout(dense, seed=4, n=5)
    obs_s, rewards_s, info_s = rollout(sparse, seed=4, n=5)
    assert [r == 0.0 for r in rewards_s] == [True, False, True, False, False]  # steps 2, 4 and the last
    assert sum(rewards_s) == pytest.approx(sum(rewards_d), abs=1e-12)  # val_loss_decrease telescopes
    assert rewards_s[1] == pytest.approx(rewards_d[0] + rewards_d[1], abs=1e-12)
    assert info_s["evaluated"] and info_s["test_acc"] == info_d["test_acc"]
    # the student is the same; off an evaluation the observation repeats the last val entries
    np.testing.assert_array_equal(obs_s[1]["student"][3:5], obs_s[0]["student"][3:5])
    np.testing.assert_array_equal(obs_s[2]["student"], obs_d[2]["student"])
    assert np.array_equal(obs_s[1]["student"][[1, 2, 5, 6]], obs_d[1]["student"][[1, 2, 5, 6]])
    for bad in (0, 1.5, True):
        with pytest.raises(ValueError, match=f"reward_every={bad!r}"):
            make(reward_every=bad)


def test_divergence_terminates_with_penalty_and_env_recovers():
    env = make(lr=1e20, lookahead="off", divergence_penalty=-7.0)  # parameters overflow to inf
    env.reset(seed=0)
    obs, reward, terminated, truncated, info = env.step(np.ones(5000, np.float32))
    assert terminated and not truncated and info["diverged"] and reward == -7.0
    assert env.observation_space.contains(obs)
    env.reset(seed=0)  # usable after reset


def test_lookahead_modes():
    off = make(lookahead="off")
    obs, _ = off.reset(seed=0)
    assert "loss_grad" not in obs and "loss_grad" not in off.observation_space.spaces
    one = make(lookahead=1)
    full = make(lookahead="K")
    g1 = one.reset(seed=0)[0]["loss_grad"]
    gk = full.reset(seed=0)[0]["loss_grad"]
    assert np.abs(g1).sum() > 0 and np.abs(gk).sum() > 0 and not np.allclose(g1, gk)


def test_lookahead_does_not_change_the_trajectory():
    a = rollout(make(lookahead="K"), seed=2, n=3)
    b = rollout(make(lookahead="off"), seed=2, n=3)
    assert a[1] == b[1]
    for oa, ob in zip(a[0], b[0]):
        assert np.array_equal(oa["student"], ob["student"])


def test_flat_observation_mode_and_wrapper_agree():
    flat = make(observation_mode="flat")
    obs, _ = flat.reset(seed=0)
    assert flat.observation_space.shape == (8 + 5000 + 5000,) and flat.observation_space.contains(obs)
    wrapped = gym.wrappers.FlattenObservation(make())
    obs2, _ = wrapped.reset(seed=0)
    assert np.array_equal(obs, obs2)


def test_hooks_reuse_the_unroll_and_match_a_recompute():
    env = make()
    env.reset(seed=5)
    core = env.unwrapped
    action = torch.full((5000,), 0.5)
    phi_new = core.phi_after(action.requires_grad_(True))
    val_loss = core.unrolled_val_loss(phi_new)
    (grad,) = torch.autograd.grad(val_loss, action)
    assert val_loss.requires_grad and torch.isfinite(grad).all() and grad.abs().sum() > 0
    obs, reward, *_, info = env.step(action.detach().numpy())
    assert info["reused_unroll"]
    other = make()
    other.reset(seed=5)
    obs2, reward2, *_, info2 = other.step(action.detach().numpy())
    assert not info2["reused_unroll"]
    assert reward == reward2 and np.array_equal(obs["student"], obs2["student"])
    assert all(torch.equal(p, q) for p, q in zip(core.params, other.unwrapped.params))


def test_commit_phi_equals_step():
    a, b = make(lookahead="off"), make(lookahead="off")
    a.reset(seed=1)
    b.reset(seed=1)
    action = np.full(5000, -0.25, np.float32)
    ra = a.step(action)
    rb = b.unwrapped.commit_phi(b.unwrapped.phi_after(torch.as_tensor(action)))
    assert ra[1] == rb[1] and np.array_equal(ra[0]["student"], rb[0]["student"])
    with pytest.raises(ValueError, match="non-finite"):
        b.unwrapped.commit_phi(torch.full((5000,), float("nan")))


def test_low_dimensional_action_modes():
    for mode, n in (("layer", 5), ("global", 1)):
        env = make(action_mode=mode)
        env.reset(seed=0)
        assert env.action_space.shape == (n,)
        core = env.unwrapped
        phi0, direction = core.phi.clone(), core.gradient_direction()
        env.step(np.ones(n, np.float32))
        assert torch.allclose(core.phi, phi0 - 1e-3 * direction)
        assert direction.abs().max() <= 1.0
    with pytest.raises(ValueError, match="needs a look-ahead"):
        make(action_mode="layer", lookahead="off")


def test_ce_loss_family_trains_the_student():
    env = make(loss="ce", lookahead="off", teaching_steps=20)
    env.reset(seed=0)
    assert env.action_space.shape == (0,)
    for _ in range(20):
        *_, info = env.step(np.zeros(0, np.float32))
    assert info["test_acc"] > 0.8  # the digits MLP learns with plain CE in 300 SGD steps


def test_gymnasium_check_env():
    from gymnasium.utils.env_checker import check_env

    check_env(L2TEnv(teaching_steps=3), skip_render_check=True)


def test_sb3_check_env():
    pytest.importorskip("stable_baselines3")
    from stable_baselines3.common.env_checker import check_env

    with warnings.catch_warnings():
        warnings.simplefilter("error")  # not even a warning
        check_env(L2TEnv(teaching_steps=3), warn=True)


def test_custom_task_from_tensors_and_module():
    from l2t_env.tasks import RawData, TaskConfig

    g = torch.Generator().manual_seed(0)
    x = torch.randn(200, 5, generator=g)
    y = (x[:, 0] > 0).long()
    data = RawData.from_tensors(x[:150], y[:150], x[150:], y[150:])
    student = torch.nn.Sequential(torch.nn.Linear(5, 16), torch.nn.ReLU(), torch.nn.Linear(16, 2))
    env = gym.make("L2T-v0", task=TaskConfig(name="toy", dataset=data, student=student, teaching_steps=2, batch_size=10))
    obs, _ = env.reset(seed=0)
    assert env.observation_space.contains(obs)
    p0 = [p.detach().clone() for p in env.unwrapped.params]
    env.reset(seed=0)
    assert all(torch.equal(a, b) for a, b in zip(p0, env.unwrapped.params))  # module re-initialised per seed
    env.reset(seed=1)
    assert not all(torch.equal(a, b) for a, b in zip(p0, env.unwrapped.params))


def test_yaml_task_file_and_overrides(tmp_path):
    path = tmp_path / "mine.yaml"
    path.write_text("dataset: digits\nstudent: mlp\nstudent_kwargs: {hidden: [32]}\nteaching_steps: 2\n")
    env = gym.make("L2T-v0", task=str(path), lr=0.05)
    assert env.unwrapped.config.name == "mine" and env.unwrapped.config.lr == 0.05
    env.reset(seed=0)
    assert env.unwrapped.student.module.net[1].out_features == 32
    path.write_text("dataset: digits\nbogus: 1\n")
    with pytest.raises(ValueError, match="bogus"):
        gym.make("L2T-v0", task=str(path))


def test_digits_cnn_task_runs():
    env = gym.make("L2T-v0", task="digits-cnn", teaching_steps=1, lookahead=1)
    obs, _ = env.reset(seed=0)
    obs, reward, term, trunc, info = env.step(np.zeros(5000, np.float32))
    assert trunc and np.isfinite(reward)


def test_float64_mode():
    env = make(dtype="float64")
    obs, _ = env.reset(seed=0)
    assert env.unwrapped.phi.dtype == torch.float64 and obs["loss_grad"].dtype == np.float32


def test_cpu_env_is_deterministic_in_spec():
    env = gym.make("L2T-v0", device="cpu")
    assert env.spec.nondeterministic is False
    assert env.unwrapped.nondeterministic is False


def test_registered_id():
    assert l2t_env.ENV_ID in gym.registry


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
def test_env_runs_on_cuda_and_says_it_is_nondeterministic():
    env = gym.make("L2T-v0", device="cuda", teaching_steps=2)
    obs, _ = env.reset(seed=0)
    assert env.unwrapped.phi.device.type == "cuda" and env.spec.nondeterministic
    obs, reward, *_ = env.step(np.zeros(5000, np.float32))
    assert env.observation_space.contains(obs) and np.isfinite(reward)


def test_parameterless_loss_with_lookahead_steps():
    """loss="ce" has no phi: the default look-ahead gives an empty loss_grad instead of failing in autograd."""
    env = gym.make("L2T-v0", loss="ce", teaching_steps=2)
    obs, _ = env.reset(seed=0)
    assert obs["loss_grad"].shape == (0,) and obs["loss_params"].shape == (0,)
    obs, reward, terminated, truncated, info = env.step(env.action_space.sample())
    assert np.isfinite(reward) and not terminated
    assert obs["loss_grad"].shape == (0,)
