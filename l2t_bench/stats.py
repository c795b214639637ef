"""Statistics across seeds: bootstrap intervals, IQM, paired differences, the summary rows."""

from __future__ import annotations

from collections import Counter
from typing import Any, Iterable, Sequence

import numpy as np
from scipy.stats import trim_mean


def _finite(values: Iterable[Any]) -> np.ndarray:
    x = np.asarray([np.nan if v is None else v for v in values], dtype=float)
    return x[np.isfinite(x)]


def bootstrap_ci(values: Iterable[float], *, resamples: int = 10_000, confidence: float = 0.95, seed: int = 0) -> tuple[float, float]:
    """Percentile bootstrap interval of the mean (seeded, so a summary is reproducible)."""
    x = _finite(values)
    if x.size == 0:
        return (float("nan"), float("nan"))
    rng = np.random.default_rng(seed)
    means = rng.choice(x, size=(resamples, x.size), replace=True).mean(axis=1)
    tail = 100 * (1 - confidence) / 2
    lo, hi = np.percentile(means, [tail, 100 - tail])
    return (float(lo), float(hi))


def iqm(values: Iterable[float]) -> float:
    """Interquartile mean: the mean of the middle 50% (25% trimmed each side), as in rliable."""
    x = _finite(values)
    return float(trim_mean(x, 0.25)) if x.size else float("nan")


def paired_difference(a: dict, b: dict, *, resamples: int = 10_000, seed: int = 0) -> dict:
    """Mean of ``a[s] - b[s]`` over the seeds both have (finite), with its bootstrap interval."""
    seeds = sorted(s for s in set(a) & set(b) if a[s] is not None and b[s] is not None and np.isfinite(a[s]) and np.isfinite(b[s]))
    diffs = np.asarray([a[s] - b[s] for s in seeds], dtype=float)
    lo, hi = bootstrap_ci(diffs, resamples=resamples, seed=seed)
    return {"n": len(seeds), "mean": float(diffs.mean()) if diffs.size else float("nan"), "ci_low": lo, "ci_high": hi}


def group_runs(records: Sequence[dict]) -> dict[tuple[str, str], list[dict]]:
    groups: dict[tuple[str, str], list[dict]] = {}
    for r in records:
        groups.setdefault((r["task"], r["teacher"]), []).append(r)
    return groups


def best_baselines(groups: dict[tuple[str, str], list[dict]]) -> dict[str, dict[str, str]]:
    """Per task, the baseline rows of highest mean final and early-stopped test accuracy.

    Baselines are rows whose runs say ``baseline`` (methods without a teacher: CE, the robust
    losses, the clean-split CE variants, tuned grid rows), not single grid points."""
    best: dict[str, dict[str, str]] = {}
    means: dict[str, dict[str, float]] = {}
    for (task, teacher), runs in groups.items():
        if not runs[0].get("baseline") or runs[0].get("grid_of"):
            continue
        for column, key in (("final", "test_acc"), ("early", "test_acc_at_best_val")):
            x = _finite(r.get(key) for r in runs)
            if x.size and x.mean() > means.setdefault(task, {}).get(column, -np.inf):
                means[task][column] = float(x.mean())
                best.setdefault(task, {})[column] = teacher
    return best


def summarise(records: Sequence[dict], reference: str = "best", *, resamples: int = 10_000, seed: int = 0) -> list[dict]:
    """One row per (task, teacher), in order of first appearance: final test accuracy across seeds
    (n, mean, std, 95% bootstrap CI, IQM), the early-stopped test accuracy (at each run's best
    whole-validation step), and the paired differences of both to the reference on the same task
    and seeds: with ``reference="best"`` the best baseline of the task (for the final and for the
    early-stopped column separately, :func:`best_baselines`), else the teacher of that label."""
    groups = group_runs(records)
    best = best_baselines(groups) if reference == "best" else {}
    rows = []
    for (task, teacher), runs in groups.items():
        acc = _finite(r["test_acc"] for r in runs)
        early = _finite(r.get("test_acc_at_best_val") for r in runs)
        lo, hi = bootstrap_ci(acc, resamples=resamples, seed=seed)
        row: dict[str, Any] = {
            "task": task,
            "teacher": teacher,
            "n": int(acc.size),
            "test_acc_mean": float(acc.mean()) if acc.size else float("nan"),
            "test_acc_std": float(acc.std(ddof=1)) if acc.size > 1 else float("nan"),
            "test_acc_ci_low": lo,
            "test_acc_ci_high": hi,
            "test_acc_iqm": iqm(acc),
            "early_acc_mean": float(early.mean()) if early.size else float("nan"),
            "early_acc_std": float(early.std(ddof=1)) if early.size > 1 else float("nan"),
            "baseline": bool(runs[0].get("baseline")),
            "grid_of": runs[0].get("grid_of"),
        }
        for column, key, name in (("final", "test_acc", "diff_vs_ref"), ("early", "test_acc_at_best_val", "diff_early_vs_ref")):
            ref_label = best.get(task, {}).get(column) if reference == "best" else reference
            ref = groups.get((task, ref_label)) if ref_label is not None else None
            if ref is not None and teacher != ref_label:
                diff = paired_difference(
                    {r["seed"]: r.get(key) for r in runs}, {r["seed"]: r.get(key) for r in ref}, resamples=resamples, seed=seed
                )
            else:
                diff = {"n": 0, "mean": float("nan"), "ci_low": float("nan"), "ci_high": float("nan")}
            row.update(
                {
                    ("reference" if column == "final" else "reference_early"): ref_label,
                    f"{name}_mean": diff["mean"],
                    f"{name}_ci_low": diff["ci_low"],
                    f"{name}_ci_high": diff["ci_high"],
                    ("n_paired" if column == "final" else "n_paired_early"): diff["n"],
                }
            )
        for key in ("test_loss", "best_val_acc", "auc_val_acc", "best_val_step", "wall_time", "steps_per_s", "agent_train_time"):
            x = _finite(r.get(key) for r in runs)
            row[f"{key}_mean"] = float(x.mean()) if x.size else float("nan")
        row["diverged"] = int(sum(bool(r.get("diverged")) for r in runs))
        row["selected"] = _chosen(runs, "selected")
        row["selected_early"] = _chosen(runs, "selected_early")
        rows.append(row)
    return rows


def _chosen(runs: Sequence[dict], key: str) -> str:
    """How often each grid point was chosen across the seeds, e.g. ``q=0.7 x6; q=0.5 x4`` ("" if none)."""
    counts = Counter(", ".join(f"{k}={v}" for k, v in r[key].items()) for r in runs if r.get(key))
    return "; ".join(f"{point} x{n}" for point, n in counts.most_common())
