"""The driver of a benchmark: ``run_bench`` plans the runs, skips those ``runs.jsonl`` already holds,
hands the rest to a backend (:mod:`l2t_bench.backends`) and alone appends each record as its run
finishes, so the resume rule is the same whatever executed the runs.

Layers: this module uses the backends, which use the plain per-run functions of
:mod:`l2t_bench.runner`; none of them imports one above it.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Iterable, Optional, Union

import yaml
from rich.console import Console

from l2t_bench.backends import Backend, Driver, LocalBackend
from l2t_bench.config import BenchConfig, RunSpec, plan_runs
from l2t_bench.options import jsonable, write_json
from l2t_bench.progress import BenchProgress
from l2t_bench.records import RUNS_FILE, append_run, read_runs, repair_runs_file
from l2t_bench.runner import RunFailure

#: the runs that failed in the last invocation, with their tracebacks (removed once all have finished)
FAILED_FILE = "failed_runs.json"


class BenchResult(list):
    """The records of the plan's finished runs, in plan order (the list itself, as before backends
    existed), and ``failures``: the runs that failed this time."""

    def __init__(self, records: Iterable[dict] = (), failures: Iterable[RunFailure] = ()) -> None:
        super().__init__(records)
        self.failures: list[RunFailure] = list(failures)

    @property
    def records(self) -> list[dict]:
        return list(self)


def run_bench(
    cfg: BenchConfig,
    out: Union[str, Path],
    *,
    backend: Optional[Backend] = None,
    console: Optional[Console] = None,
    quiet: bool = False,
    tensorboard: bool = False,
    live: Optional[bool] = None,
) -> BenchResult:
    """Run every planned run not yet in ``out/runs.jsonl`` on ``backend`` (default: this process).

    A run that fails is reported and does not stop the others; rerunning resumes with the runs
    still missing. ``live`` forces the progress bar on or off (default: on a terminal only).
    """
    backend = backend or LocalBackend()
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    (out / "bench.yaml").write_text(yaml.safe_dump(cfg.raw, sort_keys=False))
    runs_file = out / RUNS_FILE
    cut = repair_runs_file(runs_file)
    if cut and console:
        console.print(f"[yellow]{runs_file}: dropped an unfinished last line ({cut} bytes) left by an interrupted run")
    done = {r["key"]: r for r in read_runs(runs_file)}
    plan = plan_runs(cfg)
    pending = [r for r in plan if r.key not in done]
    if console:
        console.print(
            f"bench [bold]{cfg.name}[/]: {len(cfg.only_tasks or cfg.tasks)} task(s) x {len(cfg.only_teachers or cfg.teachers)} teacher(s) x {len(cfg.seeds)} seed(s) "
            f"= {len(plan)} runs; {len(plan) - len(pending)} already in {runs_file}, {len(pending)} to run "
            f"(device {cfg.device}, backend {backend.name})"
        )
    failures: list[RunFailure] = []

    with BenchProgress(len(plan), len(plan) - len(pending), console, quiet=quiet, live=live) as progress:

        def on_done(run: RunSpec, record: dict) -> None:
            append_run(runs_file, record)
            done[run.key] = json.loads(json.dumps(jsonable(record)))  # as a rerun would read it back
            progress.finished(run, record)

        def on_fail(failure: RunFailure) -> None:
            failures.append(failure)
            progress.failed(failure.run, failure.error)

        if pending:
            backend.execute(cfg, out, pending, Driver(on_done, on_fail, progress, out / "tensorboard" if tensorboard else None))
    failed_file = out / FAILED_FILE
    if failures:  # the tracebacks, for the runs the summary lists as failed
        write_json(failed_file, [{"key": f.key, "error": f.error, "details": f.details} for f in failures])
    elif pending:
        failed_file.unlink(missing_ok=True)  # every run that was missing has now finished
    return BenchResult([done[r.key] for r in plan if r.key in done], failures)
