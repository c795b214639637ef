"""The benchmark's figures: validation curves and final test accuracy, drawn with Agg (no display)."""

from __future__ import annotations

import warnings
from pathlib import Path
from typing import Any, Optional, Sequence, Union

import numpy as np

from l2t_bench.stats import _groups


def _fmt(x: Any, digits: int = 4) -> str:
    return "—" if x is None or (isinstance(x, float) and not np.isfinite(x)) else f"{x:.{digits}f}"


def _figure(n_panels: int, width: float = 6.0, height: float = 4.2) -> tuple[Any, list]:
    """A figure with one panel per task, drawn with the Agg backend (no display, no pyplot state)."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    fig = Figure(figsize=(width * n_panels, height), layout="constrained")
    FigureCanvasAgg(fig)
    axes = fig.subplots(1, n_panels, squeeze=False)[0]
    return fig, list(axes)


def _colours(teachers: Sequence[str]) -> dict[str, Any]:
    from matplotlib import colormaps

    cmap = colormaps["tab10"] if len(teachers) <= 10 else colormaps["tab20"]
    return {t: cmap(i % cmap.N) for i, t in enumerate(teachers)}


def plot_val_curves(records: Sequence[dict], path: Union[str, Path], band: str = "std") -> Path:
    """Mean validation accuracy vs teaching step per teacher, one panel per task; the band is
    ±1 std across seeds (``band="std"``, clipped to [0, 1]) or their min-max (``band="minmax"``)."""
    from matplotlib.ticker import MaxNLocator

    if band not in ("minmax", "std"):
        raise ValueError(f"band={band!r}; valid: ['minmax', 'std']")
    groups = _groups(records)
    tasks = list(dict.fromkeys(t for t, _ in groups))
    teachers = list(dict.fromkeys(k for _, k in groups))
    colours = _colours(teachers)
    fig, axes = _figure(max(len(tasks), 1), width=6.0 + 1.6 / max(len(tasks), 1))
    for ax, task in zip(axes, tasks):
        for teacher in teachers:
            runs = groups.get((task, teacher))
            if not runs:
                continue
            curves = [np.asarray([np.nan if v is None else v for v in r["curves"]["val_acc"]], dtype=float) for r in runs]
            stack = np.full((len(curves), max(len(c) for c in curves)), np.nan)
            for i, c in enumerate(curves):
                stack[i, : len(c)] = c
            with warnings.catch_warnings():  # all-NaN columns after a diverged run's early end
                warnings.simplefilter("ignore", RuntimeWarning)
                mean = np.nanmean(stack, axis=0)
                if band == "minmax":
                    lo, hi = np.nanmin(stack, axis=0), np.nanmax(stack, axis=0)
                else:
                    sd = np.nanstd(stack, axis=0)
                    lo, hi = np.clip(mean - sd, 0, 1), np.clip(mean + sd, 0, 1)
            steps = np.arange(stack.shape[1])
            ax.plot(steps, mean, color=colours[teacher], label=f"{teacher} (n={len(runs)})", lw=1.5)
            ax.fill_between(steps, lo, hi, color=colours[teacher], alpha=0.07, lw=0)
        ax.set_title(f"{task}: mean across seeds, band {'±1 std' if band == 'std' else 'min-max'}")
        ax.set_xlabel("teaching step")
        ax.set_ylabel("validation accuracy (fixed subset)")
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))
        ax.grid(alpha=0.3)
    legend: dict[str, Any] = {}
    for ax in axes:
        for handle, label in zip(*ax.get_legend_handles_labels()):
            legend.setdefault(label.split(" (n=")[0], (handle, label))
    fig.legend([h for h, _ in legend.values()], [lab for _, lab in legend.values()], loc="outside right upper", fontsize=8)
    path = Path(path)
    fig.savefig(path, dpi=120)
    return path


def plot_test_acc(rows: Sequence[dict], path: Union[str, Path], records: Optional[Sequence[dict]] = None) -> Path:
    """Bar chart of mean final test accuracy per teacher with the 95% bootstrap CI as error bars,
    one panel per task; each seed's result is drawn as a dot when ``records`` are given."""
    tasks = list(dict.fromkeys(r["task"] for r in rows))
    teachers = list(dict.fromkeys(r["teacher"] for r in rows))
    colours = _colours(teachers)
    fig, axes = _figure(max(len(tasks), 1), width=max(4.0, 0.75 * len(teachers) + 1.5))
    by_run = _groups(records or [])
    for ax, task in zip(axes, tasks):
        mine = [r for r in rows if r["task"] == task]
        x = np.arange(len(mine))
        means = np.asarray([r["test_acc_mean"] for r in mine])
        err = np.asarray([[m - r["test_acc_ci_low"], r["test_acc_ci_high"] - m] for m, r in zip(means, mine)]).T
        ax.bar(x, means, yerr=np.nan_to_num(err), capsize=4, color=[colours[r["teacher"]] for r in mine], alpha=0.8)
        for i, r in enumerate(mine):
            seeds = [s["test_acc"] for s in by_run.get((task, r["teacher"]), []) if s.get("test_acc") is not None]
            if seeds:
                jitter = np.linspace(-0.18, 0.18, len(seeds)) if len(seeds) > 1 else np.zeros(1)
                ax.scatter(i + jitter, seeds, s=8, color="black", zorder=3)
            ax.annotate(_fmt(r["test_acc_mean"], 3), (i, r["test_acc_ci_high"] if np.isfinite(r["test_acc_ci_high"]) else means[i]),
                        xytext=(0, 3), textcoords="offset points", ha="center", fontsize=7)
        ax.set_xticks(x, [r["teacher"] for r in mine], rotation=30, ha="right")
        ax.set_ylim(0, 1.05)
        ax.set_ylabel("final test accuracy")
        ax.set_title(f"{task} (mean, 95% bootstrap CI; dots: seeds)")
        ax.grid(axis="y", alpha=0.3)
    path = Path(path)
    fig.savefig(path, dpi=120)
    return path
