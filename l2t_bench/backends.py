"""Where the runs of a benchmark execute: in this process (``LocalBackend``) or as Ray tasks (``RayBackend``).

A backend gets the pending runs and reports each one back to the driver as it ends, either with its
record (``on_done``) or as a ``RunFailure`` (``on_fail``); it never writes ``runs.jsonl`` itself, so
the resume rule is the same whatever ran the runs. Both call the same plain functions,
``runner.prepare_agent`` and ``runner.execute_run``.

Ray backend design: the driver submits one Ray task per run with the resources the config asks for
(``resources:`` of the bench, task or teacher entry; fractional GPUs allowed) and ``max_retries``
for workers that die (a run that raises is not retried: it would raise again). A teacher that is
trained (SB3) or pretrained before evaluation is prepared once, as its own task; the driver saves it
under ``DIR/agents/`` and ships its files to the evaluation runs through the object store, so the
workers need no disk shared with the driver. The seeds of a batching teacher (``batch_seeds``) are
one task, one vector env; those of a trained one wait, as a group, for its agent.
"""

from __future__ import annotations

import tempfile
import traceback
from collections import defaultdict
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Iterator, Optional, Protocol, Union

from l2t_bench.config import BenchConfig, RunSpec, import_modules
from l2t_bench.numerics import is_pinned, pinned_environment
from l2t_bench.progress import BenchProgress
from l2t_bench.runner import (
    RunFailure,
    agent_path,
    agent_work,
    batch_groups,
    checkpoint_path,
    execute_batched,
    execute_run,
    pack_agent,
    prepare_agent,
    unpack_agent,
)

BACKENDS = ("local", "ray")

@dataclass
class Driver:
    """The driver's side of a benchmark, which a backend reports to: each run exactly once, to
    ``on_done`` (with its record) or to ``on_fail``."""

    on_done: Callable[[RunSpec, dict], None]
    on_fail: Callable[[RunFailure], None]
    progress: BenchProgress
    #: where SB3 training logs go (``--tensorboard``), or None
    tensorboard: Optional[Path] = None


class Backend(Protocol):
    """Executes the pending runs of a benchmark whose output folder is ``out``."""

    name: str

    def execute(self, cfg: BenchConfig, out: Path, pending: list[RunSpec], driver: Driver) -> None: ...


def _one_line(err: BaseException) -> str:
    text = str(err).strip().splitlines()
    return f"{type(err).__name__}: {text[0] if text else ''}".rstrip(": ")


class LocalBackend:
    """The runs one after another in this process; a trainable teacher is trained before its first
    run (or its first batch of seeds)."""

    name = "local"

    def execute(self, cfg: BenchConfig, out: Path, pending: list[RunSpec], driver: Driver) -> None:
        on_done, on_fail, progress = driver.on_done, driver.on_fail, driver.progress
        failed: dict[Path, str] = {}  # agents whose preparation failed: their other runs fail without retrying it
        for group in batch_groups(cfg, pending):
            run = group[0]
            for each in group:
                progress.started(each)
            path = agent_path(out, cfg, run)
            error = self._prepare(cfg, run, path, failed, driver)
            if error is not None:  # one failed training fails all its seeds; the other groups go on
                for each in group:
                    on_fail(RunFailure(each, *error))
                continue
            label = str(path.relative_to(out)) if path else None
            if cfg.batches(run.teacher):  # the seeds of a batching teacher: one vector env, one record each
                try:
                    records = execute_batched(cfg, group, path, label)
                except Exception as err:
                    for each in group:
                        on_fail(RunFailure(each, _one_line(err), traceback.format_exc()))
                    continue
                for each, record in zip(group, records):
                    on_done(each, record)
                continue
            try:
                record = execute_run(
                    cfg, run, path, label, checkpoint_path(out, run),
                    on_resume=lambda t: progress.console.print(f"{run.key}: resumed from its checkpoint at teaching step {t}", markup=False),
                )
            except Exception as err:  # reported; the other runs go on (Ctrl-C is not an Exception)
                on_fail(RunFailure(run, _one_line(err), traceback.format_exc()))
                continue
            on_done(run, record)

    @staticmethod
    def _prepare(cfg: BenchConfig, run: RunSpec, path: Optional[Path], failed: dict[Path, str], driver: Driver) -> Optional[tuple[str, str]]:
        """Train or pretrain the agent at ``path`` unless it is saved already: None when it is ready
        (or none is needed), else the failure's line and traceback (remembered in ``failed``)."""
        if path is None:
            return None
        if path in failed:
            return failed[path], ""
        if path.exists():
            return None
        progress = driver.progress
        try:
            report = progress.training(*agent_work(cfg, run))
            try:
                prepare_agent(cfg, run, path, tensorboard=driver.tensorboard, progress=report, log=progress.note)
            finally:
                progress.training_done()
        except Exception as err:
            failed[path] = f"preparing its agent failed: {_one_line(err)}"
            return failed[path], traceback.format_exc()
        return None


