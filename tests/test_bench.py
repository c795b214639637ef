"""``l2t bench``: the smoke benchmark end to end, resuming after a kill, and the summary statistics."""

from __future__ import annotations

import json
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

from l2t_bench import cli
from l2t_bench.config import load_bench_config, plan_runs
from l2t_bench.records import read_runs, repair_runs_file
from l2t_bench.stats import bootstrap_ci, iqm, paired_difference, summarise

REPO = Path(__file__).resolve().parent.parent
ALL_TEACHERS = {"ce", "fixed", "random", "hypergrad", "l2t-dln", "l2t-dlf", "l2t-dfm", "ppo", "a2c", "sac", "td3"}
SMOKE_SEEDS = [0, 1]


def _complete_lines(path: Path) -> list[str]:
    """The lines of a runs.jsonl that were finished (a killed writer may leave a fragment after the last newline)."""
    if not path.exists():
        return []
    return path.read_text().split("\n")[:-1]


@pytest.fixture(scope="module")
def smoke(tmp_path_factory):
    """Start the smoke bench in a subprocess, SIGKILL it once the first runs are on disk, rerun it.

    Returns the output folder and the lines that were finished before the kill.
    """
    pytest.importorskip("stable_baselines3")
    out = tmp_path_factory.mktemp("smoke")
    runs = out / "runs.jsonl"
    cmd = [sys.executable, "-m", "l2t_bench.cli", "bench", "--config", "smoke", "--out", str(out), "--quiet"]
    proc = subprocess.Popen(cmd, cwd=REPO, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    deadline = time.monotonic() + 180
    try:
        while not _complete_lines(runs):
            if proc.poll() is not None:
                pytest.fail(f"the bench exited ({proc.returncode}) before writing a run: {proc.stderr.read().decode()[-2000:]}")
            if time.monotonic() > deadline:
                pytest.fail("no run finished within 180 s")
            time.sleep(0.02)
    finally:
        proc.send_signal(signal.SIGKILL)
        proc.wait()
    before = _complete_lines(runs)
    assert 1 <= len(before) < 2 * len(ALL_TEACHERS), "the kill came too late to test resuming"
    assert cli.main(["bench", "--config", "smoke", "--out", str(out), "--quiet"]) == 0
    return out, before


def test_resume_keeps_finished_runs(smoke):
    out, before = smoke
    after = _complete_lines(out / "runs.jsonl")
    assert after[: len(before)] == before  # kept as they were: same lines, same values
    keys = [json.loads(line)["key"] for line in after]
    assert len(keys) == len(set(keys)) == 2 * len(ALL_TEACHERS)  # not repeated, and the rest completed
    plan = plan_runs(load_bench_config("smoke"))
    assert set(keys) == {r.key for r in plan}


def test_rerun_of_a_finished_bench_adds_nothing(smoke):
    out, _ = smoke
    text = (out / "runs.jsonl").read_text()
    agents = sorted(p.name for p in (out / "agents").iterdir())
    assert cli.main(["bench", "--config", "smoke", "--out", str(out), "--quiet"]) == 0
    assert (out / "runs.jsonl").read_text() == text
    assert sorted(p.name for p in (out / "agents").iterdir()) == agents


def test_every_teacher_ran(smoke):
    out, _ = smoke
    records = read_runs(out / "runs.jsonl")
    assert {r["teacher"] for r in records} == ALL_TEACHERS
    for teacher in ALL_TEACHERS:
        assert sorted(r["seed"] for r in records if r["teacher"] == teacher) == SMOKE_SEEDS
    for r in records:
        assert 0.0 <= r["test_acc"] <= 1.0 and np.isfinite(r["test_loss"])
        assert len(r["curves"]["val_acc"]) == r["teaching_steps"] + 1 == 4
        assert r["auc_val_acc"] == pytest.approx(np.mean(r["curves"]["val_acc"]))
        assert r["best_val_acc"] == pytest.approx(max(r["curves"]["val_acc"]))
        assert r["student_steps"] == 3 * 15 and r["steps_per_s"] > 0
        assert r["diverged"] in (True, False)
    trained = {r["teacher"]: r["agent"] for r in records if r["agent"]}
    assert set(trained) == {"ppo", "a2c", "sac", "td3"}
    for teacher, agent in trained.items():
        assert (out / agent / "teacher.json").is_file()
        meta = json.loads((out / agent / "teacher.json").read_text())["meta"]
        assert meta["train_seeds"] == [100, 101] and not set(meta["train_seeds"]) & set(SMOKE_SEEDS)


def test_outputs_written(smoke):
    out, _ = smoke
    lines = (out / "summary.csv").read_text().splitlines()
    assert lines[0].startswith("task,teacher,n,test_acc_mean") and len(lines) == 1 + len(ALL_TEACHERS)
    md = (out / "summary.md").read_text()
    assert "| task | teacher | n |" in md and all(f"| {t} |" in md or f"| {t} * |" in md for t in ALL_TEACHERS)
    for png in ("val_curves.png", "test_acc.png"):
        assert (out / png).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_summarise_only(smoke, tmp_path):
    out, _ = smoke
    copy = tmp_path / "copy"
    copy.mkdir()
    (copy / "runs.jsonl").write_text((out / "runs.jsonl").read_text())
    assert cli.main(["bench", "--summarise-only", "--out", str(copy)]) == 0
    assert {p.name for p in copy.iterdir()} >= {"summary.csv", "summary.md", "val_curves.png", "test_acc.png"}


# ---------------------------------------------------------------------------------- statistics
def test_bootstrap_ci_contains_the_mean():
    rng = np.random.default_rng(3)
    for n in (2, 5, 10):
        x = rng.normal(0.9, 0.05, n)
        lo, hi = bootstrap_ci(x)
        assert lo <= x.mean() <= hi
        assert bootstrap_ci(x) == (lo, hi)  # seeded: reproducible
    assert bootstrap_ci([0.5]) == (0.5, 0.5)


def test_iqm_by_hand():
    # 8 values: drop the 2 lowest and the 2 highest, average the middle 4 (rliable's IQM)
    assert iqm([7, 1, 100, 3, 5, 4, -50, 6]) == pytest.approx((3 + 4 + 5 + 6) / 4)
    assert iqm(np.arange(1.0, 9.0)) == pytest.approx(4.5)


def _fake(teacher: str, seed: int, acc: float) -> dict:
    return {"task": "t", "teacher": teacher, "seed": seed, "test_acc": acc, "test_loss": 1.0, "best_val_acc": acc,
            "auc_val_acc": acc, "wall_time": 1.0, "steps_per_s": 10.0, "diverged": False,
            "curves": {"val_acc": [0.1, acc]}}


def test_paired_difference_of_identical_teachers_is_zero():
    accs = {0: 0.91, 1: 0.95, 2: 0.88, 3: 0.93}
    assert paired_difference(accs, dict(accs)) == {"n": 4, "mean": 0.0, "ci_low": 0.0, "ci_high": 0.0}
    records = [_fake(t, s, a) for t in ("ce", "copy") for s, a in accs.items()]
    records += [_fake("better", s, a + 0.01 * (s + 1)) for s, a in accs.items()]
    rows = {r["teacher"]: r for r in summarise(records, "ce")}
    assert rows["copy"]["diff_vs_ref_mean"] == 0.0 and rows["copy"]["n_paired"] == 4
    assert (rows["copy"]["diff_vs_ref_ci_low"], rows["copy"]["diff_vs_ref_ci_high"]) == (0.0, 0.0)
    assert rows["better"]["diff_vs_ref_mean"] == pytest.approx(0.025)
    assert 0.0 < rows["better"]["diff_vs_ref_ci_low"] <= 0.025 <= rows["better"]["diff_vs_ref_ci_high"]
    assert np.isnan(rows["ce"]["diff_vs_ref_mean"])
    assert rows["ce"]["test_acc_mean"] == pytest.approx(np.mean(list(accs.values())))
    assert rows["ce"]["test_acc_std"] == pytest.approx(np.std(list(accs.values()), ddof=1))


def test_paired_difference_uses_common_seeds_only():
    d = paired_difference({0: 0.9, 1: 0.8, 2: 0.7}, {1: 0.7, 2: 0.7, 5: 0.1})
    assert d["n"] == 2 and d["mean"] == pytest.approx(0.05)


# ---------------------------------------------------------------------------------- config checks
BASE = {"tasks": ["digits-mlp"], "teachers": ["ce"], "seeds": [0, 1]}


def test_train_seeds_must_be_disjoint_from_seeds(tmp_path):
    pytest.importorskip("stable_baselines3")
    cfg = {**BASE, "teachers": ["ce", "ppo"], "seeds": [0, 1, 2], "train_seeds": [2, 3]}
    with pytest.raises(ValueError, match=r"train_seeds and seeds share \[2\]"):
        load_bench_config(cfg)
    with pytest.raises(ValueError, match="give 'train_seeds'"):
        load_bench_config({**cfg, "train_seeds": []})
    out = tmp_path / "never-written"
    assert cli.main(["bench", "--config", str(_write(tmp_path, cfg)), "--out", str(out)]) == 2
    assert not out.exists()


def _write(folder: Path, cfg: dict) -> Path:
    import yaml

    path = folder / "bench.yaml"
    path.write_text(yaml.safe_dump(cfg))
    return path


@pytest.mark.parametrize(
    "change, message",
    [
        ({"teachers": ["ce", "nope"]}, r"unknown teacher 'nope'; valid: \[.*'hypergrad'"),
        ({"tasks": ["no-such-task"]}, r"unknown task 'no-such-task'; valid:"),
        ({"tasks": [{"name": "digits-mlp", "overrides": {"teachin_steps": 3}}]}, r"unknown task config key\(s\) \['teachin_steps'\]"),
        ({"seedz": [1]}, r"unknown key\(s\) \['seedz'\]; valid: \[.*'seeds'"),
        ({"teachers": [{"name": "ce", "kwarg": {}}]}, r"unknown key\(s\) \['kwarg'\]; valid: \['name', 'label', 'kwargs', 'env_kwargs', 'pretrain', 'resources', 'grid', 'load'\]"),
        ({"teachers": ["ce", "ce"]}, r"label\(s\) \['ce'\] appear twice"),
        ({"seeds": [0, 0]}, r"seeds repeats seed\(s\) \[0\]"),
        ({"teachers": [{"name": "hypergrad", "kwargs": {"lrr": 1}}]}, r"teacher 'hypergrad': bad kwargs"),
    ],
)
def test_config_errors_name_the_bad_value(change, message):
    with pytest.raises(ValueError, match=message):
        load_bench_config({**BASE, **change})


def test_unknown_builtin_config_lists_the_builtins():
    with pytest.raises(FileNotFoundError, match=r"built-ins: \[.*'quick'.*'smoke'"):
        load_bench_config("no-such-bench")


def test_unfinished_last_line_is_dropped(tmp_path):
    path = tmp_path / "runs.jsonl"
    path.write_text('{"key": "a", "x": 1}\n{"key": "b", "x"')
    assert [r["key"] for r in read_runs(path)] == ["a"]
    assert repair_runs_file(path) == len('{"key": "b", "x"')
    assert path.read_text() == '{"key": "a", "x": 1}\n'


def test_select_plans_a_subset_with_the_same_keys():
    cfg = load_bench_config({"tasks": ["digits-mlp", {"name": "digits-mlp", "label": "short", "overrides": {"teaching_steps": 3}}],
                             "teachers": ["ce", "fixed", "hypergrad"], "seeds": [0, 1]})
    full = {r.key for r in plan_runs(cfg)}
    cfg.select(["short"], ["ce", "hypergrad"])
    subset = plan_runs(cfg)
    assert len(subset) == 4 and {r.key for r in subset} <= full
    assert {(r.task.label, r.teacher.label) for r in subset} == {("short", "ce"), ("short", "hypergrad")}
    with pytest.raises(ValueError, match=r"no teacher labelled \['nope'\] in bench 'bench'; valid: \['ce', 'fixed', 'hypergrad'\]"):
        cfg.select(None, ["nope"])
