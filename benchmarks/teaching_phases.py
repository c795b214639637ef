"""Issue 17 section 4: in which phase of the episode does a teacher gain (or lose) against a reference?

Reads one or more ``runs.jsonl`` of ``l2t bench`` and, for one task, pairs each seed's curve of a
teacher row with the same seed's curve of a reference row (e.g. ``l2t-dln (ce init, stabilised)``
against ``fixed (ce init)``, or against the best baseline ``gce``). Per curve it gives the paired
difference (teacher - reference) over teaching steps: its mean across seeds with a 95% percentile
bootstrap interval (``l2t_bench.stats.bootstrap_ci``), the step where the mean peaks and where it
bottoms, its value at 25/50/75/100% of the episode, and what each quarter adds (the change of the
mean difference over that quarter: where the difference is gained or lost).

Curves (those the records hold): ``val_acc`` (the fixed validation subset, every teaching step;
entry 0 is before teaching), ``monitor_val_acc`` and ``monitor_test_acc`` (the whole validation and
test splits every ``eval_every`` steps, at ``curves["monitor_step"]``). A seed whose run diverged
has a shorter curve: its missing steps are left out of the mean (the table prints n per phase).

    python benchmarks/teaching_phases.py --runs runs/teaching/runs.jsonl --task digits-mlp-noisy \
        --teacher "l2t-dln (ce init, stabilised)" --reference "fixed (ce init)" \
        --out runs/teaching/phases.png --json runs/teaching/phases.json
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any, Optional, Sequence

REPO = Path(__file__).resolve().parents[1]
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))

import numpy as np  # noqa: E402

from l2t_bench.records import read_runs  # noqa: E402
from l2t_bench.stats import bootstrap_ci  # noqa: E402

CURVES = ("val_acc", "monitor_val_acc", "monitor_test_acc")
FRACTIONS = (0.25, 0.5, 0.75, 1.0)


def _runs_of(records: Sequence[dict], task: str, teacher: str) -> dict[int, dict]:
    """The records of (task, teacher) by seed; the task matches its bench label or its task name."""
    mine = [r for r in records if task in (r.get("task"), r.get("task_name")) and r.get("teacher") == teacher]
    if not mine:
        tasks = sorted({str(r.get("task")) for r in records})
        teachers = sorted({str(r.get("teacher")) for r in records if task in (r.get("task"), r.get("task_name"))})
        raise ValueError(f"no runs of teacher {teacher!r} on task {task!r}; tasks: {tasks}; teachers on that task: {teachers}")
    by_seed: dict[int, dict] = {}
    for r in mine:
        by_seed.setdefault(int(r["seed"]), r)  # first record per seed (several runs files: the first given wins)
    return by_seed


def _curve(record: dict, curve: str) -> tuple[np.ndarray, np.ndarray]:
    """``(steps, values)`` of one record's curve: val_acc per teaching step (0 = before teaching),
    a monitor curve at ``monitor_step``."""
    curves = record.get("curves") or {}
    values = np.asarray([np.nan if v is None else v for v in curves.get(curve) or []], dtype=float)
    if curve.startswith("monitor_"):
        steps = np.asarray(curves.get("monitor_step") or [], dtype=int)
        if len(steps) != len(values):
            raise ValueError(f"seed {record.get('seed')}: {curve} has {len(values)} entries, monitor_step {len(steps)}")
    else:
        steps = np.arange(len(values))
    return steps, values


def paired_differences(records: Sequence[dict], task: str, teacher: str, reference: str, curve: str) -> dict[str, Any]:
    """Per seed present in both rows, teacher minus reference on the union of their steps (NaN where
    either run has no value, e.g. after a divergence): ``{"steps", "seeds", "diffs" [seeds, steps]}``."""
    if curve not in CURVES:
        raise ValueError(f"curve={curve!r}, expected one of {list(CURVES)}")
    mine, ref = _runs_of(records, task, teacher), _runs_of(records, task, reference)
    seeds = sorted(set(mine) & set(ref))
    if not seeds:
        raise ValueError(f"teacher {teacher!r} (seeds {sorted(mine)}) and reference {reference!r} (seeds {sorted(ref)}) share no seed")
    pairs = [(_curve(mine[s], curve), _curve(ref[s], curve)) for s in seeds]
    steps = np.unique(np.concatenate([np.concatenate([a[0], b[0]]) for a, b in pairs]))
    if steps.size == 0:
        raise ValueError(f"the runs hold no {curve!r} curve (monitor curves need the bench's eval_every)")
    diffs = np.full((len(seeds), steps.size), np.nan)
    for i, ((sa, va), (sb, vb)) in enumerate(pairs):
        a = np.full(steps.size, np.nan)
        b = np.full(steps.size, np.nan)
        a[np.searchsorted(steps, sa)] = va
        b[np.searchsorted(steps, sb)] = vb
        diffs[i] = a - b
    return {"steps": steps, "seeds": seeds, "diffs": diffs}


def mean_and_interval(diffs: np.ndarray, *, resamples: int = 10_000, seed: int = 0) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Per step: mean over the finite seeds, bootstrap 95% interval, and n."""
    n = np.isfinite(diffs).sum(0)
    with np.errstate(invalid="ignore"):
        mean = np.where(n > 0, np.nansum(diffs, 0) / np.maximum(n, 1), np.nan)
    ci = np.asarray([bootstrap_ci(col, resamples=resamples, seed=seed) for col in diffs.T])
    return mean, ci[:, 0], ci[:, 1], n


