"""Checkpoints of the vector env and of batched runs: a continued run equals the uninterrupted one."""

from __future__ import annotations

import io
import json
import os
import subprocess
import sys
from pathlib import Path

import gymnasium as gym
import numpy as np
import pytest
import torch
import yaml

sys.path.insert(0, str(Path(__file__).parent))
from processes import kill_once_written  # noqa: E402

import l2t_env  # noqa: F401
from l2t_agents import make_teacher, make_vector_env, run_episodes
from l2t_bench.config import load_bench_config, plan_runs
from l2t_bench.driver import run_bench
from l2t_bench.episodes import run_checkpointed_episodes
from l2t_bench.runner import batch_checkpoint_path, batch_groups

# 3 teaching steps: the 7 steps below end every episode at step 3, autoreset all at step 4
TINY = dict(task="digits-mlp", teaching_steps=3, unroll_steps=2, student_kwargs={"hidden": [16]})
CASES = {
    "lookahead-vmap": dict(TINY, lookahead="K", batching="vmap", monitor_every=2),
    "lookahead-loop": dict(TINY, lookahead="K", batching="loop"),
    "fixed": dict(TINY, lookahead="off", batching="vmap"),
    "ce": dict(TINY, loss="ce", lookahead="off", batching="vmap"),
    "dln-init-ce": dict(TINY, lookahead=1, loss_kwargs={"init": "ce"}, batching="vmap"),
    # from teaching step 2 the training batches come from the validation split, by their own sampler
    "finetune": dict(TINY, lookahead="off", batching="vmap", finetune_fraction=0.34),
}


def make(num_envs: int = 3, **kwargs):
    return gym.make_vec("L2T-v0", num_envs=num_envs, vectorization_mode="vector_entry_point", **kwargs)


def through_disk(state: dict) -> dict:
    """``torch.save`` then ``torch.load(weights_only=True)``, as a checkpoint file would."""
    buffer = io.BytesIO()
    torch.save(state, buffer)
    buffer.seek(0)
    return torch.load(buffer, weights_only=True)


def assert_same(a, b, where: str = "") -> None:
    """Bit-equal observations, rewards, flags and (nested) infos."""
    if isinstance(a, dict):
        assert a.keys() == b.keys(), where
        for key in a:
            assert_same(a[key], b[key], f"{where}.{key}")
    elif isinstance(a, (tuple, list)):
        assert len(a) == len(b), where
        for i, (x, y) in enumerate(zip(a, b)):
            assert_same(x, y, f"{where}[{i}]")
    else:
        assert np.array_equal(np.asarray(a), np.asarray(b), equal_nan=True), where


def assert_same_state(a: dict, b: dict) -> None:
    if isinstance(a, dict):
        assert a.keys() == b.keys()
        for key in a:
            assert_same_state(a[key], b[key])
    elif isinstance(a, (list, tuple)):
        assert len(a) == len(b)
        for x, y in zip(a, b):
            assert_same_state(x, y)
    elif torch.is_tensor(a):
        assert torch.equal(a, b)
    else:
        assert a == b


@pytest.mark.parametrize("kwargs", list(CASES.values()), ids=list(CASES))
def test_continued_vector_env_is_bit_identical(kwargs):
    env = make(**kwargs)
    obs, _ = env.reset(seed=[4, 9, 2])
    rng = np.random.default_rng(0)
    acts = [rng.uniform(-1, 1, env.action_space.shape).astype(np.float32) for _ in range(7)]
    acts[2] = np.zeros_like(acts[2])  # with a look-ahead: commits the observed phi, reusing the kept unroll
    cuts = (2, 3)  # mid-episode (the restored look-ahead is reused next), and with every autoreset pending
    saved, trajectory = {}, []
    for t, action in enumerate(acts):
        if t in cuts:
            saved[t] = (through_disk(env.unwrapped.state_dict()), obs)
        out = env.step(action)
        obs = out[0]
        trajectory.append(out)
    assert trajectory[2][3].all() and not trajectory[3][2].any() and trajectory[3][1].sum() == 0  # ended, then autoreset
    for cut in cuts:
        state, cut_obs = saved[cut]
        fresh = make(**kwargs)
        obs, info = fresh.reset(options={"state": state})
        assert_same(obs, cut_obs, f"obs at {cut}")
        assert list(info["resumed_at"]) == [cut] * 3
        for t in range(cut, len(acts)):
            assert_same(fresh.step(acts[t]), trajectory[t], f"step {t} after a cut at {cut}")


