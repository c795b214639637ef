"""benchmarks/teaching_phases.py: the paired-difference arithmetic on synthetic bench records."""

from __future__ import annotations

import importlib.util
import json
from pathlib import Path

import numpy as np
import pytest

SCRIPT = Path(__file__).resolve().parents[1] / "benchmarks" / "teaching_phases.py"
spec = importlib.util.spec_from_file_location("teaching_phases", SCRIPT)
phases = importlib.util.module_from_spec(spec)
spec.loader.exec_module(phases)

STEPS = 40
OFFSETS = {0: 0.01, 1: 0.0, 2: -0.01}  # per-seed offsets that cancel in the mean


def known_difference(t: np.ndarray) -> np.ndarray:
    """Rises linearly to +0.1 at step 30, then falls back to 0 at step 40."""
    return np.where(t <= 30, 0.1 * t / 30, 0.1 - 0.1 * (t - 30) / 10)


def record(teacher: str, seed: int, diff: bool, steps: int = STEPS) -> dict:
    t = np.arange(steps + 1)
    base = 0.5 + 0.001 * seed * t  # a reference curve that differs by seed: only the pairing cancels it
    val = base + (known_difference(t) + OFFSETS[seed] * (t > 0) if diff else 0.0)
    mon = t[::5]
    return {
        "key": f"{teacher}-{seed}", "task": "toy", "task_name": "digits-mlp-noisy", "teacher": teacher, "seed": seed,
        "curves": {"val_acc": val.tolist(), "monitor_step": mon.tolist(), "monitor_val_acc": val[mon].tolist(),
                   "monitor_test_acc": (val[mon] - 0.02).tolist()},
    }


def records() -> list[dict]:
    return [record(name, s, name == "teacher") for name in ("teacher", "reference") for s in OFFSETS]


def test_known_curve_gives_known_peak_and_phases():
    out = phases.analyse(records(), "toy", "teacher", "reference", list(phases.CURVES), resamples=500)
    for curve in phases.CURVES:
        c = out["curves"][curve]
        s = c["summary"]
        assert c["seeds"] == [0, 1, 2]
        assert s["peak_step"] == 30 and s["peak"] == pytest.approx(0.1)
        assert s["last_step"] == 40
        assert [p["step"] for p in s["phases"]] == [10, 20, 30, 40]
        values = [p["mean"] for p in s["phases"]]
        assert values == pytest.approx([0.1 / 3, 0.2 / 3, 0.1, 0.0], abs=1e-12)
        gains = [p["gain"] for p in s["phases"]]
        assert gains == pytest.approx([0.1 / 3, 0.1 / 3, 0.1 / 3, -0.1], abs=1e-12)
        for p in s["phases"]:  # the interval holds the mean and, with seed spread, is not a point
            assert p["ci"][0] < p["mean"] < p["ci"][1]
            assert p["n"] == 3
    assert out["curves"]["val_acc"]["steps"] == list(range(STEPS + 1))
    assert out["curves"]["monitor_val_acc"]["steps"] == list(range(0, STEPS + 1, 5))


def test_trough_and_task_name_and_reversed_rows():
    out = phases.analyse(records(), "digits-mlp-noisy", "reference", "teacher", ["val_acc"], resamples=200)
    s = out["curves"]["val_acc"]["summary"]
    assert s["trough_step"] == 30 and s["trough"] == pytest.approx(-0.1)
    assert s["peak_step"] == 0 and s["peak"] == pytest.approx(0.0)


def test_diverged_seed_counts_only_where_it_ran():
    recs = records()
    short = next(r for r in recs if r["teacher"] == "teacher" and r["seed"] == 0)
    short["curves"]["val_acc"] = short["curves"]["val_acc"][:21]  # ran to step 20 only
    out = phases.analyse(recs, "toy", "teacher", "reference", ["val_acc"], resamples=200)
    c = out["curves"]["val_acc"]
    assert c["n"][20] == 3 and c["n"][21] == 2
    # after step 20 the mean is over seeds 1 and 2 (offsets 0 and -0.01)
    assert c["mean"][30] == pytest.approx(0.1 - 0.005)


def test_bad_rows_and_curves_raise():
    with pytest.raises(ValueError, match="no runs of teacher 'nope'.*teachers on that task"):
        phases.analyse(records(), "toy", "nope", "reference", ["val_acc"])
    with pytest.raises(ValueError, match="curve='loss'"):
        phases.paired_differences(records(), "toy", "teacher", "reference", "loss")
    with pytest.raises(ValueError, match="fraction=1.5"):
        phases.at_fraction(np.arange(5), 1.5)


def test_cli_writes_json_and_png(tmp_path, capsys):
    runs = tmp_path / "runs.jsonl"
    runs.write_text("".join(json.dumps(r) + "\n" for r in records()))
    png, js = tmp_path / "p.png", tmp_path / "p.json"
    assert phases.main(["--runs", str(runs), "--task", "toy", "--teacher", "teacher", "--reference", "reference",
                        "--out", str(png), "--json", str(js), "--resamples", "200"]) == 0
    assert png.stat().st_size > 0
    assert json.loads(js.read_text())["curves"]["monitor_test_acc"]["summary"]["peak_step"] == 30
    assert "peak +0.1000 at step 30" in capsys.readouterr().out
