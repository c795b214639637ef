"""Early stopping, hyper-parameters chosen on the validation split, and the best-baseline reference."""

from __future__ import annotations

import gymnasium as gym
import numpy as np
import pytest

import l2t_env  # noqa: F401
from l2t_agents.evaluation import early_stopped
from l2t_bench.config import load_bench_config, plan_runs
from l2t_bench.selection import select_grid
from l2t_bench.stats import summarise


def _run(teacher, seed, test, early, *, val=0.5, best_val=0.5, baseline=True, grid_of=None, point=None, task="t"):
    return {"task": task, "teacher": teacher, "seed": seed, "test_acc": test, "test_acc_at_best_val": early,
            "val_acc": val, "best_whole_val_acc": best_val, "baseline": baseline, "grid_of": grid_of,
            "grid_point": point, "wall_time": 1.0, "diverged": False, "curves": {}}


def test_early_stopping_takes_the_first_step_of_best_validation_accuracy():
    curves = {"monitor_step": [0, 5, 10, 15, 20], "monitor_val_acc": [0.1, 0.8, 0.9, 0.9, 0.7],
              "monitor_test_acc": [0.1, 0.75, 0.88, 0.93, 0.6]}
    assert early_stopped(curves) == {"best_val_step": 10, "best_whole_val_acc": 0.9, "test_acc_at_best_val": 0.88}
    # non-finite validation accuracy (a diverged student) is never chosen
    curves["monitor_val_acc"][4] = float("nan")
    assert early_stopped(curves)["best_val_step"] == 10
    assert early_stopped({})["test_acc_at_best_val"] is None


def test_monitor_reports_whole_splits_on_its_cadence_single_and_vector():
    kwargs = dict(task="digits-mlp", loss="ce", lookahead="off", teaching_steps=5, monitor_every=2, device="cpu")
    env = gym.make("L2T-v0", **kwargs)
    _, info = env.reset(seed=3)
    monitored = {0: info["monitor"]}
    for t in range(1, 6):
        *_, info = env.step(np.zeros(0, dtype=np.float32))
        if "monitor" in info:
            monitored[t] = info["monitor"]
    assert sorted(monitored) == [0, 2, 4, 5]  # every 2nd step and the last
    assert monitored[5]["test_acc"] == info["test_acc"] and monitored[5]["val_acc"] == info["final"]["val_acc"]
    # the monitored val accuracy is the whole split's, not the fixed subset's: equal here (reward_val_size 0)
    # only if the subset is the split; check against final_metrics of the final student instead
    assert set(monitored[2]) == {"val_loss", "val_acc", "test_loss", "test_acc"}
    venv = gym.make_vec("L2T-v0", num_envs=2, vectorization_mode="vector_entry_point", **kwargs)
    _, vinfo = venv.reset(seed=3)
    assert vinfo["monitor"]["test_acc"][0] == pytest.approx(monitored[0]["test_acc"], abs=1e-6)
    for t in range(1, 6):
        *_, vinfo = venv.step(np.zeros((2, 0), dtype=np.float32))
        assert ("monitor" in vinfo) == (t in monitored)
        if t in monitored:
            assert vinfo["monitor"]["val_acc"][0] == pytest.approx(monitored[t]["val_acc"], abs=1e-6)
    with pytest.raises(ValueError, match="monitor_every=-1"):
        gym.make("L2T-v0", monitor_every=-1)


def test_grid_rows_pick_per_seed_the_point_of_best_validation_accuracy():
    records = [
        # seed 0: q=0.3 has the better final val, q=0.7 the better early-stopped val
        _run("gce [q=0.3]", 0, 0.80, 0.82, val=0.9, best_val=0.91, grid_of="gce", point={"q": 0.3}),
        _run("gce [q=0.7]", 0, 0.95, 0.96, val=0.8, best_val=0.95, grid_of="gce", point={"q": 0.7}),
        # seed 1: a tie on final val goes to the first point of the grid
        _run("gce [q=0.3]", 1, 0.70, 0.71, val=0.9, best_val=0.9, grid_of="gce", point={"q": 0.3}),
        _run("gce [q=0.7]", 1, 0.90, 0.91, val=0.9, best_val=0.9, grid_of="gce", point={"q": 0.7}),
        # seed 2: a point missing, no selected record yet
        _run("gce [q=0.3]", 2, 0.70, 0.71, grid_of="gce", point={"q": 0.3}),
    ]
    chosen = {r["seed"]: r for r in select_grid(records) if r["teacher"] == "gce"}
    assert sorted(chosen) == [0, 1]
    assert chosen[0]["selected"] == {"q": 0.3} and chosen[0]["test_acc"] == 0.80
    assert chosen[0]["selected_early"] == {"q": 0.7} and chosen[0]["test_acc_at_best_val"] == 0.96
    assert chosen[1]["selected"] == {"q": 0.3} and chosen[1]["test_acc"] == 0.70
    assert chosen[0]["baseline"] and chosen[0]["grid_points"] == 2 and chosen[0]["wall_time"] == 2.0


