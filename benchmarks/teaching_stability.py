"""Does a teacher keep a good loss good? Per-seed results of teacher variants against a reference.

Reads the ``runs.jsonl`` of ``l2t bench`` runs (for example of ``configs/bench/teaching-stability.yaml``,
the L2T-DLN stabilisers on selection seeds, or ``configs/bench/teaching.yaml``) and, per task:

- prints one line per teacher: seeds, mean, std, min, the number of seeds below ``--floor``, and the
  mean paired difference to ``--reference`` with its 95% bootstrap interval (l2t_bench.stats);
- draws, with ``--plot``, each seed's final test accuracy of every teacher against the reference's
  on the same seed (points below the diagonal: the teacher made that seed worse).

    l2t bench --config teaching-stability --out runs/teaching-stability
    python benchmarks/teaching_stability.py runs/teaching-stability --reference "fixed (ce init)" \
        --plot docs/teaching_stability.png
"""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np

from _common import print_table
from l2t_bench.plots import colours, figure
from l2t_bench.records import RUNS_FILE, read_runs
from l2t_bench.stats import group_runs, summarise


def stability_rows(records: list[dict], reference: str, floor: float) -> list[list]:
    """The printed table: one row per (task, teacher) of ``summarise`` plus min and seeds below floor."""
    groups = group_runs(records)
    rows = []
    for r in summarise(records, reference):
        accs = [x["test_acc"] for x in groups[(r["task"], r["teacher"])] if x.get("test_acc") is not None]
        diff = "-" if not np.isfinite(r["diff_vs_ref_mean"]) else (
            f"{r['diff_vs_ref_mean']:+.3f} [{r['diff_vs_ref_ci_low']:+.3f}, {r['diff_vs_ref_ci_high']:+.3f}]")
        rows.append([r["task"], r["teacher"], r["n"], f"{r['test_acc_mean']:.3f}", f"{r['test_acc_std']:.3f}",
                     f"{min(accs):.3f}" if accs else "-", sum(a < floor for a in accs), diff])
    return rows


def plot_paired(records: list[dict], reference: str, path: Path) -> Path:
    """Per task: each teacher's per-seed test accuracy (y) against the reference's on that seed (x)."""
    groups = group_runs(records)
    tasks = list(dict.fromkeys(t for t, _ in groups))
    teachers = [k for k in dict.fromkeys(k for _, k in groups) if k != reference]
    palette = colours(teachers)
    fig, axes = figure(len(tasks), width=5.5, height=4.8)
    for ax, task in zip(axes, tasks):
        ref = {r["seed"]: r["test_acc"] for r in groups.get((task, reference), [])}
        seen: list[float] = []
        for teacher in teachers:
            pairs = [(ref[r["seed"]], r["test_acc"]) for r in groups.get((task, teacher), [])
                     if r["seed"] in ref and r["test_acc"] is not None and ref[r["seed"]] is not None]
            if pairs:
                x, y = zip(*pairs)
                seen += [*x, *y]
                ax.scatter(x, y, s=18, color=palette[teacher], label=teacher, alpha=0.8)
        lo = max(0.0, min(seen, default=0.0) - 0.02)  # zoom on the data: the diagonal is what matters
        ax.plot([lo, 1], [lo, 1], color="grey", lw=0.8, ls="--")
        ax.set_xlim(lo, 1)
        ax.set_ylim(lo, 1)
        ax.set_xlabel(f"{reference}: final test accuracy (same seed)")
        ax.set_ylabel("teacher: final test accuracy")
        ax.set_title(f"{task}: per seed, vs {reference}")
        ax.grid(alpha=0.3)
    handles = {}
    for ax in axes:
        for h, lab in zip(*ax.get_legend_handles_labels()):
            handles.setdefault(lab, h)
    fig.legend(list(handles.values()), list(handles), loc="outside right upper", fontsize=8)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=120)
    return path


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("out", type=Path, help="an `l2t bench --out` folder (holding runs.jsonl)")
    parser.add_argument("--reference", default="ce", help="teacher label the others are paired with (default ce)")
    parser.add_argument("--floor", type=float, default=0.9, help="count the seeds below this test accuracy (default 0.9)")
    parser.add_argument("--tasks", nargs="+", help="only these task labels")
    parser.add_argument("--teachers", nargs="+", help="only these teacher labels (the reference is always kept)")
    parser.add_argument("--plot", type=Path, help="write the per-seed paired figure here")
    args = parser.parse_args()
    records = read_runs(args.out / RUNS_FILE)
    if args.tasks:
        records = [r for r in records if r["task"] in args.tasks]
    if args.teachers:
        records = [r for r in records if r["teacher"] in {*args.teachers, args.reference}]
    if not records:
        raise SystemExit(f"no runs in {args.out / RUNS_FILE} (after the filters)")
    print_table(["task", "teacher", "n", "mean", "std", "min", f"< {args.floor}", f"Δ vs {args.reference} [95% CI]"],
                stability_rows(records, args.reference, args.floor), align="llrrrrrl")
    if args.plot:
        print(f"wrote {plot_paired(records, args.reference, args.plot)}")


if __name__ == "__main__":
    main()