def test_a_state_that_does_not_fit_raises_and_leaves_the_env_unchanged():
    env = make(**CASES["lookahead-vmap"])
    env.reset(seed=1)
    env.step(np.zeros(env.action_space.shape, np.float32))
    before = env.unwrapped.state_dict()
    other = make(**CASES["lookahead-vmap"])
    other.reset(seed=7)
    state = other.unwrapped.state_dict()

    with pytest.raises(ValueError, match=r"holds 2 sub-envs, this vector env has num_envs=3"):
        small = make(2, **CASES["lookahead-vmap"])
        small.reset(seed=0)
        env.unwrapped.load_state_dict(small.unwrapped.state_dict())
    noisy = make(**{**CASES["lookahead-vmap"], "task": "digits-mlp-noisy"})
    noisy.reset(seed=0)
    with pytest.raises(ValueError, match=r"state is of task 'digits-mlp-noisy'.*this env runs task 'digits-mlp'"):
        env.unwrapped.load_state_dict(noisy.unwrapped.state_dict())
    with pytest.raises(ValueError, match=r"batching='vmap', this vector env runs batching='loop'"):
        loop = make(**{**CASES["lookahead-vmap"], "batching": "loop"})
        loop.reset(seed=0)
        loop.unwrapped.load_state_dict(state)
    with pytest.raises(ValueError, match="not an L2TVectorEnv state"):
        env.reset(options={"state": {"format": "l2t-env-state/1"}})
    bad = {**state, "core": {**state["core"], "unroll": None}}
    bad["core"]["student"] = {**state["core"]["student"], "params": state["core"]["student"]["params"][:-1] + [torch.zeros(3, 2)]}
    with pytest.raises(ValueError, match=r"student parameter \d has shape \(3, 2\), this vector env's \(3, 10\)"):
        env.unwrapped.load_state_dict(bad)  # fails after phi, split and samplers were built
    assert_same_state(env.unwrapped.state_dict(), before)

    # the loop: the last sub-env's state fails after the first two were prepared; none is touched
    loop_kwargs = CASES["lookahead-loop"]
    loop = make(**loop_kwargs)
    loop.reset(seed=3)
    loop_before = loop.unwrapped.state_dict()
    source = make(**loop_kwargs)
    source.reset(seed=5)
    bad = source.unwrapped.state_dict()
    last = bad["core"]["envs"][-1]
    last["student"]["params"] = last["student"]["params"][:-1] + [torch.zeros(7)]
    with pytest.raises(ValueError, match=r"student parameter .* the state's has shape \(7,\)"):
        loop.unwrapped.load_state_dict(bad)
    assert_same_state(loop.unwrapped.state_dict(), loop_before)
    with pytest.raises(RuntimeError, match="call reset"):
        make(**loop_kwargs).unwrapped.state_dict()


class Crash(Exception):
    pass


