"""Where the runs of a benchmark execute: in this process (``LocalBackend``) or as Ray tasks (``RayBackend``).

A backend gets the pending runs and reports each one back to the driver as it ends, either with its
record (``on_done``) or as a ``RunFailure`` (``on_fail``); it never writes ``runs.jsonl`` itself, so
the resume rule is the same whatever ran the runs. Both call the same plain functions,
``runner.train_agent`` and ``runner.execute_run``.

Ray backend design: the driver submits one Ray task per run with the resources the config asks for
(``resources:`` of the bench, task or teacher entry; fractional GPUs allowed) and ``max_retries``
for workers that die (a run that raises is not retried: it would raise again). A trainable teacher
is trained once per task as its own task; the driver saves the agent under ``DIR/agents/`` and
passes its state to the evaluation runs through the object store, so workers need no shared disk.
"""

from __future__ import annotations

import traceback
from collections import defaultdict
from pathlib import Path
from typing import Any, Callable, Optional, Protocol

from l2t_bench.config import BenchConfig, RunSpec, import_modules
from l2t_bench.progress import BenchProgress
from l2t_bench.runner import RunFailure, agent_dir, execute_run, load_agent_state, train_agent

BACKENDS = ("local", "ray")

OnDone = Callable[[RunSpec, dict], None]
OnFail = Callable[[RunFailure], None]


class Backend(Protocol):
    """Executes pending runs and reports each exactly once, to ``on_done`` or to ``on_fail``."""

    name: str

    def execute(
        self,
        cfg: BenchConfig,
        out: Path,
        pending: list[RunSpec],
        *,
        on_done: OnDone,
        on_fail: OnFail,
        progress: BenchProgress,
        tensorboard: Optional[Path] = None,
    ) -> None: ...


def _one_line(err: BaseException) -> str:
    text = str(err).strip().splitlines()
    return f"{type(err).__name__}: {text[0] if text else ''}".rstrip(": ")


def _save_agent(run: RunSpec, state: dict, path: Path) -> None:
    from l2t_agents import make_teacher

    teacher = make_teacher(run.teacher.name, **run.teacher.kwargs)
    teacher.load_state_dict(state)
    teacher.save(path)


class LocalBackend:
    """The runs one after another in this process; a trainable teacher is trained before its first run."""

    name = "local"

    def execute(
        self,
        cfg: BenchConfig,
        out: Path,
        pending: list[RunSpec],
        *,
        on_done: OnDone,
        on_fail: OnFail,
        progress: BenchProgress,
        tensorboard: Optional[Path] = None,
    ) -> None:
        agents: dict[Path, dict] = {}
        training_failed: dict[Path, str] = {}
        for run in pending:
            progress.started(run)
            state, agent = None, None
            if run.teacher.trainable:
                path = agent_dir(out, run)
                agent = str(path.relative_to(out))
                if path in training_failed:
                    on_fail(RunFailure(run, training_failed[path]))
                    continue
                try:
                    if not path.exists():
                        report = progress.training(f"{run.teacher.label} on {run.task.label}", cfg.timesteps(run.teacher) or 1)
                        try:
                            train_agent(cfg, run, tensorboard=tensorboard, progress=report).save(path)
                        finally:
                            progress.training_done()
                    if path not in agents:
                        agents[path] = load_agent_state(run, path)
                except Exception as err:
                    training_failed[path] = f"training its agent failed: {_one_line(err)}"
                    on_fail(RunFailure(run, training_failed[path], traceback.format_exc()))
                    continue
                state = agents[path]
            try:
                record = execute_run(cfg, run, state, agent)
            except Exception as err:  # reported; the other runs go on (Ctrl-C is not an Exception)
                on_fail(RunFailure(run, _one_line(err), traceback.format_exc()))
                continue
            on_done(run, record)


def import_ray() -> Any:
    """``ray``, or an error that names the extra to install."""
    try:
        import ray
    except ImportError as err:
        raise ImportError(f'--backend ray needs the ray package ({err}): pip install "l2t-env[ray]"') from err
    return ray


def _remote_train(cfg: BenchConfig, run: RunSpec, tensorboard: Optional[str]) -> dict:
    """Ray task: train the run's teacher and return its state (the driver saves it)."""
    import_modules(cfg.imports)
    return train_agent(cfg, run, tensorboard=Path(tensorboard) if tensorboard else None).state_dict()


def _remote_run(cfg: BenchConfig, run: RunSpec, agent_state: Optional[dict], agent: Optional[str]) -> dict:
    """Ray task: one run (``execute_run`` after the config's ``imports``)."""
    import_modules(cfg.imports)
    return execute_run(cfg, run, agent_state, agent)


