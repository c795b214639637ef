"""Hyper-parameters chosen on the validation split: the rows of ``grid:`` teacher entries.

A bench teacher entry with ``grid: {q: [0.3, 0.5, 0.7, 0.9]}`` runs one row per grid point
(labelled ``"gce [q=0.3]"`` ...). :func:`select_grid` adds, per task and seed, a record under the
entry's own label (``"gce"``) that takes the point a practitioner would pick from the data the
teachers see, the clean validation split, never the test split:

- for the final accuracy: the point with the best final whole-validation accuracy;
- for the early-stopped accuracy: the point with the best whole-validation accuracy at any
  monitored step (each point stopped at its own best step).

Ties go to the first point in the grid's order. The chosen points are recorded
(``selected``, ``selected_early``), and so is what the choice cost (``grid_points``: runs per seed).
"""

from __future__ import annotations

from typing import Any, Sequence

import numpy as np


def mark_baselines(records: Sequence[dict]) -> list[dict]:
    """The records with ``baseline`` as their teacher's class says now (records written before a
    teacher was marked a baseline carry a stale flag); unregistered teachers keep theirs."""
    from l2t_agents.registry import available_teachers, is_baseline

    known = set(available_teachers())
    return [{**r, "baseline": is_baseline(r["teacher_name"])} if r.get("teacher_name") in known else r for r in records]


def _value(record: dict, key: str) -> float:
    v = record.get(key)
    return float(v) if v is not None and np.isfinite(v) else -np.inf


def _best(runs: Sequence[dict], key: str) -> dict:
    """The first run of the highest ``key`` (non-finite counts as lowest)."""
    return max(enumerate(runs), key=lambda item: (_value(item[1], key), -item[0]))[1]


def select_grid(records: Sequence[dict]) -> list[dict]:
    """``records`` with one selected record per (task, grid entry, seed) whose grid points all finished,
    placed before the grid's first point.

    A seed missing a point gets no selected record (the row is incomplete until the bench is)."""
    groups: dict[tuple[str, str], dict[int, list[dict]]] = {}
    points: dict[tuple[str, str], list[str]] = {}
    for r in records:
        group = r.get("grid_of")
        if not group:
            continue
        key = (r["task"], group)
        groups.setdefault(key, {}).setdefault(r["seed"], []).append(r)
        labels = points.setdefault(key, [])
        if r["teacher"] not in labels:
            labels.append(r["teacher"])
    selected = []
    for (task, group), by_seed in groups.items():
        order = {label: i for i, label in enumerate(points[(task, group)])}
        for seed, runs in by_seed.items():
            if len(runs) != len(order):
                continue
            runs = sorted(runs, key=lambda r: order[r["teacher"]])
            final, early = _best(runs, "val_acc"), _best(runs, "best_whole_val_acc")
            selected.append(_selected_record(task, group, seed, runs, final, early))
    # each selected row stands where its grid's first point stands, so tables keep the config's order
    out: list[dict] = []
    placed: set = set()
    for r in records:
        key = (r["task"], r.get("grid_of"))
        if r.get("grid_of") and key not in placed:
            placed.add(key)
            out += [s for s in selected if (s["task"], s["teacher"]) == key]
        out.append(r)
    return out


def _selected_record(task: str, group: str, seed: int, runs: Sequence[dict], final: dict, early: dict) -> dict[str, Any]:
    record = {
        "key": f"{task}|{group}|{seed}|selected",
        "task": task,
        "teacher": group,
        "seed": seed,
        "teacher_name": final.get("teacher_name"),
        "baseline": bool(final.get("baseline")),
        "grid_of": None,
        "selected": final.get("grid_point"),
        "selected_early": early.get("grid_point"),
        "selected_by": "val_acc (final) / best_whole_val_acc (early-stopped)",
        "grid_points": len(runs),
    }
    for key in ("train_loss", "train_acc", "val_loss", "val_acc", "test_loss", "test_acc", "best_val_acc", "auc_val_acc", "diverged", "curves"):
        record[key] = final.get(key)
    for key in ("best_val_step", "best_whole_val_acc", "test_acc_at_best_val"):
        record[key] = early.get(key)
    # what the choice cost: every point's run of this seed
    record["wall_time"] = float(sum(r.get("wall_time") or 0.0 for r in runs))
    return record


def grid_labels(records: Sequence[dict]) -> set:
    """The teacher labels that are grid points (shown in ``summary.csv``, not in the printed table)."""
    return {r["teacher"] for r in records if r.get("grid_of")}
