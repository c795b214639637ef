"""The benchmark's figures: validation curves and final test accuracy, drawn with Agg (no display)."""

from __future__ import annotations

import warnings
from pathlib import Path
from typing import Any, Optional, Sequence, Union

import numpy as np

from l2t_bench.stats import group_runs


def fmt(x: Any, digits: int = 4) -> str:
    return "—" if x is None or (isinstance(x, float) and not np.isfinite(x)) else f"{x:.{digits}f}"


def figure(n_panels: int, width: float = 6.0, height: float = 4.2) -> tuple[Any, list]:
    """A figure with one panel per task (for the benchmark scripts too), drawn with the Agg backend (no display, no pyplot state)."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    fig = Figure(figsize=(width * n_panels, height), layout="constrained")
    FigureCanvasAgg(fig)
    axes = fig.subplots(1, n_panels, squeeze=False)[0]
    return fig, list(axes)


def colours(teachers: Sequence[str]) -> dict[str, Any]:
    from matplotlib import colormaps

    cmap = colormaps["tab10"] if len(teachers) <= 10 else colormaps["tab20"]
    return {t: cmap(i % cmap.N) for i, t in enumerate(teachers)}


#: the panels of the figures: methods without a teacher, teachers that learn while teaching or were
#: pretrained, and trained RL agents acting frozen
GROUPS = ("baselines", "teachers", "RL teachers")


def method_group(record: dict) -> str:
    """Which panel a run's row goes to (:data:`GROUPS`)."""
    if record.get("baseline"):
        return "baselines"
    return "RL teachers" if record.get("agent") and not str(record.get("agent", "")).endswith(".pt") else "teachers"


def _rows_shown(records: Sequence[dict]) -> dict[tuple[str, str], list[dict]]:
    """Runs by (task, teacher) without hyper-parameter grid points (their tuned row stands for them)."""
    return {k: v for k, v in group_runs(records).items() if not v[0].get("grid_of")}


def plot_val_curves(records: Sequence[dict], path: Union[str, Path], band: str = "iqr") -> Path:
    """Validation accuracy vs teaching step: one row of panels per task, one panel per group of
    methods (:data:`GROUPS`), so that 15 or more rows stay readable. Lines are medians across
    seeds; the band is the interquartile range (``band="iqr"``), ±1 std around the mean
    (``"std"``) or the min-max (``"minmax"``)."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure
    from matplotlib.ticker import MaxNLocator

    if band not in ("iqr", "minmax", "std"):
        raise ValueError(f"band={band!r}; valid: ['iqr', 'minmax', 'std']")
    groups = _rows_shown(records)
    tasks = list(dict.fromkeys(t for t, _ in groups)) or ["-"]
    panels = [g for g in GROUPS if any(method_group(runs[0]) == g for runs in groups.values())] or ["baselines"]
    fig = Figure(figsize=(5.5 * len(panels) + 1.5, 3.8 * len(tasks)), layout="constrained")
    FigureCanvasAgg(fig)
    axes = fig.subplots(len(tasks), len(panels), squeeze=False)
    for row, task in enumerate(tasks):
        for col, panel in enumerate(panels):
            ax = axes[row][col]
            mine = [(teacher, runs) for (t, teacher), runs in groups.items() if t == task and method_group(runs[0]) == panel]
            palette = colours([teacher for teacher, _ in mine])
            for teacher, runs in mine:
                curves = [np.asarray([np.nan if v is None else v for v in r["curves"]["val_acc"]], dtype=float) for r in runs]
                stack = np.full((len(curves), max(len(c) for c in curves)), np.nan)
                for i, c in enumerate(curves):
                    stack[i, : len(c)] = c
                with warnings.catch_warnings():  # all-NaN columns after a diverged run's early end
                    warnings.simplefilter("ignore", RuntimeWarning)
                    if band == "std":
                        centre, sd = np.nanmean(stack, axis=0), np.nanstd(stack, axis=0)
                        lo, hi = np.clip(centre - sd, 0, 1), np.clip(centre + sd, 0, 1)
                    else:
                        centre = np.nanmedian(stack, axis=0)
                        q = (25, 75) if band == "iqr" else (0, 100)
                        lo, hi = np.nanpercentile(stack, q[0], axis=0), np.nanpercentile(stack, q[1], axis=0)
                steps = np.arange(stack.shape[1])
                ax.plot(steps, centre, color=palette[teacher], label=f"{teacher} (n={len(runs)})", lw=1.3)
                ax.fill_between(steps, lo, hi, color=palette[teacher], alpha=0.12, lw=0)
            what = {"iqr": "median, interquartile band", "std": "mean ±1 std", "minmax": "median, min-max band"}[band]
            ax.set_title(f"{task}: {panel} ({what})", fontsize=9)
            ax.set_xlabel("teaching step")
            ax.set_ylabel("val accuracy (fixed subset)")
            ax.xaxis.set_major_locator(MaxNLocator(integer=True))
            ax.grid(alpha=0.3)
            if mine:
                ax.legend(fontsize=7, loc="lower right")
    path = Path(path)
    fig.savefig(path, dpi=110)
    return path


def plot_test_acc(rows: Sequence[dict], path: Union[str, Path], records: Optional[Sequence[dict]] = None) -> Path:
    """Mean test accuracy per row with its 95% bootstrap CI, one panel per task, rows as horizontal
    bars (readable with many rows): the bar is the final student, the diamond the early-stopped one
    (best whole-validation step), dots are the seeds' final accuracies. Grid points are left out."""
    rows = [r for r in rows if not r.get("grid_of")]
    tasks = list(dict.fromkeys(r["task"] for r in rows))
    n_rows = max([sum(r["task"] == t for r in rows) for t in tasks] or [1])
    fig, axes = figure(max(len(tasks), 1), width=5.5, height=max(3.0, 0.32 * n_rows + 1.2))
    by_run = group_runs(records or [])
    colour = {"baselines": "tab:grey", "teachers": "tab:blue", "RL teachers": "tab:orange"}
    for ax, task in zip(axes, tasks):
        mine = [r for r in rows if r["task"] == task]
        y = np.arange(len(mine))[::-1]
        means = np.asarray([r["test_acc_mean"] for r in mine])
        err = np.asarray([[m - r["test_acc_ci_low"], r["test_acc_ci_high"] - m] for m, r in zip(means, mine)]).T
        kinds = [method_group({"baseline": r.get("baseline"), "agent": (by_run.get((task, r["teacher"])) or [{}])[0].get("agent")}) for r in mine]
        ax.barh(y, means, xerr=np.nan_to_num(err), capsize=3, color=[colour[k] for k in kinds], alpha=0.7)
        ax.scatter([r["early_acc_mean"] for r in mine], y, marker="D", s=18, color="black", zorder=4, label="early-stopped mean")
        for i, r in zip(y, mine):
            seeds = [s["test_acc"] for s in by_run.get((task, r["teacher"]), []) if s.get("test_acc") is not None]
            if seeds:
                ax.scatter(seeds, np.full(len(seeds), i) + np.linspace(-0.2, 0.2, len(seeds)), s=5, color="black", alpha=0.5, zorder=3)
        ax.set_yticks(y, [r["teacher"] for r in mine], fontsize=8)
        lo = max(0.0, min([*means[np.isfinite(means)], 1.0]) - 0.1)
        ax.set_xlim(lo, 1.0)
        ax.set_xlabel("test accuracy (bar: final, 95% CI; diamond: early-stopped)")
        ax.set_title(f"{task}", fontsize=9)
        ax.grid(axis="x", alpha=0.3)
    path = Path(path)
    fig.savefig(path, dpi=110)
    return path
