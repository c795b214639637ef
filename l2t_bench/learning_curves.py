"""Learning curves of SB3 teachers: their CSV rows and their figure (no SB3 needed to read them).

A row (:data:`COLUMNS`) is one evaluation of the frozen agent on held-out seeds during training
(:class:`l2t_bench.curve_callback.LearningCurve`): env steps, wall time, training episodes, and
the mean episode return, final and early-stopped test accuracy, each with a 95% bootstrap
interval over the seeds. :func:`plot_curves` draws one or many curves in one figure.
"""

from __future__ import annotations

import csv
from pathlib import Path
from typing import Any, Sequence, Union

import numpy as np

from l2t_bench.stats import bootstrap_ci

COLUMNS = (
    "env_steps", "wall_time_s", "episodes",
    "return_mean", "return_ci_low", "return_ci_high",
    "test_acc_mean", "test_acc_ci_low", "test_acc_ci_high",
    "es_test_acc_mean", "es_test_acc_ci_low", "es_test_acc_ci_high",
)


def curve_row(env_steps: int, wall_time: float, episodes: int, records: Sequence[Any]) -> dict[str, float]:
    """One CSV row from the evaluation episodes' records (one per held-out seed)."""
    row: dict[str, float] = {"env_steps": int(env_steps), "wall_time_s": round(float(wall_time), 2), "episodes": int(episodes)}
    values = {
        "return": [float(np.sum(r.curves["reward"])) for r in records],
        "test_acc": [float(r.final.get("test_acc", np.nan)) for r in records],
        "es_test_acc": [r.early_stopped()["test_acc_at_best_val"] for r in records],
    }
    for key, xs in values.items():
        x = np.asarray([np.nan if v is None else v for v in xs], dtype=float)
        lo, hi = bootstrap_ci(x)
        row[f"{key}_mean"] = float(np.nanmean(x)) if np.isfinite(x).any() else float("nan")
        row[f"{key}_ci_low"], row[f"{key}_ci_high"] = lo, hi
    return row


def read_curve(path: Union[str, Path]) -> list[dict[str, float]]:
    """The rows of a learning-curve CSV (numbers as floats); [] if there is none yet."""
    path = Path(path)
    if not path.is_file():
        return []
    with path.open(newline="") as fh:
        return [{k: float(v) for k, v in row.items()} for row in csv.DictReader(fh)]


def append_row(path: Union[str, Path], row: dict[str, float]) -> None:
    path = Path(path)
    new = not path.is_file()
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("a", newline="") as fh:
        writer = csv.DictWriter(fh, fieldnames=COLUMNS)
        if new:
            writer.writeheader()
        writer.writerow({k: row[k] for k in COLUMNS})


def plot_curves(curves: dict, path: Union[str, Path], title: str = "") -> Path:
    """Mean episode return and final / early-stopped test accuracy against env steps, one line per
    curve with its 95% interval as a band: ``curves`` is ``{label: rows}`` (one row of three
    panels) or ``{task: {label: rows}}`` (one row of panels per task), all in one figure."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    grid = curves if curves and all(isinstance(v, dict) for v in curves.values()) else {"": curves}
    panels = (("return", "mean episode return"), ("test_acc", "final test accuracy"), ("es_test_acc", "early-stopped test accuracy"))
    fig, axes = plt.subplots(len(grid), 3, figsize=(15, 4.2 * len(grid)), squeeze=False)
    for row_axes, (task, by_label) in zip(axes, grid.items()):
        for label, rows in by_label.items():
            if not rows:
                continue
            x = np.asarray([r["env_steps"] for r in rows])
            for ax, (key, name) in zip(row_axes, panels):
                mean = np.asarray([r[f"{key}_mean"] for r in rows])
                line = ax.plot(x, mean, marker="o", ms=3, label=label)[0]
                low, high = [r[f"{key}_ci_low"] for r in rows], [r[f"{key}_ci_high"] for r in rows]
                ax.fill_between(x, low, high, color=line.get_color(), alpha=0.2)
                ax.set_xlabel("env steps trained (one per student per teaching step)")
                ax.set_ylabel(name)
                ax.set_title(task, fontsize=10)
        row_axes[0].legend(fontsize=8)
    if title:
        fig.suptitle(title)
    fig.tight_layout()
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path