class RayBackend:
    """Each run a Ray task on a cluster (``address``: ``auto``, ``ray://host:port``) or a local Ray.

    Without an address and with no Ray running in this process, a local Ray is started (with
    ``num_cpus`` CPUs, default all) and shut down at the end. A worker that dies is retried up to
    the config's ``max_retries``; a run that raises is reported at once.
    """

    name = "ray"

    def __init__(self, address: Optional[str] = None, num_cpus: Optional[int] = None) -> None:
        self.address, self.num_cpus = address, num_cpus
        import_ray()

    def _init(self, ray: Any) -> bool:
        """Connect (or start a local Ray); True when this call started it and must shut it down."""
        if ray.is_initialized():
            return False
        if self.address:
            ray.init(address=self.address)
        else:
            ray.init(num_cpus=self.num_cpus, include_dashboard=False)
        return True

    def execute(
        self,
        cfg: BenchConfig,
        out: Path,
        pending: list[RunSpec],
        *,
        on_done: OnDone,
        on_fail: OnFail,
        progress: BenchProgress,
        tensorboard: Optional[Path] = None,
    ) -> None:
        ray = import_ray()
        started = self._init(ray)
        train_task, run_task = ray.remote(_remote_train), ray.remote(_remote_run)
        in_flight: dict[Any, tuple[str, Any]] = {}

        def submit(run: RunSpec, state: Any, agent: Optional[str]) -> None:
            options = dict(cfg.run_resources(run), max_retries=cfg.max_retries, retry_exceptions=False)
            ref = run_task.options(name=f"l2t run {run.key}", **options).remote(cfg, run, state, agent)
            in_flight[ref] = ("run", run)

        to_train: dict[Path, list[RunSpec]] = defaultdict(list)  # the pending runs of each trained agent
        try:
            for run in pending:
                if not run.teacher.trainable:
                    submit(run, None, None)
                    continue
                path = agent_dir(out, run)
                if path.exists() or path in to_train:
                    to_train[path].append(run)
                    continue
                options = dict(cfg.run_resources(run), max_retries=cfg.max_retries, retry_exceptions=False)
                ref = train_task.options(name=f"l2t train {path.name}", **options).remote(
                    cfg, run, str(tensorboard) if tensorboard else None
                )
                in_flight[ref] = ("train", path)
                to_train[path].append(run)
            for path, runs in to_train.items():  # agents saved by an earlier invocation
                if path.exists():
                    self._submit_agent(ray, out, path, runs, load_agent_state(runs[0], path), submit)
            while in_flight:
                ready, _ = ray.wait(list(in_flight), num_returns=1)
                for ref in ready:
                    kind, item = in_flight.pop(ref)
                    try:
                        result = ray.get(ref)
                    except Exception as err:  # a RayTaskError (the run raised) or a worker that died past its retries
                        error = self._describe(ray, err, cfg)
                        details = str(err)
                        if kind == "run":
                            on_fail(RunFailure(item, error, details))
                        else:
                            for run in to_train[item]:
                                on_fail(RunFailure(run, f"training its agent failed: {error}", details))
                        continue
                    if kind == "run":
                        on_done(item, result)
                    else:
                        _save_agent(to_train[item][0], result, item)
                        self._submit_agent(ray, out, item, to_train[item], result, submit)
        except BaseException:
            for ref in in_flight:
                ray.cancel(ref, force=True)
            raise
        finally:
            if started:
                ray.shutdown()

    @staticmethod
    def _submit_agent(ray: Any, out: Path, path: Path, runs: list[RunSpec], state: dict, submit: Callable) -> None:
        state_ref = ray.put(state)  # one copy in the object store for all the seeds
        for run in runs:
            submit(run, state_ref, str(path.relative_to(out)))

    @staticmethod
    def _describe(ray: Any, err: BaseException, cfg: BenchConfig) -> str:
        if isinstance(err, ray.exceptions.RayTaskError):
            cause = getattr(err, "cause", None)
            return _one_line(cause) if isinstance(cause, BaseException) else _one_line(err)
        if isinstance(err, ray.exceptions.WorkerCrashedError):
            return f"its worker process died {cfg.max_retries + 1} time(s) (max_retries={cfg.max_retries}): {_one_line(err)}"
        return _one_line(err)


def make_backend(name: str, address: Optional[str] = None) -> Backend:
    """A backend by its ``--backend`` name."""
    if name == "local":
        if address:
            raise ValueError(f"--address {address!r} is for --backend ray, not {name!r}")
        return LocalBackend()
    if name == "ray":
        return RayBackend(address=address)
    raise ValueError(f"unknown backend {name!r}; valid: {list(BACKENDS)}")
