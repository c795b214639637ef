"""The SB3 ``VecEnv`` adapter over ``L2TVectorEnv`` and the SB3 teachers training through it."""

from __future__ import annotations

from functools import partial

import gymnasium as gym
import numpy as np
import pytest

pytest.importorskip("stable_baselines3")

from stable_baselines3.common.utils import check_for_correct_spaces  # noqa: E402
from stable_baselines3.common.vec_env import DummyVecEnv, VecCheckNan  # noqa: E402

import l2t_env  # noqa: E402,F401  (registers L2T-v0)
from l2t_agents import make_env, make_teacher  # noqa: E402
from l2t_agents.sb3_wrappers import env_groups, layer_summary, summary_space  # noqa: E402
from l2t_agents.sb3_vec import SB3VecEnv  # noqa: E402

TINY = {"teaching_steps": 3}
SEEDS = [100, 101, 102]


def _adapter(n: int = 2, seeds=SEEDS) -> SB3VecEnv:
    teacher = make_teacher("ppo")
    kwargs = {**teacher.env_kwargs, **TINY}
    venv = gym.make_vec("L2T-v0", num_envs=n, vectorization_mode="vector_entry_point", task="digits-mlp", **kwargs)
    groups = env_groups(venv)
    space = summary_space(venv.single_observation_space["student"], len(groups))
    return SB3VecEnv(venv, seeds, partial(layer_summary, groups=groups), space)


def _dummy(n: int = 2, seeds=SEEDS) -> DummyVecEnv:
    """What the SB3 teachers train on without ``vector_env``: the reference semantics."""
    teacher = make_teacher("ppo")
    return DummyVecEnv([partial(teacher._train_env, "digits-mlp", seeds, i, n, TINY) for i in range(n)])


def _close(a: dict, b: dict) -> bool:
    return set(a) == set(b) and all(np.allclose(a[k], b[k], rtol=1e-4, atol=1e-5) for k in a)


def test_adapter_matches_dummy_vec_env_across_episode_ends():
    """Same seeds, same actions: the adapter gives DummyVecEnv's observations, rewards, dones,
    terminal observations and truncation flags, with SB3's same-step autoreset."""
    ours, ref = _adapter(), _dummy()
    check_for_correct_spaces(ours, ref.observation_space, ref.action_space)
    obs_a, obs_b = ours.reset(), ref.reset()
    assert obs_a["student"].shape == (2, 8) and obs_a["layers"].shape == (2, 15)
    assert _close(obs_a, obs_b)
    rng = np.random.default_rng(0)
    ends = 0
    for _ in range(7):  # 3 steps an episode: crosses two episode ends per sub-env
        actions = rng.uniform(0.0, 1.0, size=(2, 5)).astype(np.float32)
        obs_a, rew_a, done_a, info_a = ours.step(actions)
        obs_b, rew_b, done_b, info_b = ref.step(actions)
        assert _close(obs_a, obs_b)
        np.testing.assert_allclose(rew_a, rew_b, rtol=1e-4, atol=1e-5)
        np.testing.assert_array_equal(done_a, done_b)
        for i in np.flatnonzero(done_a):
            ends += 1
            assert _close(info_a[i]["terminal_observation"], info_b[i]["terminal_observation"])
            assert info_a[i]["TimeLimit.truncated"] == info_b[i]["TimeLimit.truncated"]
            # the returned observation is the next episode's first one, not the terminal one
            assert not _close({k: v[i] for k, v in obs_a.items()}, info_a[i]["terminal_observation"])
        for i in np.flatnonzero(~done_a):
            assert "terminal_observation" not in info_a[i]
    assert ends == 4
    ours.close()


def test_adapter_seeds_and_sb3_checks():
    """Without a seed list ``seed(s)`` seeds sub-env i with s + i; SB3's NaN check passes."""
    ours = _adapter(seeds=None)
    ours.seed(100)
    first = ours.reset()
    assert ours.venv.unwrapped.np_random_seed == (100, 101)
    env = make_env(make_teacher("ppo"), "digits-mlp", **TINY)
    obs, _ = env.reset(seed=101)
    single = layer_summary(obs, env_groups(env))
    assert _close({k: v[1] for k, v in first.items()}, single)
    checked = VecCheckNan(ours, raise_exception=True)
    checked.reset()
    for _ in range(4):
        checked.step(np.ones((2, 5), dtype=np.float32))
    assert ours.get_attr("num_envs", [0, 1]) == [2, 2]
    assert ours.env_is_wrapped(gym.Wrapper) == [False, False]
    with pytest.raises(RuntimeError, match="step_async"):
        ours.step_wait()
    ours.close()


def test_adapter_rejects_a_same_step_vector_env():
    venv = gym.vector.SyncVectorEnv([lambda: gym.make("CartPole-v1")] * 2, autoreset_mode=gym.vector.AutoresetMode.SAME_STEP)
    with pytest.raises(ValueError, match="NEXT_STEP"):
        SB3VecEnv(venv)


def test_ppo_trains_on_the_vector_env_and_acts():
    teacher = make_teacher("ppo", n_envs=2, vector_env=True, n_steps=32, batch_size=32, n_epochs=2)
    teacher.train("digits-mlp", SEEDS, total_timesteps=128, env_kwargs=TINY)
    assert teacher.meta["timesteps_done"] >= 128
    env = teacher.model.get_env()
    while not isinstance(env, SB3VecEnv):
        env = env.venv  # VecNormalize -> VecMonitor -> the adapter
    assert env.num_envs == 2
    assert teacher.meta["groups"] == env_groups(make_env(teacher, "digits-mlp", **TINY))
    assert teacher.vecnorm is not None and teacher.vecnorm.obs_rms["layers"].count > 128
    env = make_env(teacher, "digits-mlp", **TINY)
    obs, _ = env.reset(seed=0)
    teacher.reset(env)
    for _ in range(3):
        action = teacher.act(obs)
        assert env.action_space.contains(action)
        obs, *_ = env.step(action)


def test_vector_env_key_is_checked():
    with pytest.raises(ValueError, match="vector_env='yes'"):
        make_teacher("ppo", vector_env="yes")