def at_fraction(steps: np.ndarray, fraction: float) -> int:
    """Index of the step nearest ``fraction`` of the episode (ties: the earlier one); the episode's
    last step is the largest step present."""
    if not 0.0 <= fraction <= 1.0:
        raise ValueError(f"fraction={fraction!r}, expected within [0, 1]")
    return int(np.argmin(np.abs(steps - fraction * steps.max())))


def phase_summary(steps: np.ndarray, mean: np.ndarray, low: Optional[np.ndarray] = None,
                  high: Optional[np.ndarray] = None, n: Optional[np.ndarray] = None) -> dict[str, Any]:
    """Where the mean difference peaks and bottoms, its value at 25/50/75/100% of the episode and
    what each quarter adds (the change from the previous point; the first from the first step)."""
    steps = np.asarray(steps)
    mean = np.asarray(mean, dtype=float)
    if not np.isfinite(mean).any():
        raise ValueError("the mean difference has no finite value")
    peak, trough = int(np.nanargmax(mean)), int(np.nanargmin(mean))
    out: dict[str, Any] = {
        "first_step": int(steps[0]), "last_step": int(steps.max()),
        "peak_step": int(steps[peak]), "peak": float(mean[peak]),
        "trough_step": int(steps[trough]), "trough": float(mean[trough]),
        "phases": [],
    }
    prev = float(mean[0])
    for frac in FRACTIONS:
        i = at_fraction(steps, frac)
        value = float(mean[i])
        phase = {"fraction": frac, "step": int(steps[i]), "mean": value, "gain": value - prev}
        if low is not None and high is not None:
            phase["ci"] = [float(low[i]), float(high[i])]
        if n is not None:
            phase["n"] = int(n[i])
        out["phases"].append(phase)
        prev = value
    return out


def analyse(records: Sequence[dict], task: str, teacher: str, reference: str, curves: Sequence[str],
            resamples: int = 10_000) -> dict[str, Any]:
    out: dict[str, Any] = {"task": task, "teacher": teacher, "reference": reference, "curves": {}}
    for curve in curves:
        try:
            pd = paired_differences(records, task, teacher, reference, curve)
        except ValueError as err:
            if curve == curves[0] or "no " + repr(curve) not in str(err):
                raise
            print(f"skipping {curve}: {err}")
            continue
        mean, low, high, n = mean_and_interval(pd["diffs"], resamples=resamples)
        out["curves"][curve] = {
            "seeds": pd["seeds"], "steps": pd["steps"].tolist(), "mean": mean.tolist(), "ci_low": low.tolist(),
            "ci_high": high.tolist(), "n": n.tolist(), "per_seed": pd["diffs"].tolist(),
            "summary": phase_summary(pd["steps"], mean, low, high, n),
        }
    return out


