"""The summary of a benchmark: the printed table, ``summary.csv``/``summary.md`` and the plots."""

from __future__ import annotations

import csv
from pathlib import Path
from typing import Optional, Sequence, Union

import numpy as np
from rich.console import Console
from rich.table import Table

from l2t_bench.numerics import describe
from l2t_bench.aggregate import aggregate, write_aggregate
from l2t_bench.learning_curves import plot_curves, read_curve
from l2t_bench.plots import fmt, plot_test_acc, plot_val_curves
from l2t_bench.selection import mark_baselines, select_grid
from l2t_bench.stats import summarise


def _diff(r: dict, name: str) -> str:
    if not np.isfinite(r[f"{name}_mean"]):
        return "—"
    return f"{r[f'{name}_mean']:+.3f} [{r[f'{name}_ci_low']:+.3f}, {r[f'{name}_ci_high']:+.3f}]"


def reference_note(rows: Sequence[dict]) -> str:
    """Which row each task's Δ columns compare with (the best baseline, or the named reference)."""
    refs: dict[str, tuple] = {}
    for r in rows:
        refs.setdefault(r["task"], (r["reference"], r["reference_early"]))
    return "; ".join(f"{task}: final vs {final or '—'}, early-stopped vs {early or '—'}" for task, (final, early) in refs.items())


def _display_rows(rows: Sequence[dict]) -> tuple[list[str], list[list[str]]]:
    """The printed table: grid points left out (their tuned row stands for them; ``summary.csv`` has them)."""
    header = ["task", "teacher", "n", "final acc ± std", "95% CI", "early-stop acc ± std", "Δ final [95% CI]",
              "Δ early-stop [95% CI]", "best step", "wall s", "div"]
    body = []
    for r in rows:
        if r.get("grid_of"):
            continue
        mark = " *" if r["teacher"] in (r["reference"], r["reference_early"]) else ""
        body.append([
            r["task"], r["teacher"] + mark, str(r["n"]),
            f"{fmt(r['test_acc_mean'], 3)} ± {fmt(r['test_acc_std'], 3)}",
            f"[{fmt(r['test_acc_ci_low'], 3)}, {fmt(r['test_acc_ci_high'], 3)}]",
            f"{fmt(r['early_acc_mean'], 3)} ± {fmt(r['early_acc_std'], 3)}",
            _diff(r, "diff_vs_ref"), _diff(r, "diff_early_vs_ref"),
            fmt(r["best_val_step_mean"], 0), fmt(r["wall_time_mean"], 1), str(r["diverged"]),
        ])
    return header, body


def summary_table(rows: Sequence[dict], title: str = "test accuracy across seeds") -> Table:
    """The summary as a rich table (what ``l2t bench`` prints). Columns: seeds (n), mean ± std and
    95% bootstrap CI of the final test accuracy, mean ± std of the early-stopped test accuracy (at
    the best whole-validation step), the paired differences of both to the reference (the task's
    best baseline, marked *), the mean best step, episode wall time, diverged runs."""
    header, body = _display_rows(rows)
    table = Table(title=title, caption="Δ: " + reference_note(rows))
    for i, name in enumerate(header):
        table.add_column(name, justify="left" if i < 2 else "right", no_wrap=True)
    for line in body:
        table.add_row(*line)
    return table


def write_summary(rows: Sequence[dict], out: Union[str, Path], *, resamples: int = 10_000) -> tuple[Path, Path]:
    """``summary.csv`` (every number, full precision) and ``summary.md`` (the printed table)."""
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    csv_path, md_path = out / "summary.csv", out / "summary.md"
    with csv_path.open("w", newline="") as fh:
        writer = csv.DictWriter(fh, fieldnames=list(rows[0]) if rows else ["task", "teacher"])
        writer.writeheader()
        writer.writerows(rows)
    header, body = _display_rows(rows)
    lines = [
        "# Benchmark summary",
        "",
        f"Test accuracy across evaluation seeds: of the final student, and early-stopped (the student at the teaching step "
        "of its best accuracy on the whole validation split, checked every `eval_every` steps; `best step` is that step's "
        f"mean). CI: percentile bootstrap of the mean ({resamples:,} resamples). Δ: mean paired difference on the same task "
        "and seeds, with its bootstrap CI, against the reference below (by default the task's best baseline, separately for "
        "the final and the early-stopped column; marked *). Rows of hyper-parameter grid points are in summary.csv; the row "
        "named after the grid entry picks a point per seed on the validation split. Wall time is per episode.",
        "",
        "Δ: " + reference_note(rows),
        "",
        "| " + " | ".join(header) + " |",
        "|" + "|".join(["---"] * 2 + ["---:"] * (len(header) - 2)) + "|",
        *("| " + " | ".join(line) + " |" for line in body),
        "",
    ]
    md_path.write_text("\n".join(lines))
    return csv_path, md_path


def plot_learning_curves(records: Sequence[dict], out: Path) -> list[Path]:
    """``learning_curves.png``: the learning curves of the trained agents these records used (those
    trained with the bench's ``train_eval``), one row of panels per task; [] when there are none."""
    agents = {(r["task"], r["teacher"]): out / r["agent"] for r in records if r.get("agent")}
    by_task: dict[str, dict[str, list]] = {}
    for (task, teacher), folder in sorted(agents.items()):
        rows = read_curve(folder / "learning_curve.csv") if folder.is_dir() else []
        if rows:
            by_task.setdefault(task, {})[teacher] = rows
    if not by_task:
        return []
    return [plot_curves(by_task, out / "learning_curves.png", title="trained agents on held-out seeds (mean, 95% interval)")]


def report(records: Sequence[dict], out: Union[str, Path], reference: str = "best", console: Optional[Console] = None) -> list[dict]:
    """Summarise records (with the tuned rows of grid entries, :func:`l2t_bench.selection.select_grid`)
    and write ``summary.csv``/``summary.md``/``val_curves.png``/``test_acc.png``."""
    out = Path(out)
    records = select_grid(mark_baselines(records))
    rows = summarise(records, reference)
    csv_path, md_path = write_summary(rows, out)
    curves = plot_val_curves(records, out / "val_curves.png")
    bars = plot_test_acc(rows, out / "test_acc.png", records)
    across = write_aggregate(aggregate(records), out) if reference == "best" else []
    learning = plot_learning_curves(records, out)
    if console:
        console.print(summary_table(rows))
        console.print(f"wrote {', '.join(str(p) for p in (csv_path, md_path, curves, bars, *across, *learning))}")
        if across:
            console.print((out / "aggregate.md").read_text().split("\n", 4)[-1], markup=False, highlight=False)
        if numerics := describe(records):
            console.print(numerics)
    return rows
