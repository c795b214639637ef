"""``runs.jsonl``: one JSON line per finished run, appended and fsynced, read back for resuming."""

from __future__ import annotations

import json
import os
import time
from pathlib import Path
from typing import Any, Optional, Union

import numpy as np

from l2t_agents.evaluation import early_stopped
from l2t_bench.config import RunSpec
from l2t_bench.numerics import numerics_record
from l2t_bench.options import jsonable

RUNS_FILE = "runs.jsonl"
FINAL_KEYS = ("train_loss", "train_acc", "val_loss", "val_acc", "test_loss", "test_acc")


def repair_runs_file(path: Path) -> int:
    """Cut a last line left unfinished by a killed process (it never held a finished run).

    Returns the number of bytes removed.
    """
    if not path.is_file():
        return 0
    data = path.read_bytes()
    if not data or data.endswith(b"\n"):
        return 0
    keep = data.rfind(b"\n") + 1
    with path.open("r+b") as fh:
        fh.truncate(keep)
    return len(data) - keep


def read_runs(path: Union[str, Path]) -> list[dict]:
    """The finished runs in a ``runs.jsonl`` (first line per key; an unfinished last line is ignored)."""
    path = Path(path)
    if not path.is_file():
        return []
    lines = path.read_bytes().split(b"\n")
    records, seen = [], set()
    for number, line in enumerate(lines[:-1], start=1):  # the part after the last newline is unfinished
        if not line.strip():
            continue
        try:
            record = json.loads(line)
        except json.JSONDecodeError as err:
            raise ValueError(f"{path}:{number}: not a JSON line ({err}); remove that line to go on") from err
        if record.get("key") not in seen:
            seen.add(record.get("key"))
            records.append(record)
    return records


def append_run(path: Path, record: dict) -> None:
    """Append one run as one line and force it to disk before the next run starts."""
    line = json.dumps(jsonable(record)) + "\n"
    with path.open("a") as fh:
        fh.write(line)
        fh.flush()
        os.fsync(fh.fileno())


def run_record(run: RunSpec, episode: Any, agent: Optional[str], agent_train_time: Optional[float], device: str) -> dict:
    """The JSON line of a finished run: key, final metrics, summary numbers of the curves, timing."""
    val_acc = np.asarray(episode.curves["val_acc"], dtype=float)
    final = episode.final
    record: dict[str, Any] = {
        "key": run.key,
        "task": run.task.label,
        "teacher": run.teacher.label,
        "seed": run.seed,
        "config_hash": run.config_hash,
        "task_name": run.task.name,
        "teacher_name": run.teacher.name,
        "task_overrides": run.task.overrides,
        "teacher_kwargs": run.teacher.kwargs,
        "baseline": run.teacher.baseline,
        "grid_of": run.teacher.grid_of,
        "grid_point": run.teacher.grid_point,
        **{k: final.get(k) for k in FINAL_KEYS},
        "best_val_acc": float(np.nanmax(val_acc)) if np.isfinite(val_acc).any() else None,
        # early stopping: the test accuracy at the step of best whole-validation accuracy (eval_every)
        **early_stopped(episode.curves),
        "auc_val_acc": float(np.nanmean(val_acc)) if np.isfinite(val_acc).any() else None,
        "wall_time": episode.wall_time,
        "student_steps": episode.student_steps,
        "steps_per_s": episode.student_steps / episode.wall_time if episode.wall_time > 0 else None,
        "teaching_steps": episode.steps,
        "diverged": episode.diverged,
        "device": device,
        "numerics": numerics_record(),
        "agent": agent,
        "agent_train_time": agent_train_time,
        "finished_at": time.strftime("%Y-%m-%dT%H:%M:%S"),
        "curves": episode.curves,
    }
    return record