def print_report(out: dict[str, Any]) -> None:
    print(f"{out['task']}: {out['teacher']!r} minus {out['reference']!r} (mean over seeds [95% bootstrap interval])")
    for curve, c in out["curves"].items():
        s = c["summary"]
        print(f"\n{curve} ({len(c['seeds'])} seeds, steps {s['first_step']}..{s['last_step']}): "
              f"peak {s['peak']:+.4f} at step {s['peak_step']}, lowest {s['trough']:+.4f} at step {s['trough_step']}")
        print(f"{'episode':>8} | {'step':>5} | {'difference':>28} | {'n':>3} | {'this quarter adds':>17}")
        for p in s["phases"]:
            ci = f"[{p['ci'][0]:+.4f}, {p['ci'][1]:+.4f}]" if "ci" in p else ""
            print(f"{p['fraction']:>7.0%} | {p['step']:>5} | {p['mean']:+.4f} {ci:>20} | {p.get('n', ''):>3} | {p['gain']:>+17.4f}")


def plot(out: dict[str, Any], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    curves = out["curves"]
    fig, axes = plt.subplots(1, len(curves), figsize=(4.6 * len(curves), 3.8), squeeze=False)
    for ax, (curve, c) in zip(axes[0], curves.items()):
        steps = np.asarray(c["steps"])
        for row in c["per_seed"]:
            ax.plot(steps, row, color="grey", lw=0.6, alpha=0.5)
        ax.fill_between(steps, c["ci_low"], c["ci_high"], color="C0", alpha=0.25, lw=0)
        ax.plot(steps, c["mean"], color="C0", lw=1.8, label="mean (95% bootstrap band)")
        ax.axhline(0, color="k", lw=0.8)
        for p in c["summary"]["phases"]:
            ax.axvline(p["step"], color="k", ls=":", lw=0.7)
        s = c["summary"]
        ax.plot([s["peak_step"]], [s["peak"]], "v", color="C3", label=f"peak {s['peak']:+.3f} @ {s['peak_step']}")
        ax.set_title(curve, fontsize=9)
        ax.set_xlabel("teaching step (dotted: 25/50/75/100%)")
        ax.set_ylabel("teacher - reference (grey: seeds)")
        ax.legend(fontsize=7)
    fig.suptitle(f"{out['task']}: {out['teacher']} minus {out['reference']}", fontsize=10)
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110)
    plt.close(fig)


def main(argv: Optional[Sequence[str]] = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=Path, nargs="+", required=True, help="runs.jsonl file(s) of l2t bench (or their folders)")
    parser.add_argument("--task", required=True, help="task label (or task name) of the records")
    parser.add_argument("--teacher", required=True, help="the teacher row's label")
    parser.add_argument("--reference", required=True, help="the reference row's label, e.g. 'fixed (ce init)' or 'gce'")
    parser.add_argument("--curves", nargs="+", default=list(CURVES), choices=CURVES,
                        help="curves to compare (default: all; monitor curves are skipped when absent)")
    parser.add_argument("--resamples", type=int, default=10_000, help="bootstrap resamples per step")
    parser.add_argument("--out", type=Path, default=None, help="PNG of the difference curves")
    parser.add_argument("--json", type=Path, default=None, help="the numbers as JSON")
    args = parser.parse_args(argv)
    records: list[dict] = []
    for path in args.runs:
        path = path / "runs.jsonl" if path.is_dir() else path
        if not path.is_file():
            raise SystemExit(f"--runs {path}: no such file (expected a runs.jsonl of l2t bench)")
        records += read_runs(path)
    out = analyse(records, args.task, args.teacher, args.reference, args.curves, args.resamples)
    print_report(out)
    if args.out:
        plot(out, args.out)
        print(f"\nwrote {args.out}")
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps(out, indent=1))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
