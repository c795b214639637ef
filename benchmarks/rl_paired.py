"""Issue 18: paired differences of teachers against chosen reference rows of a bench folder.

The report's Δ columns compare every row with the task's best baseline; the research question of
an RL teacher also asks whether it beats its own controls: the random teacher of the same action
space and the loss it starts from, left alone. For each task, teacher and reference this prints
the mean paired difference over the seeds both have, with its 95% bootstrap interval, for the
final and the early-stopped test accuracy, and marks intervals that lie above zero. Grid entries
count as their per-seed validation choice, as in the report.

    python benchmarks/rl_paired.py runs/rl --teachers ppo a2c sac td3 "ppo (agent seed 1)" \\
        --references "random (control)" ce best
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from l2t_bench.records import RUNS_FILE, read_runs
from l2t_bench.selection import mark_baselines, select_grid
from l2t_bench.stats import best_baselines, group_runs, paired_difference

METRICS = (("final", "test_acc"), ("early", "test_acc_at_best_val"))  # best_baselines' column names


def per_seed(runs: list[dict], key: str) -> dict[int, float]:
    out = {}
    for r in runs:
        value = r.get(key)
        if value is not None:
            out[int(r["seed"])] = float(value)
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("folder", type=Path, help="a bench output folder (holding runs.jsonl)")
    parser.add_argument("--teachers", nargs="+", required=True, help="teacher labels to compare")
    parser.add_argument("--references", nargs="+", required=True, help="reference labels; 'best' = the task's best baseline")
    args = parser.parse_args()
    records = select_grid(mark_baselines(read_runs(args.folder / RUNS_FILE)))
    groups = group_runs(records)
    best = best_baselines(groups)
    tasks = sorted({task for task, _ in groups}, key=lambda t: [r["task"] for r in records].index(t))
    print("| task | teacher | reference | n | Δ final [95% CI] | Δ early-stopped [95% CI] |")
    print("|---|---|---|---:|---:|---:|")
    for task in tasks:
        for teacher in args.teachers:
            if (task, teacher) not in groups:
                continue
            for ref in args.references:
                cells, n = [], 0
                for name, key in METRICS:
                    label = best.get(task, {}).get(name, ref) if ref == "best" else ref
                    if (task, label) not in groups:
                        cells.append("—")
                        continue
                    d = paired_difference(per_seed(groups[(task, teacher)], key), per_seed(groups[(task, label)], key))
                    n = d["n"]
                    mark = " **above 0**" if d["ci_low"] > 0 else (" below 0" if d["ci_high"] < 0 else "")
                    cells.append(f"{d['mean']:+.3f} [{d['ci_low']:+.3f}, {d['ci_high']:+.3f}]{mark}" + (f" ({label})" if ref == "best" else ""))
                print(f"| {task} | {teacher} | {ref} | {n} | {cells[0]} | {cells[1]} |")


if __name__ == "__main__":
    sys.exit(main())
