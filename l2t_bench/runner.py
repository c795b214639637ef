"""Running the runs of a benchmark, resumable run by run, on a backend (in this process or on Ray).

``execute_run`` (one run -> its record) and ``train_agent`` are plain functions that every backend
calls, in this process or in a worker; ``run_bench`` is the driver: it plans, skips what
``runs.jsonl`` already holds, and alone appends each record as its run finishes.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Callable, Optional, Union

import yaml
from rich.console import Console

from l2t_bench.config import BenchConfig, RunSpec, plan_runs
from l2t_bench.options import jsonable
from l2t_bench.progress import BenchProgress
from l2t_bench.records import RUNS_FILE, append_run, read_runs, repair_runs_file, run_record

if TYPE_CHECKING:
    from l2t_bench.backends import Backend


def agent_dir(out: Path, run: RunSpec) -> Path:
    """Where a trained agent of this task, teacher and settings is kept (seed-independent)."""
    return out / "agents" / f"{run.task.label}__{run.teacher.label}__{run.config_hash}"


def train_agent(
    cfg: BenchConfig,
    run: RunSpec,
    *,
    tensorboard: Optional[Path] = None,
    progress: Optional[Callable[[int, int], Any]] = None,
) -> Any:
    """Train the trainable teacher of ``run`` on the config's training seeds; return the teacher."""
    from l2t_agents import make_teacher

    teacher = make_teacher(run.teacher.name, **run.teacher.kwargs)
    teacher.train(
        run.task.name,
        cfg.train_seeds,
        total_timesteps=cfg.timesteps(run.teacher),
        env_kwargs={**cfg.env_kwargs, **run.task.overrides, "device": cfg.device},
        tensorboard_log=str(tensorboard) if tensorboard else None,
        progress=progress,
    )
    return teacher


def load_agent_state(run: RunSpec, path: Path) -> dict:
    """The state of the trained agent saved at ``path``, to hand to ``execute_run`` (any process)."""
    from l2t_agents import make_teacher

    teacher = make_teacher(run.teacher.name, **run.teacher.kwargs)
    teacher.load(path)
    return teacher.state_dict()


def execute_run(cfg: BenchConfig, run: RunSpec, agent_state: Optional[dict] = None, agent: Optional[str] = None) -> dict:
    """One run: a fresh teacher (a trained one acts frozen from ``agent_state``) and env, one episode.

    ``agent`` is where the trained agent lies under the output folder, for the record.
    """
    import l2t_env  # noqa: F401  (registers L2T-v0)
    from l2t_agents import make_env, make_teacher, run_episode

    teacher = make_teacher(run.teacher.name, **run.teacher.kwargs)
    train_time = None
    if run.teacher.trainable:
        if agent_state is None:
            raise ValueError(f"run {run.key}: teacher {run.teacher.label!r} acts as trained on train_seeds, but no trained agent was given")
        teacher.load_state_dict(agent_state)
        teacher.learning = False
        train_time = getattr(teacher, "meta", {}).get("train_time")
    env = make_env(teacher, run.task.name, device=cfg.device, **cfg.env_kwargs, **run.task.overrides)
    try:
        episode = run_episode(env, teacher, run.seed)
    finally:
        env.close()
    return run_record(run, episode, agent, train_time, str(env.unwrapped.device))


@dataclass
class RunFailure:
    """A run that raised or whose worker died past its retries; it is not in ``runs.jsonl``."""

    run: RunSpec
    error: str  # one line: the exception's type and message
    details: str = ""  # the traceback, where there is one

    @property
    def key(self) -> str:
        return self.run.key


@dataclass
class BenchResult:
    """The records of the plan's finished runs, in plan order, and the runs that failed this time."""

    records: list[dict] = field(default_factory=list)
    failures: list[RunFailure] = field(default_factory=list)


def run_bench(
    cfg: BenchConfig,
    out: Union[str, Path],
    *,
    backend: Optional["Backend"] = None,
    console: Optional[Console] = None,
    quiet: bool = False,
    tensorboard: bool = False,
    live: Optional[bool] = None,
) -> BenchResult:
    """Run every planned run not yet in ``out/runs.jsonl`` on ``backend`` (default: this process).

    A run that fails is reported and does not stop the others; rerunning resumes with the runs
    still missing. ``live`` forces the progress bar on or off (default: on a terminal only).
    """
    from l2t_bench.backends import LocalBackend

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
            f"bench [bold]{cfg.name}[/]: {len(cfg.tasks)} task(s) x {len(cfg.teachers)} teacher(s) x {len(cfg.seeds)} seed(s) "
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
            backend.execute(cfg, out, pending, on_done=on_done, on_fail=on_fail, progress=progress,
                            tensorboard=out / "tensorboard" if tensorboard else None)
    return BenchResult([done[r.key] for r in plan if r.key in done], failures)