def import_ray() -> Any:
    """``ray``, or an error that names the extra to install."""
    try:
        import ray
    except ImportError as err:
        raise ImportError(f'--backend ray needs the ray package ({err}): pip install "l2t-env[ray]"') from err
    return ray


def _remote_prepare(cfg: BenchConfig, run: RunSpec, name: str, tensorboard: Optional[str]) -> dict[str, bytes]:
    """Ray task: train or pretrain the run's teacher in a scratch folder; return its files (the driver saves them)."""
    import_modules(cfg.imports)
    with tempfile.TemporaryDirectory(prefix="l2t-agent-") as tmp:
        path = Path(tmp) / name
        prepare_agent(cfg, run, path, tensorboard=Path(tensorboard) if tensorboard else None)
        return pack_agent(path)


@contextmanager
def _unpacked(agent_files: Optional[dict[str, bytes]]) -> Iterator[Optional[Path]]:
    """A shipped agent unpacked in a scratch folder of the worker while the run uses it (None: no agent)."""
    if not agent_files:
        yield None
        return
    with tempfile.TemporaryDirectory(prefix="l2t-agent-") as tmp:
        name = Path(next(iter(agent_files))).parts[0]
        yield unpack_agent(agent_files, Path(tmp) / name)


def _remote_run(
    cfg: BenchConfig, run: RunSpec, agent_files: Optional[dict[str, bytes]], agent_label: Optional[str], checkpoint: Optional[str]
) -> dict:
    """Ray task: one run (``execute_run`` after the config's ``imports``, its agent unpacked locally).

    ``checkpoint`` is the driver's path: a retried run resumes from it where the worker sees the
    driver's output folder (one machine, or a shared filesystem), and starts over otherwise.
    """
    import_modules(cfg.imports)
    ckpt = Path(checkpoint) if checkpoint else None
    with _unpacked(agent_files) as agent:
        return execute_run(cfg, run, agent, agent_label if agent else None, ckpt)


