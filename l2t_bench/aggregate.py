"""Statistics across tasks: who wins over the whole benchmark, with intervals that respect tasks.

Per method and task we take the paired differences to the task's reference (the best baseline,
as in the per-task table; for the final and the early-stopped accuracy separately). Across tasks:

- **IQM of the paired differences** (interquartile mean of all task x seed differences, as rliable
  recommends for few runs), with a **stratified bootstrap** 95% interval: seeds are resampled
  within each task, never across (``scipy.stats.bootstrap`` with one sample per task);
- **probability of improvement**, the mean over tasks of P(method > reference) on the same seed
  (ties count one half), with the same stratified interval.

Only methods that ran on at least two tasks with their reference are aggregated; grid points are
left out (their tuned row stands for them).
"""

from __future__ import annotations

import csv
from pathlib import Path
from typing import Any, Sequence, Union

import numpy as np
from scipy.stats import bootstrap, trim_mean

from l2t_bench.stats import group_runs, best_baselines

COLUMNS = {"final": "test_acc", "early": "test_acc_at_best_val"}


def _pairs(runs: Sequence[dict], ref: Sequence[dict], key: str) -> np.ndarray:
    """``[n, 2]`` (method, reference) values on the seeds both have, finite."""
    mine = {r["seed"]: r.get(key) for r in runs}
    theirs = {r["seed"]: r.get(key) for r in ref}
    seeds = sorted(s for s in set(mine) & set(theirs) if mine[s] is not None and theirs[s] is not None)
    pairs = np.asarray([(mine[s], theirs[s]) for s in seeds], dtype=float).reshape(-1, 2)
    return pairs[np.isfinite(pairs).all(axis=1)]


def _stratified(per_task: list[np.ndarray], statistic, resamples: int, seed: int) -> tuple[float, float, float]:
    """The statistic of the task-wise pair arrays and its stratified percentile bootstrap 95% CI."""
    value = statistic(*per_task)
    if sum(len(p) for p in per_task) < 2 or any(len(p) < 2 for p in per_task):
        return value, float("nan"), float("nan")
    index = tuple(np.arange(len(p)) for p in per_task)
    res = bootstrap(
        index,
        lambda *idx: statistic(*(p[i] for p, i in zip(per_task, idx))),
        n_resamples=resamples,
        confidence_level=0.95,
        method="percentile",
        vectorized=False,
        random_state=np.random.default_rng(seed),
    )
    return value, float(res.confidence_interval.low), float(res.confidence_interval.high)


def _iqm_of_differences(*per_task: np.ndarray) -> float:
    d = np.concatenate([p[:, 0] - p[:, 1] for p in per_task])
    return float(trim_mean(d, 0.25))


def _probability_of_improvement(*per_task: np.ndarray) -> float:
    return float(np.mean([np.mean((p[:, 0] > p[:, 1]) + 0.5 * (p[:, 0] == p[:, 1])) for p in per_task]))


def aggregate(records: Sequence[dict], *, resamples: int = 2000, seed: int = 0) -> list[dict]:
    """One row per method that ran on at least two tasks (besides each task's reference)."""
    groups = {k: v for k, v in group_runs(records).items() if not v[0].get("grid_of")}
    best = best_baselines(groups)
    methods = list(dict.fromkeys(teacher for _, teacher in groups))
    rows = []
    for method in methods:
        row: dict[str, Any] = {"teacher": method}
        for column, key in COLUMNS.items():
            per_task, tasks = [], []
            for task, refs in best.items():
                ref = refs.get(column)
                if ref is None or ref == method or (task, method) not in groups:
                    continue
                pairs = _pairs(groups[(task, method)], groups[(task, ref)], key)
                if len(pairs):
                    per_task.append(pairs)
                    tasks.append(task)
            if len(per_task) < 2:
                row.update({f"{column}_tasks": len(per_task)})
                continue
            iqm, lo, hi = _stratified(per_task, _iqm_of_differences, resamples, seed)
            poi, plo, phi = _stratified(per_task, _probability_of_improvement, resamples, seed)
            row.update({
                f"{column}_tasks": len(per_task),
                f"{column}_iqm_diff": iqm, f"{column}_iqm_diff_low": lo, f"{column}_iqm_diff_high": hi,
                f"{column}_poi": poi, f"{column}_poi_low": plo, f"{column}_poi_high": phi,
            })
        if any(f"{c}_iqm_diff" in row for c in COLUMNS):
            rows.append(row)
    return rows


