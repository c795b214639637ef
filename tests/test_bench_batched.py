"""``batch_seeds``: the seeds of a batching teacher run as one vector env, one record per seed, resumable."""

from __future__ import annotations

import json

import numpy as np
import pytest

from l2t_bench.config import load_bench_config, plan_runs
from l2t_bench.driver import run_bench
from l2t_bench.runner import batch_groups

CONFIG = {
    "name": "batched",
    "tasks": [{"name": "digits-mlp", "overrides": {"teaching_steps": 2, "unroll_steps": 2}}],
    "teachers": ["ce", "random", {"name": "l2t-dln", "kwargs": {"hidden": 8, "layers": 2}}],
    "seeds": [0, 1, 2],
    "device": "cpu",
}


def _records(out):
    return [json.loads(line) for line in (out / "runs.jsonl").read_text().splitlines()]


def test_batched_seeds_give_the_records_of_one_by_one_runs(tmp_path):
    batched = run_bench(load_bench_config(CONFIG), tmp_path / "batched", quiet=True)
    single = run_bench(load_bench_config({**CONFIG, "batch_seeds": False}), tmp_path / "single", quiet=True)
    assert len(batched) == len(single) == 9 and not batched.failures
    for a, b in zip(batched, single):
        assert (a["teacher"], a["seed"]) == (b["teacher"], b["seed"])
        assert a["key"] != b["key"]  # batched and one-by-one results may differ in the last bits
        assert a["teaching_steps"] == b["teaching_steps"] == 2
        for key in ("test_acc", "test_loss", "val_loss", "train_loss"):
            assert a[key] == pytest.approx(b[key], rel=1e-4, abs=1e-5), (a["teacher"], a["seed"], key)


def test_batched_runs_resume_seed_by_seed(tmp_path):
    cfg = load_bench_config({**CONFIG, "teachers": ["random"]})
    groups = batch_groups(cfg, plan_runs(cfg))
    assert [[r.seed for r in g] for g in groups] == [[0, 1, 2]]
    out = tmp_path / "out"
    first = run_bench(cfg, out, quiet=True)
    lines = (out / "runs.jsonl").read_text().splitlines()
    (out / "runs.jsonl").write_text(lines[0] + "\n" + lines[2] + "\n")  # seed 1's record lost
    again = run_bench(cfg, out, quiet=True)
    records = _records(out)
    assert [r["seed"] for r in records] == [0, 2, 1]  # only the missing seed ran again
    redone = next(r for r in again if r["seed"] == 1)
    assert redone["test_acc"] == pytest.approx(first[1]["test_acc"], rel=1e-4, abs=1e-6)


def test_batch_seeds_must_be_a_flag():
    with pytest.raises(ValueError, match="batch_seeds='yes', expected true or false"):
        load_bench_config({**CONFIG, "batch_seeds": "yes"})


# A trained SB3 agent acting frozen on the batch: tiny training (4 env steps), two teaching steps.
SB3 = {
    "name": "batched-sb3",
    "tasks": [{"name": "digits-mlp", "overrides": {"teaching_steps": 2, "unroll_steps": 2}}],
    "teachers": [{"name": "ppo", "kwargs": {"n_steps": 4, "batch_size": 4, "n_epochs": 1}}],
    "seeds": [0, 1, 2],
    "train_seeds": [100],
    "train_timesteps": 4,
    "device": "cpu",
}


def test_trained_sb3_seeds_run_batched_with_one_shared_agent(tmp_path):
    pytest.importorskip("stable_baselines3")
    out = tmp_path / "out"
    cfg = load_bench_config(SB3)
    assert cfg.teachers[0].batched and [[r.seed for r in g] for g in batch_groups(cfg, plan_runs(cfg))] == [[0, 1, 2]]
    batched = run_bench(cfg, out, quiet=True)
    single = run_bench(load_bench_config({**SB3, "batch_seeds": False}), out, quiet=True)  # same folder: same agent
    assert len(batched) == len(single) == 3 and not batched.failures and not single.failures
    agents = list((out / "agents").iterdir())
    assert len(agents) == 1  # trained once: the agent's folder does not depend on batch_seeds
    train_time = json.loads((agents[0] / "teacher.json").read_text())["meta"]["train_time"]
    for a, b in zip(batched, single):
        assert a["seed"] == b["seed"] and a["key"] != b["key"]
        assert a["agent"] == b["agent"] == f"agents/{agents[0].name}"
        assert a["agent_train_time"] == b["agent_train_time"] == train_time
        assert a["teaching_steps"] == b["teaching_steps"] == 2
        for key in ("test_acc", "test_loss", "val_loss", "train_loss"):
            assert a[key] == pytest.approx(b[key], rel=1e-4, abs=1e-5), (a["seed"], key)
        np.testing.assert_allclose(a["curves"]["val_loss"], b["curves"]["val_loss"], rtol=1e-4, atol=1e-5)
    assert len({r["test_loss"] for r in batched}) == 3  # three students, not one repeated


def test_batched_sb3_resume_runs_only_the_missing_seeds_with_the_saved_agent(tmp_path, monkeypatch):
    pytest.importorskip("stable_baselines3")
    from l2t_bench import backends

    cfg = load_bench_config(SB3)
    out = tmp_path / "out"
    first = run_bench(cfg, out, quiet=True)
    lines = (out / "runs.jsonl").read_text().splitlines()
    (out / "runs.jsonl").write_text(lines[1] + "\n")  # seeds 0 and 2 lost

    def no_training(*args, **kwargs):
        raise AssertionError("the saved agent must be reused, not trained again")

    monkeypatch.setattr(backends, "prepare_agent", no_training)
    seen = []
    real = backends.execute_batched
    monkeypatch.setattr(backends, "execute_batched", lambda cfg, runs, *a, **k: seen.append([r.seed for r in runs]) or real(cfg, runs, *a, **k))
    again = run_bench(cfg, out, quiet=True)
    assert seen == [[0, 2]]  # one batch of the two missing seeds
    assert [r["seed"] for r in _records(out)] == [1, 0, 2]
    for a, b in zip(first, again):
        assert a["key"] == b["key"] and a["agent"] == b["agent"]
        assert a["test_acc"] == pytest.approx(b["test_acc"], rel=1e-4, abs=1e-6)


def test_pretrained_teachers_stay_one_by_one():
    cfg = load_bench_config({**CONFIG, "teachers": ["l2t-dln", {"name": "l2t-dln", "label": "pre", "pretrain": {"seeds": [50], "episodes": 1}}]})
    assert [t.batched for t in cfg.teachers] == [True, False]
    assert [[r.seed for r in g] for g in batch_groups(cfg, plan_runs(cfg))] == [[0, 1, 2], [0], [1], [2]]
