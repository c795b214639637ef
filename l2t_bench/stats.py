"""Statistics across seeds: bootstrap intervals, IQM, paired differences, the summary rows."""

from __future__ import annotations

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


def _groups(records: Sequence[dict]) -> dict[tuple[str, str], list[dict]]:
    groups: dict[tuple[str, str], list[dict]] = {}
    for r in records:
        groups.setdefault((r["task"], r["teacher"]), []).append(r)
    return groups


def summarise(records: Sequence[dict], reference: str = "ce", *, resamples: int = 10_000, seed: int = 0) -> list[dict]:
    """One row per (task, teacher), in order of first appearance: final test accuracy across seeds
    (n, mean, std, 95% bootstrap CI, IQM), the paired difference to ``reference`` on the same
    task and seeds, and means of the other run numbers."""
    groups = _groups(records)
    rows = []
    for (task, teacher), runs in groups.items():
        acc = _finite(r["test_acc"] for r in runs)
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
        }
        ref = groups.get((task, reference))
        if ref is not None and teacher != reference:
            diff = paired_difference(
                {r["seed"]: r["test_acc"] for r in runs}, {r["seed"]: r["test_acc"] for r in ref}, resamples=resamples, seed=seed
            )
        else:
            diff = {"n": 0, "mean": float("nan"), "ci_low": float("nan"), "ci_high": float("nan")}
        row.update(
            {
                "reference": reference,
                "diff_vs_ref_mean": diff["mean"],
                "diff_vs_ref_ci_low": diff["ci_low"],
                "diff_vs_ref_ci_high": diff["ci_high"],
                "n_paired": diff["n"],
            }
        )
        for key in ("test_loss", "best_val_acc", "auc_val_acc", "wall_time", "steps_per_s", "agent_train_time"):
            x = _finite(r.get(key) for r in runs)
            row[f"{key}_mean"] = float(x.mean()) if x.size else float("nan")
        row["diverged"] = int(sum(bool(r.get("diverged")) for r in runs))
        rows.append(row)
    return rows
