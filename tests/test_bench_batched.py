"""``batch_seeds``: the seeds of a batching teacher run as one vector env, one record per seed, resumable."""

from __future__ import annotations

import json

import pytest

from l2t_bench.bench import load_bench_config, plan_runs
from l2t_bench.runner import batch_groups, run_bench

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