@pytest.mark.parametrize(
    "name, kwargs, env_kwargs",
    [
        ("l2t-dln", {"hidden": 8, "layers": 2}, {}),  # N stacked learning LSTMs, their Adam, memory, phi0
        ("random", {"seed": 2}, {"loss_kwargs": {"init": "ce"}}),  # a numpy generator per sub-env
    ],
)
def test_crashed_batched_episodes_resume_to_the_uninterrupted_records(tmp_path, name, kwargs, env_kwargs):
    task = dict(teaching_steps=6, unroll_steps=2, student_kwargs={"hidden": [16]}, monitor_every=2, **env_kwargs)
    seeds = [3, 5]

    def fresh():
        teacher = make_teacher(name, **kwargs)
        return make_vector_env(teacher, len(seeds), "digits-mlp", **task), teacher

    reference = run_episodes(*fresh(), seeds)
    path = tmp_path / "batch.pt"

    def crash(t: int, info: dict) -> None:
        if t == 5:
            raise Crash

    with pytest.raises(Crash):  # killed after the checkpoint of step 4
        run_checkpointed_episodes(*fresh(), seeds, checkpoint_every=2, path=path, on_step=crash)
    assert path.is_file()
    resumed_at = []
    records = run_checkpointed_episodes(*fresh(), seeds, checkpoint_every=2, path=path, on_resume=resumed_at.append)
    assert resumed_at == [4] and not path.exists()
    for a, b in zip(records, reference):
        da, db = a.to_dict(), b.to_dict()
        da.pop("wall_time"), db.pop("wall_time")
        assert da == db
    with pytest.raises(Crash):
        run_checkpointed_episodes(*fresh(), seeds, checkpoint_every=2, path=path, on_step=crash)
    with pytest.raises(ValueError, match=r"seeds \[3, 5\]; this run is teacher .* seeds \[3, 6\]"):
        run_checkpointed_episodes(*fresh(), [3, 6], checkpoint_every=2, path=path)  # a checkpoint of other seeds


@pytest.mark.slow
def test_sigkilled_batched_bench_resumes_to_the_uninterrupted_records(tmp_path):
    """``l2t bench`` with ``batch_seeds`` and ``checkpoint_every``: SIGKILL mid-episode after a
    checkpoint, rerun, and the records equal an uninterrupted batched run's bit for bit (CPU)."""
    bench = {
        "name": "killed",
        "tasks": [{"name": "digits-mlp", "overrides": {"teaching_steps": 40, "unroll_steps": 2, "student_kwargs": {"hidden": [16]}}}],
        "teachers": [{"name": "l2t-dln", "kwargs": {"hidden": 8, "layers": 2}}],
        "seeds": [0, 1, 2],
        "device": "cpu",
    }
    plain = run_bench(load_bench_config(bench), tmp_path / "plain", quiet=True)
    cfg = {**bench, "checkpoint_every": 3}
    config_file = tmp_path / "bench.yaml"
    config_file.write_text(yaml.safe_dump(cfg))
    out = tmp_path / "killed"
    (group,) = batch_groups(load_bench_config(cfg), plan_runs(load_bench_config(cfg)))
    checkpoint = batch_checkpoint_path(out, group)
    args = [sys.executable, "-m", "l2t_bench.cli", "bench", "--config", str(config_file), "--out", str(out), "--quiet"]
    env = {**os.environ, "OMP_NUM_THREADS": str(torch.get_num_threads())}
    kill_once_written(args, env, checkpoint)
    assert checkpoint.is_file() and not (out / "runs.jsonl").exists()
    saved_at = torch.load(checkpoint, weights_only=False)["records"][0]["steps"]
    assert 3 <= saved_at < 40
    rerun = subprocess.run(args, env=env, capture_output=True, text=True)
    assert rerun.returncode == 0, rerun.stderr[-2000:]
    assert f"+2 seeds: resumed from their checkpoint at teaching step {saved_at}" in " ".join(rerun.stdout.split())
    assert not checkpoint.exists()
    records = [json.loads(line) for line in (out / "runs.jsonl").read_text().splitlines()]
    assert len(records) == len(plain) == 3
    for a, b in zip(records, plain):
        assert a["key"] == b["key"]  # checkpointing is not part of a run's key
        for key in ("test_acc", "test_loss", "val_acc", "train_loss", "curves", "teaching_steps", "student_steps"):
            assert a[key] == b[key], key
