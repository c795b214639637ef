"""The SB3 teachers: a short training run, a save/load round trip, frozen acting."""

from __future__ import annotations

import os
import subprocess
import sys
import tempfile

import gymnasium as gym
import numpy as np
import pytest

pytest.importorskip("stable_baselines3")

import l2t_env  # noqa: E402,F401  (registers L2T-v0)
from l2t_agents import make_env, make_teacher, make_vector_env  # noqa: E402
from l2t_agents.sb3_config import parse_policy_kwargs  # noqa: E402
from l2t_agents.sb3_wrappers import SeedSchedule  # noqa: E402

TINY = {"teaching_steps": 3}
# Small enough that each agent trains in about a second on a 2-core CPU.
KWARGS = {
    "ppo": {"n_steps": 6, "batch_size": 6, "n_epochs": 2},
    "a2c": {"n_steps": 3},
    "sac": {"learning_starts": 3, "batch_size": 4},
    "td3": {"learning_starts": 3, "batch_size": 4},
}
TRAIN_SEEDS = [100, 101]


@pytest.fixture(scope="module", params=sorted(KWARGS))
def trained(request):
    name = request.param
    teacher = make_teacher(name, **KWARGS[name])
    teacher.train("digits-mlp", TRAIN_SEEDS, total_timesteps=24, env_kwargs=TINY)
    return teacher


def _observations(teacher, seed: int = 0, n: int = 3) -> tuple:
    """A few observations of an evaluation episode (its seed is not a training seed)."""
    env = make_env(teacher, "digits-mlp", **TINY)
    obs, _ = env.reset(seed=seed)
    teacher.reset(env)
    seen = [obs]
    for _ in range(n - 1):
        obs, *_ = env.step(teacher.act(obs))
        seen.append(obs)
    return env, seen


def test_train_runs_the_budget(trained):
    assert trained.meta["timesteps_done"] >= 24
    assert trained.meta["train_seeds"] == TRAIN_SEEDS
    assert trained.learning is False


def test_action_lies_in_action_space(trained):
    env, seen = _observations(trained)
    assert env.action_space.shape == (5,)  # action_mode="layer": one scale per DLN layer
    for obs in seen:
        action = trained.act(obs)
        assert action.dtype == np.float32
        assert env.action_space.contains(action)


def test_batched_act_equals_acting_row_by_row(trained):
    """On a vector env the teacher acts on the batch: row i is its action on sub-env i's observation alone."""
    envs = make_vector_env(trained, 3, "digits-mlp", **TINY)
    obs, _ = envs.reset(seed=[0, 5, 9])
    trained.reset(envs)
    for _ in range(3):
        actions = trained.act(obs)
        assert actions.shape == (3, 5) and actions.dtype == np.float32
        rows = np.stack([trained.act({k: v[i] for k, v in obs.items()}) for i in range(3)])
        np.testing.assert_allclose(actions, rows, rtol=1e-5, atol=1e-6)
        obs, *_ = envs.step(actions)
    envs.close()


def test_batched_observation_is_summarised_per_sub_env(trained):
    envs = make_vector_env(trained, 2, "digits-mlp", **TINY)
    obs, _ = envs.reset(seed=[3, 4])
    batch = trained.policy_observation(obs)
    for i in range(2):
        one = trained.policy_observation({k: v[i] for k, v in obs.items()})
        for key in ("student", "layers"):
            np.testing.assert_array_equal(batch[key][i], one[key][0])
    assert not np.array_equal(batch["layers"][0], batch["layers"][1])  # two students, two summaries
    with pytest.raises(ValueError, match="'student' has 3 dimensions"):
        trained.act({k: v[None] for k, v in obs.items()})
    envs.close()


def test_reset_on_a_vector_env_checks_the_single_action_space(trained):
    envs = make_vector_env(trained, 2, "digits-mlp", **TINY)
    envs.reset(seed=0)
    trained.reset(envs)  # the batched action space [2, 5] is not compared with the agent's [5]
    envs.close()
    # the same DLN groups, but the default action (one scale per DLN parameter): [5000] per sub-env
    other = gym.make_vec("L2T-v0", num_envs=2, vectorization_mode="vector_entry_point", task="digits-mlp", lookahead="K", **TINY)
    other.reset(seed=0)
    with pytest.raises(ValueError, match=r"env action space Box\(-1.0, 1.0, \(5000,\), float32\) differs"):
        trained.reset(other)
    other.close()