def test_deltas_are_against_the_best_baseline_of_each_task_final_and_early_separately():
    records = []
    for s in range(6):
        records += [
            _run("ce", s, 0.78, 0.92),
            _run("gce", s, 0.95, 0.94),  # best final baseline
            _run("sce", s, 0.93, 0.95 + 0.001 * s),  # best early-stopped baseline
            _run("teacher", s, 0.90 + 0.01 * s, 0.91, baseline=False),
            _run("gce [q=0.9]", s, 0.99, 0.99, grid_of="gce", point={"q": 0.9}),  # a grid point is not a row to beat
        ]
    rows = {r["teacher"]: r for r in summarise(records)}
    t = rows["teacher"]
    assert (t["reference"], t["reference_early"]) == ("gce", "sce")
    assert t["diff_vs_ref_mean"] == pytest.approx(np.mean([0.90 + 0.01 * s - 0.95 for s in range(6)]))
    assert t["diff_early_vs_ref_mean"] == pytest.approx(np.mean([0.91 - 0.95 - 0.001 * s for s in range(6)]))
    assert t["diff_early_vs_ref_ci_high"] < 0
    assert np.isnan(rows["gce"]["diff_vs_ref_mean"]) and not np.isnan(rows["gce"]["diff_early_vs_ref_mean"])
    # a named reference still works
    assert summarise(records, "ce")[3]["reference"] == "ce"


def test_bench_config_expands_grids_and_keys_the_eval_cadence():
    base = {"tasks": [{"name": "digits-mlp", "overrides": {"teaching_steps": 40}}], "seeds": [0]}
    cfg = load_bench_config({**base, "teachers": ["ce", {"name": "gce", "grid": {"q": [0.3, 0.7]}}]})
    labels = [t.label for t in cfg.teachers]
    assert labels == ["ce", "gce [q=0.3]", "gce [q=0.7]"]
    assert cfg.teachers[1].kwargs == {"q": 0.3} and cfg.teachers[1].grid_of == "gce" and cfg.teachers[1].baseline
    assert cfg.monitor_every(cfg.tasks[0]) == 2  # 40 teaching steps // 20
    keys = {r.key for r in plan_runs(cfg)}
    other = load_bench_config({**base, "eval_every": 5, "teachers": ["ce"]})
    assert other.monitor_every(other.tasks[0]) == 5
    assert plan_runs(other)[0].key not in keys  # the cadence shapes the record, so it is in the key
    with pytest.raises(ValueError, match="eval_every=0"):
        load_bench_config({**base, "eval_every": 0, "teachers": ["ce"]})
    with pytest.raises(ValueError, match="grid="):
        load_bench_config({**base, "teachers": [{"name": "gce", "grid": {"q": []}}]})
    with pytest.raises(ValueError, match=r"\['q'\] in both kwargs and grid"):
        load_bench_config({**base, "teachers": [{"name": "gce", "kwargs": {"q": 0.5}, "grid": {"q": [0.3]}}]})


def test_aggregate_pools_paired_differences_across_tasks_with_task_stratified_intervals():
    from l2t_bench.aggregate import aggregate

    rng = np.random.default_rng(0)
    records = []
    for task in ("a", "b", "c"):
        base = rng.uniform(0.7, 0.9, size=8)
        for s in range(8):
            records += [
                _run("ce", s, base[s], base[s], task=task),
                _run("always better", s, base[s] + 0.01, base[s] + 0.02, baseline=False, task=task),
                # better on task a only: the pooled IQM is below zero, P(better) is one task in three
                _run("mixed", s, base[s] + (0.05 if task == "a" else -0.05), base[s], baseline=False, task=task),
            ]
    rows = {r["teacher"]: r for r in aggregate(records, resamples=500)}
    better = rows["always better"]
    assert better["final_tasks"] == 3
    assert better["final_iqm_diff"] == pytest.approx(0.01) and better["final_poi"] == 1.0
    assert better["final_iqm_diff_low"] == pytest.approx(0.01) and better["early_iqm_diff"] == pytest.approx(0.02)
    mixed = rows["mixed"]
    # 24 differences, 16 of -0.05 and 8 of +0.05: the middle 12 hold 10 and 2 of them
    assert mixed["final_iqm_diff"] == pytest.approx((10 * -0.05 + 2 * 0.05) / 12) and mixed["final_poi"] == pytest.approx(1 / 3)
    # stratified: every resample keeps 8 seeds of each task, so P(better) cannot leave 1/3
    assert mixed["final_poi_low"] == pytest.approx(1 / 3) and mixed["final_poi_high"] == pytest.approx(1 / 3)
    assert "ce" not in rows  # the reference itself is not compared with itself
