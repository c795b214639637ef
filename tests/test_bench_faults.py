"""Faults tried systematically: ``l2t bench --workers 2`` is killed (SIGKILL of its whole process
group: the driver, its worker processes, multiprocessing's helpers) once while a mid-episode
checkpoint is being written and then at seeded random moments, and rerun until it finishes; its
``runs.jsonl`` then holds every run exactly once, each record equal to an uninterrupted run's in
everything but the timing fields.

Marked ``slow`` (3 to 6 minutes on our shared 2-core CPU, by its load): ``pytest -m slow tests/test_bench_faults.py``.
"""

from __future__ import annotations

import json
import os
import random
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import yaml

from l2t_bench.config import load_bench_config, plan_runs
from l2t_bench.numerics import PIN_FLAG, PINNED_ENV

pytestmark = pytest.mark.slow

TESTS = Path(__file__).resolve().parent
REPO = TESTS.parent
#: what may differ between an interrupted and an uninterrupted run of the same config
TIMING = ("wall_time", "steps_per_s", "finished_at", "agent_train_time")
BENCH = {
    "name": "faults",
    "tasks": [{"name": "digits-mlp", "overrides": {"teaching_steps": 4}}],
    "teachers": [
        "ce",  # batched: the seeds as one vector env, one task
        "l2t-dlf",  # one by one, checkpointed
        {"name": "test-slow-checkpoint", "kwargs": {"seconds": 1.0}},  # one by one; each checkpoint write takes 1 s
        {"name": "ppo", "kwargs": {"n_steps": 4, "batch_size": 4, "n_epochs": 1}},  # trained first (a task of its own), then batched
    ],
    "seeds": [0, 1],
    "train_seeds": [100],
    "train_timesteps": 8,
    "device": "cpu",
    "workers": 2,
    "checkpoint_every": 2,
    "imports": ["bench_fault_teachers"],
}
KILLS = 3  # random kills after the one during a checkpoint write
SEED = 2026


def _env() -> dict:
    env = {k: v for k, v in os.environ.items() if k not in (*PINNED_ENV, PIN_FLAG)}
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(TESTS), env.get("PYTHONPATH")]))
    return env


def _start(config: Path, out: Path) -> subprocess.Popen:
    """``l2t bench --workers 2`` in a process group of its own (so that one SIGKILL takes all of it)."""
    cmd = [sys.executable, "-m", "l2t_bench.cli", "bench", "--config", str(config), "--out", str(out), "--workers", "2", "--quiet"]
    return subprocess.Popen(cmd, cwd=REPO, env=_env(), stdout=subprocess.PIPE, stderr=subprocess.STDOUT, start_new_session=True)


def _kill(proc: subprocess.Popen) -> None:
    os.killpg(proc.pid, signal.SIGKILL)
    proc.wait(timeout=60)
    deadline = time.monotonic() + 10  # nothing of the group may live on (a worker writing after its driver died)
    while True:
        try:
            os.killpg(proc.pid, 0)
        except ProcessLookupError:
            return
        assert time.monotonic() < deadline, "a process of the killed group is still alive"
        time.sleep(0.05)


def _writing(out: Path) -> list[Path]:
    """The checkpoints being written now (``save_atomic`` writes ``NAME.pt.tmp``, then renames it)."""
    folder = out / "checkpoints"
    return list(folder.glob("*.pt.tmp")) if folder.is_dir() else []


def _lines(out: Path) -> int:
    path = out / "runs.jsonl"
    return len(path.read_bytes().split(b"\n")) - 1 if path.exists() else 0


def _comparable(record: dict) -> dict:
    return {k: v for k, v in record.items() if k not in TIMING}


def _records(out: Path) -> list[dict]:
    """Every line of ``runs.jsonl`` (duplicates included: none may be there)."""
    return [json.loads(line) for line in (out / "runs.jsonl").read_text().splitlines()]


def test_killed_at_random_moments_and_during_a_checkpoint_write_loses_and_repeats_nothing(tmp_path):
    config = tmp_path / "faults.yaml"
    config.write_text(yaml.safe_dump(BENCH))
    n_runs = len(plan_runs(load_bench_config(BENCH)))

    ref_out = tmp_path / "uninterrupted"
    start = time.monotonic()
    ref = _start(config, ref_out)
    assert ref.wait(timeout=600) == 0, ref.stdout.read().decode()[-3000:]
    duration = time.monotonic() - start
    reference = {r["key"]: r for r in _records(ref_out)}
    assert len(reference) == n_runs

    out = tmp_path / "faulted"
    log = [f"uninterrupted: {duration:.1f} s"]
    # 1. killed while a checkpoint is being written: the first .tmp checkpoint seen (test-slow-checkpoint's take 1 s)
    proc = _start(config, out)
    deadline = time.monotonic() + 300
    while not _writing(out):
        assert proc.poll() is None, "the bench ended before any checkpoint was written"
        assert time.monotonic() < deadline
        time.sleep(0.01)
    _kill(proc)
    tmp_files = _writing(out)
    assert tmp_files, "the checkpoint write was not in progress when the group was killed"
    log.append(f"killed during the write of {tmp_files[0].name}: {_lines(out)} run(s) written")

    # 2. killed at seeded random moments of the uninterrupted run's duration, each invocation resuming the last
    rng = random.Random(SEED)
    kills = 0
    for _ in range(KILLS):
        at = rng.uniform(0.1, 0.9) * duration
        proc = _start(config, out)
        try:
            rc = proc.wait(timeout=at)
        except subprocess.TimeoutExpired:
            _kill(proc)
            kills += 1
            log.append(f"killed at {at:.1f} s: {_lines(out)} run(s) written")
            continue
        assert rc == 0, proc.stdout.read().decode()[-3000:]
        log.append(f"finished before {at:.1f} s")
        break
    # 3. rerun until done
    for _ in range(3):
        proc = _start(config, out)
        rc = proc.wait(timeout=600)
        text = proc.stdout.read().decode()
        log.append(f"rerun: exit {rc}, {_lines(out)} run(s) written")
        if rc == 0:
            break
    print("\n".join(log))
    assert rc == 0, text[-3000:]
    assert kills >= 2, log  # the random kills did interrupt runs in progress

    lines = _records(out)
    keys = [r["key"] for r in lines]
    assert len(keys) == len(set(keys)) == n_runs, "a run is missing or written twice"
    assert sorted(keys) == sorted(reference)
    for record in lines:
        assert _comparable(record) == _comparable(reference[record["key"]]), record["key"]
    assert not list((out / "checkpoints").iterdir()), "a finished run left its checkpoint (or a half-written one)"
