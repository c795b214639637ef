"""Mid-episode checkpoints: a killed episode resumed from its checkpoint ends as the uninterrupted one."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
import time

import pytest
import torch

sys.path.insert(0, str(Path(__file__).parent))
from processes import kill_once_written  # noqa: E402

import l2t_env  # noqa: F401
from l2t_agents import make_env, make_teacher, run_episode
from l2t_bench.config import load_bench_config, plan_runs
from l2t_bench.episodes import check_checkpoint_every, run_checkpointed_episode, save_atomic
from l2t_bench.driver import run_bench
from l2t_bench.runner import checkpoint_path

TINY = dict(teaching_steps=8, unroll_steps=3, student_kwargs={"hidden": [16]})


class Crash(Exception):
    pass


def new_run(name: str, monitor_every: int = 0, **kwargs):
    teacher = make_teacher(name, **kwargs)
    return make_env(teacher, "digits-mlp", monitor_every=monitor_every, **TINY), teacher


def same_episode(a, b) -> None:
    """Equal records but for the wall time."""
    da, db = a.to_dict(), b.to_dict()
    da.pop("wall_time"), db.pop("wall_time")
    assert da == db


def crash_at(step: int):
    def on_step(t: int, info: dict) -> None:
        if t == step:
            raise Crash(t)

    return on_step


@pytest.mark.parametrize(
    "name, kwargs, every, crash, resumed_at",
    [
        ("l2t-dln", {"max_drift": 0.0005}, 2, 5, 4),  # LSTM weights, Adam moments, hidden state, phi0
        ("l2t-dln", {"memory_truncation": 3}, 1, 5, 3),  # only between teacher updates: steps 3, 6
        ("random", {"seed": 2}, 3, 7, 6),  # the teacher's numpy generator
        ("l2t-dlf", {"seed": 1}, 2, 5, 4),  # mu's weights (SGD and the proximity term: the default)
        ("l2t-dlf", {"seed": 1, "optimizer": "adam", "proximity": 0.0}, 2, 5, 4),  # mu's weights and Adam moments
        ("l2t-dfm", {"hidden": 8}, 2, 5, 4),  # GRU weights, Adam moments, hidden state, confidences
    ],
)
def test_resume_after_a_crash_equals_the_uninterrupted_run(tmp_path, name, kwargs, every, crash, resumed_at):
    reference = run_episode(*new_run(name, **kwargs), seed=4)
    path = tmp_path / "episode.pt"
    with pytest.raises(Crash):
        run_checkpointed_episode(*new_run(name, **kwargs), 4, checkpoint_every=every, path=path, on_step=crash_at(crash))
    assert path.is_file()
    resumed = []
    record = run_checkpointed_episode(*new_run(name, **kwargs), 4, checkpoint_every=every, path=path, on_resume=resumed.append)
    assert resumed == [resumed_at]
    same_episode(record, reference)
    assert not path.exists() and not path.with_name(path.name + ".tmp").exists()


def test_checkpoint_of_another_run_raises_naming_both(tmp_path):
    path = tmp_path / "episode.pt"
    with pytest.raises(Crash):
        run_checkpointed_episode(*new_run("random"), 0, checkpoint_every=1, path=path, on_step=crash_at(2))
    with pytest.raises(ValueError, match=r"teacher 'random' on task 'digits-mlp', seed 0; this run is teacher 'random' on task 'digits-mlp', seed 1"):
        run_checkpointed_episode(*new_run("random"), 1, checkpoint_every=1, path=path)
    assert path.is_file()  # kept: it is another run's


def test_half_written_checkpoint_is_ignored_and_bad_every_raises(tmp_path):
    path = tmp_path / "episode.pt"
    path.with_name(path.name + ".tmp").write_bytes(b"half a checkpoint")  # killed while writing
    record = run_checkpointed_episode(*new_run("fixed"), 0, checkpoint_every=2, path=path)
    same_episode(record, run_episode(*new_run("fixed"), seed=0))
    assert list(tmp_path.iterdir()) == []
    save_atomic({"a": 1}, path)
    save_atomic({"a": 2}, path)
    assert torch.load(path) == {"a": 2} and list(tmp_path.iterdir()) == [path]
    for bad in (0, -3, 1.5, True, "10"):
        with pytest.raises(ValueError, match=rf"checkpoint_every={bad!r}: expected an integer >= 1"):
            check_checkpoint_every(bad)


def test_bench_resumes_a_run_from_its_checkpoint_and_keeps_the_run_key(tmp_path):
    # one-by-one runs: a batch of seeds (batch_seeds) writes no mid-episode checkpoints
    bench = {"tasks": [{"name": "digits-mlp", "overrides": TINY}], "teachers": ["l2t-dln"], "seeds": [3], "batch_seeds": False}
    plain = run_bench(load_bench_config(bench), tmp_path / "plain", quiet=True)
    cfg = load_bench_config({**bench, "checkpoint_every": 2})
    (run,) = plan_runs(cfg)
    assert run.key == plain[0]["key"]  # checkpointing does not change what a run is
    out = tmp_path / "ckpt"
    path = checkpoint_path(out, run)
    with pytest.raises(Crash):  # a run killed after its checkpoint at step 4
        # the env the bench makes: early stopping monitored on the bench's cadence
        env, teacher = new_run("l2t-dln", monitor_every=cfg.monitor_every(run.task))
        run_checkpointed_episode(env, teacher, 3, checkpoint_every=2, path=path, on_step=crash_at(5))
    (resumed,) = run_bench(cfg, out, quiet=True)
    for key in ("key", "test_acc", "val_acc", "train_loss", "curves", "teaching_steps", "student_steps"):
        assert resumed[key] == plain[0][key], key
    assert not path.exists()
    with pytest.raises(ValueError, match="checkpoint_every=0"):
        load_bench_config({**bench, "checkpoint_every": 0})


def test_sigkilled_teach_resumes_to_the_uninterrupted_record(tmp_path):
    """``l2t teach --checkpoint-every``: SIGKILL mid-episode after a checkpoint, rerun, same record
    as an uninterrupted ``l2t teach`` in a process of its own.

    All three processes run with MKL's conditional numerical reproducibility (``MKL_CBWR``, as
    ``--pin-numerics`` sets it): without it about one resumed process in ten took an MKL path that
    rounds the last float32 bit differently (docs/reproducibility.md), whatever the checkpoint held."""
    steps = 40
    common = [
        sys.executable, "-m", "l2t_bench.cli", "teach", "--teacher", "l2t-dln", "--seed", "1", "--quiet",
        "--set", f"teaching_steps={steps}", "--set", "unroll_steps=2", "--set", "student_kwargs={hidden: [16]}",
    ]
    args = [*common, "--checkpoint-every", "3", "--out"]
    env = {**os.environ, "OMP_NUM_THREADS": str(torch.get_num_threads()), "MKL_CBWR": "COMPATIBLE"}
    out = tmp_path / "killed"
    checkpoint = out / "checkpoints" / "l2t-dln_digits-mlp_seed1.pt"
    kill_once_written([*args, str(out)], env, checkpoint)
    assert checkpoint.is_file() and not list(out.glob("*.json"))
    rerun = subprocess.run([*args, str(out)], env=env, capture_output=True, text=True)
    assert rerun.returncode == 0, rerun.stderr[-2000:]
    assert "resumed from" in rerun.stdout
    assert not checkpoint.exists()
    (record_file,) = out.glob("*.json")
    record = json.loads(record_file.read_text())["record"]

    plain = tmp_path / "uninterrupted"
    subprocess.run([*common, "--out", str(plain)], env=env, check=True, capture_output=True)
    (reference_file,) = plain.glob("*.json")
    reference = json.loads(reference_file.read_text())["record"]
    record.pop("wall_time"), reference.pop("wall_time")
    assert record == reference


@pytest.mark.parametrize(
    "flags, message",
    [
        (["--checkpoint-every", "0"], "--checkpoint-every=0: expected an integer >= 1"),
        (["--checkpoint-every", "2", "--episodes", "3"], "checkpoints one episode; got --episodes 3"),
        (["--checkpoint", "x.pt"], "--checkpoint x.pt needs --checkpoint-every N"),
    ],
)
def test_teach_checkpoint_flags_are_checked(tmp_path, capsys, flags, message):
    from l2t_bench.cli import main

    assert main(["teach", "--out", str(tmp_path), "--quiet", *flags]) == 2
    assert message in capsys.readouterr().err
    assert list(tmp_path.iterdir()) == []