def _remote_batch(cfg: BenchConfig, runs: list[RunSpec], agent_files: Optional[dict[str, bytes]] = None, agent_label: Optional[str] = None) -> list[dict]:
    """Ray task: the seeds of a batching teacher as one vector-env run (``execute_batched``), with
    its trained agent unpacked locally when it has one."""
    import_modules(cfg.imports)
    with _unpacked(agent_files) as agent:
        return execute_batched(cfg, runs, agent, agent_label if agent else None)


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
        # a pinned driver (l2t bench --pin-numerics) pins its workers too, on every node
        pins = {"runtime_env": {"env_vars": pinned_environment()}} if is_pinned() else {}
        if self.address:
            ray.init(address=self.address, **pins)
        else:
            ray.init(num_cpus=self.num_cpus, include_dashboard=False, **pins)
        return True

    def execute(self, cfg: BenchConfig, out: Path, pending: list[RunSpec], driver: Driver) -> None:
        on_done, on_fail, tensorboard = driver.on_done, driver.on_fail, driver.tensorboard
        self.check_gpus(cfg, pending)
        ray = import_ray()
        started = self._init(ray)
        prepare_task, run_task, batch_task = ray.remote(_remote_prepare), ray.remote(_remote_run), ray.remote(_remote_batch)
        in_flight: dict[Any, tuple[str, Any]] = {}  # ref -> ("run", RunSpec), ("batch", [RunSpec]) or ("agent", its path)
        # what waits for each agent: single runs, and batched groups of seeds (a list of runs)
        waiting: dict[Path, list[Union[RunSpec, list[RunSpec]]]] = defaultdict(list)

        def options(run: RunSpec, what: str) -> dict:
            return dict(cfg.run_resources(run), max_retries=cfg.max_retries, retry_exceptions=False, name=f"l2t {what}")

        def submit(run: RunSpec, files: Any = None, label: Optional[str] = None) -> None:
            ckpt = str(checkpoint_path(out.resolve(), run)) if cfg.checkpoint_every else None
            in_flight[run_task.options(**options(run, run.key)).remote(cfg, run, files, label, ckpt)] = ("run", run)

        def submit_batch(group: list[RunSpec], files: Any = None, label: Optional[str] = None) -> None:
            what = f"{group[0].key} +{len(group) - 1} seeds"
            in_flight[batch_task.options(**options(group[0], what)).remote(cfg, group, files, label)] = ("batch", group)

        def submit_runs(path: Path, files: dict[str, bytes]) -> None:
            files_ref = ray.put(files)  # one copy in the object store for all the seeds
            for item in waiting[path]:
                (submit_batch if isinstance(item, list) else submit)(item, files_ref, str(path.relative_to(out)))

        try:
            for group in batch_groups(cfg, pending):
                run = group[0]
                batched = cfg.batches(run.teacher)  # the seeds of a batching teacher: one task, one vector env
                path = agent_path(out, cfg, run)
                if path is None and batched:
                    submit_batch(group)
                    continue
                if path is None:
                    submit(run)
                    continue
                if path not in waiting and not path.exists():
                    ref = prepare_task.options(**options(run, f"agent {path.name}")).remote(
                        cfg, run, path.name, str(tensorboard) if tensorboard else None
                    )
                    in_flight[ref] = ("agent", path)
                    driver.progress.note("{} ({} steps), as a Ray task".format(*agent_work(cfg, run)))
                waiting[path].append(group if batched else run)
            for path in waiting:
                if path.exists():  # saved by an earlier invocation
                    submit_runs(path, pack_agent(path))
            while in_flight:
                ready, _ = ray.wait(list(in_flight), num_returns=1)
                for ref in ready:
                    kind, item = in_flight.pop(ref)
                    try:
                        result = ray.get(ref)
                    except Exception as err:  # a RayTaskError (the run raised) or a worker that died past its retries
                        error, details = self._describe(ray, err, cfg), str(err)
                        if kind == "run":
                            on_fail(RunFailure(item, error, details))
                        elif kind == "batch":
                            for run in item:
                                on_fail(RunFailure(run, error, details))
                        else:
                            for waiter in waiting[item]:
                                for run in waiter if isinstance(waiter, list) else [waiter]:
                                    on_fail(RunFailure(run, f"preparing its agent failed: {error}", details))
                        continue
                    if kind == "run":
                        on_done(item, result)
                    elif kind == "batch":
                        for run, record in zip(item, result):
                            on_done(run, record)
                    else:
                        unpack_agent(result, item)
                        submit_runs(item, result)
        except BaseException:
            for ref in in_flight:
                ray.cancel(ref, force=True)
            raise
        finally:
            if started:
                ray.shutdown()

    @staticmethod
    def check_gpus(cfg: BenchConfig, pending: list[RunSpec]) -> None:
        """Ray hides the GPUs from a task that asks for none: a CUDA device needs ``num_gpus`` per run."""
        if not cfg.device.startswith("cuda"):
            return
        without = sorted({f"{r.task.label} / {r.teacher.label}" for r in pending if not cfg.run_resources(r).get("num_gpus")})
        if without:
            raise ValueError(
                f"device={cfg.device!r}, but the runs of {without} ask Ray for no GPU, and Ray hides the GPUs from such "
                f"tasks; give them resources: {{num_gpus: ...}} (fractions allowed, e.g. 0.25) or use device: cpu"
            )

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