def test_save_load_round_trip(trained, tmp_path):
    trained.save(tmp_path / "agent")
    assert {p.name for p in (tmp_path / "agent").iterdir()} == {"model.zip", "vecnormalize.pkl", "teacher.json"}
    fresh = make_teacher(trained.name)
    fresh.load(tmp_path / "agent")
    assert fresh.learning is False
    assert fresh.hyperparams == trained.hyperparams

    # the VecNormalize statistics survive, frozen
    a, b = trained.vecnorm, fresh.vecnorm
    assert b.training is False and b.norm_reward is False
    assert sorted(a.norm_obs_keys) == sorted(b.norm_obs_keys) == ["layers", "student"]
    for key in a.norm_obs_keys:
        np.testing.assert_array_equal(a.obs_rms[key].mean, b.obs_rms[key].mean)
        np.testing.assert_array_equal(a.obs_rms[key].var, b.obs_rms[key].var)
        assert a.obs_rms[key].count == b.obs_rms[key].count
    assert a.obs_rms["student"].count > 1  # they were really updated in training

    # same observation, same action
    _, seen = _observations(trained, seed=7)
    fresh_env = make_env(fresh, "digits-mlp", **TINY)
    fresh_env.reset(seed=7)
    fresh.reset(fresh_env)
    for obs in seen:
        np.testing.assert_array_equal(trained.act(obs), fresh.act(obs))

    # a loaded agent can be saved again, and state_dict round-trips too
    fresh.save(tmp_path / "again")
    other = make_teacher(trained.name)
    other.load_state_dict(trained.state_dict())
    for obs in seen:
        np.testing.assert_array_equal(trained.act(obs), other.act(obs))


def test_load_rejects_another_algorithm(trained, tmp_path):
    trained.save(tmp_path / "agent")
    other = "ppo" if trained.name != "ppo" else "sac"
    with pytest.raises(ValueError, match=f"holds a '{trained.name}' teacher"):
        make_teacher(other).load(tmp_path / "agent")


@pytest.mark.parametrize("verbose", [0, 1])
def test_training_writes_nothing_to_the_temp_dir(tmp_path, monkeypatch, verbose):
    """Without ``tensorboard_log`` nothing is written: SB3's default logger would leave an empty
    ``SB3-<date>`` folder in the temp dir after every training."""
    temp = tmp_path / "temp"
    temp.mkdir()
    monkeypatch.delenv("SB3_LOGDIR", raising=False)
    monkeypatch.setattr(tempfile, "tempdir", str(temp))  # the temp dir SB3 would write to, ours alone

    def entries() -> list[str]:  # torch may put its compiler cache (torchinductor_<user>) there: not ours
        return sorted(name for name in os.listdir(temp) if not name.startswith("torchinductor_"))

    before = entries()
    make_teacher("a2c", n_steps=3, verbose=verbose).train("digits-mlp", [100], total_timesteps=3, env_kwargs=TINY)
    assert entries() == before == []


def test_untrained_teacher_refuses_to_act():
    teacher = make_teacher("ppo")
    with pytest.raises(RuntimeError, match="train\\(\\) or load\\(\\)"):
        teacher.act({})
    with pytest.raises(FileNotFoundError, match="teacher.json"):
        teacher.load("/nonexistent/agent")


def test_unknown_hyperparameter_names_the_valid_ones():
    with pytest.raises(ValueError, match=r"unknown hyper-parameter\(s\) \['n_stepz'\]; valid: .*'n_steps'"):
        make_teacher("ppo", n_stepz=5)
    with pytest.raises(ValueError, match="observation='raw'"):
        make_teacher("sac", observation="raw")


def test_seed_schedule_cycles_training_seeds():
    teacher = make_teacher("ppo")
    env = SeedSchedule(make_env(teacher, "digits-mlp", **TINY), [100, 101], start=1, stride=1)
    seen = []
    for _ in range(3):
        env.reset(seed=5)  # the given seed is ignored
        seen.append(env.unwrapped.np_random_seed)
    assert seen == [101, 100, 101]


def test_policy_kwargs_strings():
    import torch

    kwargs = parse_policy_kwargs("dict(net_arch=dict(pi=[32], vf=[32]), activation_fn=nn.Tanh, log_std_init=-1.0)")
    assert kwargs == {"net_arch": {"pi": [32], "vf": [32]}, "activation_fn": torch.nn.Tanh, "log_std_init": -1.0}
    assert parse_policy_kwargs({"net_arch": [8], "activation_fn": "ReLU"})["activation_fn"] is torch.nn.ReLU
    for bad in ("__import__('os')", "dict(a=nn.__class__)", "open('x')"):
        with pytest.raises(ValueError):
            parse_policy_kwargs(bad)


def test_agents_import_without_sb3():
    code = (
        "import sys; sys.modules['stable_baselines3'] = None\n"
        "import l2t_agents; names = l2t_agents.available_teachers()\n"
        "assert 'ppo' not in names and 'l2t-dln' in names, names\n"
    )
    subprocess.run([sys.executable, "-c", code], check=True, timeout=120)