def _fmt_ci(row: dict, name: str, signed: bool) -> str:
    if name not in row:
        return "—"
    f = "{:+.3f}" if signed else "{:.2f}"
    return f"{f.format(row[name])} [{f.format(row[name + '_low'])}, {f.format(row[name + '_high'])}]"


def write_aggregate(rows: Sequence[dict], out: Union[str, Path]) -> list[Path]:
    """``aggregate.csv``, ``aggregate.md`` and ``aggregate.png`` (nothing when no row)."""
    if not rows:
        return []
    out = Path(out)
    keys = list(dict.fromkeys(k for r in rows for k in r))
    with (out / "aggregate.csv").open("w", newline="") as fh:
        writer = csv.DictWriter(fh, fieldnames=keys)
        writer.writeheader()
        writer.writerows(rows)
    header = ["teacher", "tasks", "IQM Δ final [95% CI]", "P(better) final", "IQM Δ early-stop [95% CI]", "P(better) early-stop"]
    lines = [
        "# Across tasks",
        "",
        "Paired differences to each task's best baseline (final and early-stopped accuracy separately), pooled over "
        "tasks and seeds: interquartile mean (IQM) and the probability of improvement (mean over tasks of the fraction "
        "of seeds where the method beats that baseline; ties count one half), with stratified bootstrap 95% intervals "
        "(seeds resampled within each task; scipy.stats.bootstrap, percentile).",
        "",
        "| " + " | ".join(header) + " |",
        "|---|---:|---:|---:|---:|---:|",
    ]
    for r in rows:
        lines.append("| " + " | ".join([
            r["teacher"], str(r.get("final_tasks", 0)), _fmt_ci(r, "final_iqm_diff", True), _fmt_ci(r, "final_poi", False),
            _fmt_ci(r, "early_iqm_diff", True), _fmt_ci(r, "early_poi", False),
        ]) + " |")
    (out / "aggregate.md").write_text("\n".join(lines) + "\n")
    return [out / "aggregate.csv", out / "aggregate.md", plot_aggregate(rows, out / "aggregate.png")]


def plot_aggregate(rows: Sequence[dict], path: Union[str, Path]) -> Path:
    """IQM of the paired difference to the best baseline per method, with its stratified 95% CI,
    final and early-stopped side by side; the zero line is the best baseline."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    fig = Figure(figsize=(10, 0.35 * len(rows) + 1.5), layout="constrained")
    FigureCanvasAgg(fig)
    axes = fig.subplots(1, 2, sharey=True)
    y = np.arange(len(rows))[::-1]
    for ax, column, title in zip(axes, COLUMNS, ("final", "early-stopped")):
        for yi, r in zip(y, rows):
            if f"{column}_iqm_diff" not in r:
                continue
            v, lo, hi = r[f"{column}_iqm_diff"], r[f"{column}_iqm_diff_low"], r[f"{column}_iqm_diff_high"]
            ax.errorbar(v, yi, xerr=[[v - lo], [hi - v]] if np.isfinite(lo) else None, fmt="o",
                        color="tab:grey" if hi < 0 else "tab:blue", capsize=3)
        ax.axvline(0.0, color="black", lw=0.8)
        ax.set_title(f"{title}: IQM of Δ vs each task's best baseline (95% CI)", fontsize=9)
        ax.set_xlabel("test accuracy difference")
        ax.grid(axis="x", alpha=0.3)
    axes[0].set_yticks(y, [r["teacher"] for r in rows], fontsize=8)
    path = Path(path)
    fig.savefig(path, dpi=110)
    return path
