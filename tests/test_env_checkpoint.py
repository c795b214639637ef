"""Env checkpoints: a run continued from ``state_dict`` in a fresh env equals the uninterrupted run."""

from __future__ import annotations

import gymnasium as gym
import numpy as np
import pytest
import torch

import l2t_env  # noqa: F401

DIGITS = dict(task="digits-mlp", teaching_steps=6, unroll_steps=3, student_kwargs={"hidden": [16]})
# BatchNorm running statistics and crop-flip augmentation on tiny random CIFAR-shaped data
RESNET = dict(
    task="random-cifar10-resnet8", teaching_steps=4, unroll_steps=2, batch_size=4, val_batch_size=8,
    reward_val_size=16, dataset_kwargs={"n_pool": 60, "n_test": 20, "seed": 1},
)


def actions(env: gym.Env, n: int, seed: int = 5) -> list[np.ndarray]:
    """Random actions, with a zero action (commits the observed look-ahead's phi: its unroll is reused)."""
    rng = np.random.default_rng(seed)
    out = [rng.uniform(-1, 1, env.action_space.shape).astype(np.float32) for _ in range(n)]
    out[2] = np.zeros(env.action_space.shape, np.float32)
    return out


def assert_same_obs(a, b) -> None:
    assert sorted(a) == sorted(b)
    for key in a:
        assert np.array_equal(a[key], b[key]), key


def assert_same_info(a: dict, b: dict) -> None:
    assert a.keys() == b.keys()
    for key in a:
        if isinstance(a[key], float) and np.isnan(a[key]):
            assert np.isnan(b[key]), key
        else:
            assert a[key] == b[key], key


@pytest.mark.parametrize(
    "kwargs", [DIGITS, RESNET, {**DIGITS, "task": "digits-mlp-noisy"}], ids=["digits-mlp", "resnet8-bn-augment", "noisy-labels"]
)
def test_resumed_run_in_a_fresh_env_is_bit_identical(kwargs, tmp_path):
    env = gym.make("L2T-v0", **kwargs)
    obs, _ = env.reset(seed=3)
    acts = actions(env, env.unwrapped.config.teaching_steps)
    cut = 2  # the zero action right after the cut needs the restored look-ahead
    trajectory = []
    for t, action in enumerate(acts):
        if t == cut:
            torch.save(env.unwrapped.state_dict(), tmp_path / "env.pt")
            saved_obs = obs
        out = env.step(action)
        obs = out[0]
        if t >= cut:
            trajectory.append(out)
    assert trajectory[-1][3] and "final" in trajectory[-1][4]
    assert trajectory[0][4]["reused_unroll"]  # the zero action reused the look-ahead of the observation

    fresh = gym.make("L2T-v0", **kwargs)
    state = torch.load(tmp_path / "env.pt", weights_only=True)  # plain tensors and values only
    obs, info = fresh.reset(options={"state": state})
    assert info["resumed_at"] == cut
    assert_same_obs(obs, saved_obs)
    assert_same_obs(fresh.unwrapped.observation(), saved_obs)
    for action, (obs_a, reward_a, term_a, trunc_a, info_a) in zip(acts[cut:], trajectory):
        obs_b, reward_b, term_b, trunc_b, info_b = fresh.step(action)
        assert_same_obs(obs_b, obs_a)
        assert (reward_b, term_b, trunc_b) == (reward_a, term_a, trunc_a)
        assert_same_info(info_b, info_a)


def test_load_state_dict_on_the_unwrapped_env_and_a_saved_finished_episode():
    env = gym.make("L2T-v0", **DIGITS, lookahead="off")
    env.reset(seed=0)
    zero = np.zeros(env.action_space.shape, np.float32)
    done = False
    while not done:
        _, _, term, trunc, _ = env.step(zero)
        done = term or trunc
    state = env.unwrapped.state_dict()
    fresh = gym.make("L2T-v0", **DIGITS, lookahead="off").unwrapped
    fresh.load_state_dict(state)
    assert_same_obs(fresh.observation(), env.unwrapped.observation())
    assert fresh.final_metrics() == env.unwrapped.final_metrics()
    with pytest.raises(RuntimeError, match="reset"):  # a finished episode stays finished
        fresh.step(zero)


def test_state_is_a_snapshot_not_a_view():
    env = gym.make("L2T-v0", **DIGITS, lookahead="off")
    env.reset(seed=0)
    state = env.unwrapped.state_dict()
    before = [p.clone() for p in state["student"]["params"]]
    env.step(np.zeros(env.action_space.shape, np.float32))  # updates the student in place
    assert all(torch.equal(a, b) for a, b in zip(before, state["student"]["params"]))
    assert not all(torch.equal(a, b.cpu()) for a, b in zip(before, env.unwrapped.params))


def test_state_of_another_task_or_loss_family_raises_naming_both_and_changes_nothing():
    env = gym.make("L2T-v0", **DIGITS)
    env.reset(seed=0)
    state = env.unwrapped.state_dict()
    other = gym.make("L2T-v0", **{**DIGITS, "task": "digits-cnn", "student_kwargs": {}})
    with pytest.raises(ValueError, match=r"task 'digits-mlp'.*this env runs task 'digits-cnn'"):
        other.unwrapped.load_state_dict(state)
    dlf = gym.make("L2T-v0", **DIGITS, loss="dlf")
    obs, _ = dlf.reset(seed=1)
    with pytest.raises(ValueError, match=r"loss family 'dln'.*loss family 'dlf'"):
        dlf.reset(options={"state": state})
    assert_same_obs(dlf.unwrapped.observation(), obs)  # the running episode is untouched
    longer = gym.make("L2T-v0", **{**DIGITS, "teaching_steps": 7})
    with pytest.raises(ValueError, match=r"teaching_steps=6 \(state\) vs 7 \(env\)"):
        longer.unwrapped.load_state_dict(state)
    with pytest.raises(ValueError, match="not an L2T-v0 env state"):
        longer.unwrapped.load_state_dict({"phi": torch.zeros(3)})


def test_checkpoint_calls_before_reset_and_bad_reset_options_raise():
    env = gym.make("L2T-v0", **DIGITS)
    with pytest.raises(RuntimeError, match="reset"):
        env.unwrapped.state_dict()
    with pytest.raises(RuntimeError, match="reset"):
        env.unwrapped.observation()
    with pytest.raises(ValueError, match=r"unknown reset option\(s\) \['bogus'\]"):
        env.reset(seed=0, options={"bogus": 1})
    env.reset(seed=0)
    with pytest.raises(ValueError, match="pass no seed"):
        env.reset(seed=1, options={"state": env.unwrapped.state_dict()})
