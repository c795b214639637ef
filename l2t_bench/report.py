"""The summary of a benchmark: the printed table, ``summary.csv``/``summary.md`` and the plots."""

from __future__ import annotations

import csv
from pathlib import Path
from typing import Optional, Sequence, Union

import numpy as np
from rich.console import Console
from rich.table import Table

from l2t_bench.numerics import describe
from l2t_bench.plots import _fmt, plot_test_acc, plot_val_curves
from l2t_bench.stats import summarise


def _display_rows(rows: Sequence[dict]) -> tuple[list[str], list[list[str]]]:
    ref = rows[0]["reference"] if rows else "ce"
    header = ["task", "teacher", "n", "test acc ± std", "95% CI", "IQM", f"Δ vs {ref} [95% CI]",
              "best val", "AUC val", "wall s", "steps/s", "div"]
    body = []
    for r in rows:
        diff = "—" if not np.isfinite(r["diff_vs_ref_mean"]) else (
            f"{r['diff_vs_ref_mean']:+.3f} [{r['diff_vs_ref_ci_low']:+.3f}, {r['diff_vs_ref_ci_high']:+.3f}]"
        )
        body.append([
            r["task"], r["teacher"], str(r["n"]),
            f"{_fmt(r['test_acc_mean'], 3)} ± {_fmt(r['test_acc_std'], 3)}",
            f"[{_fmt(r['test_acc_ci_low'], 3)}, {_fmt(r['test_acc_ci_high'], 3)}]",
            _fmt(r["test_acc_iqm"], 3), diff, _fmt(r["best_val_acc_mean"], 3), _fmt(r["auc_val_acc_mean"], 3),
            _fmt(r["wall_time_mean"], 1), _fmt(r["steps_per_s_mean"], 0), str(r["diverged"]),
        ])
    return header, body


def summary_table(rows: Sequence[dict], title: str = "final test accuracy across seeds") -> Table:
    """The summary as a rich table (what ``l2t bench`` prints). Columns: seeds (n), mean ± std,
    95% bootstrap CI and IQM of the final test accuracy, the paired difference to the reference,
    mean best and mean (AUC) validation accuracy, episode wall time, student steps/s, diverged runs."""
    header, body = _display_rows(rows)
    table = Table(title=title)
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
    ref = rows[0]["reference"] if rows else "ce"
    lines = [
        "# Benchmark summary",
        "",
        f"Final test accuracy across evaluation seeds. CI: percentile bootstrap of the mean ({resamples:,} resamples). "
        f"IQM: interquartile mean (rliable). Δ vs {ref}: mean paired difference on the same task and seeds, with its "
        "bootstrap CI. Best val / AUC: max / mean of the validation-accuracy curve (fixed validation subset). "
        "Wall time and student SGD steps per second are per episode.",
        "",
        "| " + " | ".join(header) + " |",
        "|" + "|".join(["---"] * 2 + ["---:"] * (len(header) - 2)) + "|",
        *("| " + " | ".join(line) + " |" for line in body),
        "",
    ]
    md_path.write_text("\n".join(lines))
    return csv_path, md_path


def report(records: Sequence[dict], out: Union[str, Path], reference: str = "ce", console: Optional[Console] = None) -> list[dict]:
    """Summarise records and write ``summary.csv``/``summary.md``/``val_curves.png``/``test_acc.png``."""
    out = Path(out)
    rows = summarise(records, reference)
    csv_path, md_path = write_summary(rows, out)
    curves = plot_val_curves(records, out / "val_curves.png")
    bars = plot_test_acc(rows, out / "test_acc.png", records)
    if console:
        console.print(summary_table(rows))
        console.print(f"wrote {csv_path}, {md_path}, {curves}, {bars}")
        if numerics := describe(records):
            console.print(numerics)
    return rows
