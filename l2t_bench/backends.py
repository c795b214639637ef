"""Where the runs of a benchmark execute: in this process (``LocalBackend``) or as Ray tasks (``RayBackend``).

A backend gets the pending runs and reports each one back to the driver as it ends, either with its
record (``on_done``) or as a ``RunFailure`` (``on_fail``); it never writes ``runs.jsonl`` itself, so
the resume rule is the same whatever ran the runs. All call the same plain functions,
``runner.prepare_agent`` and ``runner.execute_run``; the driver above them is
:func:`l2t_bench.driver.run_bench`.

Task backends: :func:`schedule` runs the pending runs as independent tasks wherever a
:class:`TaskRunner` sends them: Ray tasks (``--backend ray``, with the resources the config asks for:
``resources:`` of the bench, task or teacher entry, fractional GPUs allowed, and ``max_retries`` for
workers that die; a run that raises is not retried: it would raise again) or the worker processes
of the local backend (``--workers N``). A teacher that is trained (SB3) or pretrained before
evaluation is prepared once, as its own task submitted first; the driver saves it under
``DIR/agents/`` and ships its files to the evaluation runs (through Ray's object store), so the
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

from l2t_bench.allocator import keep_large_blocks
from l2t_bench.config import BenchConfig, RunSpec, check_workers, import_modules
from l2t_bench.numerics import is_pinned, pinned_environment
from l2t_bench.progress import BenchProgress
from l2t_bench.runner import (
    RunFailure,
    agent_label,
    agent_path,
    agent_work,
    batch_checkpoint_path,
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
    run (or its first batch of seeds). With ``workers`` > 1 (``l2t bench --workers N``, or the
    config's ``workers``), the runs are tasks of :func:`schedule` in N worker processes of this
    machine instead. Where runs execute is the backend's, not the runs': it is in no run's key."""

    name = "local"

    def __init__(self, workers: int = 1) -> None:
        self.workers = check_workers(workers, "workers")

    def execute(self, cfg: BenchConfig, out: Path, pending: list[RunSpec], driver: Driver) -> None:
        if self.workers > 1:
            self._execute_in_workers(cfg, out, pending, driver, self.workers)
            return
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
            label = agent_label(out, path)
            if cfg.batches(run.teacher):  # the seeds of a batching teacher: one vector env, one record each
                try:
                    records = execute_batched(
                        cfg, group, path, label, batch_checkpoint_path(out, group),
                        on_resume=lambda t: progress.console.print(f"{run.key} +{len(group) - 1} seeds: resumed from their checkpoint at teaching step {t}", markup=False),
                    )
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
    def _execute_in_workers(cfg: BenchConfig, out: Path, pending: list[RunSpec], driver: Driver, workers: int) -> None:
        """``workers > 1``: the runs as tasks of :func:`schedule` in that many worker processes, each with
        an equal share of this process's torch threads (at least one)."""
        import torch

        tasks = _PoolTasks(workers, max(1, torch.get_num_threads() // workers))
        try:
            schedule(cfg, out, pending, driver, tasks)
        except BaseException:  # Ctrl-C included: stop the workers now; finished runs are already written
            tasks.close(terminate=True)
            raise
        tasks.close()

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


def _remote_prepare(cfg: BenchConfig, run: RunSpec, name: str, tensorboard: Optional[str], keep: Optional[str] = None) -> dict[str, bytes]:
    """Ray task: train or pretrain the run's teacher in a scratch folder; return its files (the driver saves them).

    ``keep``: a folder on a disk the driver shares (local worker processes) for what must outlive a
    killed worker: a training's learning curve and snapshot, which the rerun resumes from."""
    keep_large_blocks()
    import_modules(cfg.imports)
    with tempfile.TemporaryDirectory(prefix="l2t-agent-") as tmp:
        path = Path(tmp) / name
        prepare_agent(cfg, run, path, tensorboard=Path(tensorboard) if tensorboard else None, keep=Path(keep) if keep else None)
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


def _on_node(records: list[dict]) -> list[dict]:
    """The records with where they ran (``node``: the Ray node's id and the host name) when this is a
    Ray worker; unchanged in a worker process of ``--workers`` (the same functions run there)."""
    import socket
    import sys

    ray = sys.modules.get("ray")
    if ray is None or not ray.is_initialized():
        return records
    node = {"id": ray.get_runtime_context().get_node_id(), "host": socket.gethostname()}
    return [{**record, "node": node} for record in records]


def _remote_run(
    cfg: BenchConfig, run: RunSpec, agent_files: Optional[dict[str, bytes]], agent_label: Optional[str], checkpoint: Optional[str]
) -> dict:
    """Ray task: one run (``execute_run`` after the config's ``imports``, its agent unpacked locally).

    ``checkpoint`` is the driver's path: a retried run resumes from it where the worker sees the
    driver's output folder (one machine, or a shared filesystem), and starts over otherwise.
    """
    keep_large_blocks()
    import_modules(cfg.imports)
    ckpt = Path(checkpoint) if checkpoint else None
    with _unpacked(agent_files) as agent:
        return _on_node([execute_run(cfg, run, agent, agent_label if agent else None, ckpt)])[0]


def _remote_batch(
    cfg: BenchConfig, runs: list[RunSpec], agent_files: Optional[dict[str, bytes]] = None, agent_label: Optional[str] = None,
    checkpoint: Optional[str] = None,
) -> list[dict]:
    """Ray task: the seeds of a batching teacher as one vector-env run (``execute_batched``), with
    its trained agent unpacked locally when it has one; ``checkpoint`` as for :func:`_remote_run`."""
    keep_large_blocks()
    import_modules(cfg.imports)
    ckpt = Path(checkpoint) if checkpoint else None
    with _unpacked(agent_files) as agent:
        return _on_node(execute_batched(cfg, runs, agent, agent_label if agent else None, ckpt))


class TaskRunner(Protocol):
    """Where :func:`schedule` sends its tasks: Ray (:class:`_RayTasks`) or worker processes (:class:`_PoolTasks`)."""

    where: str  # for progress lines: "as a Ray task", "in a worker process"
    shared_disk: bool  # whether tasks see the driver's files (local workers) or not (Ray)

    def submit(self, fn: Callable[..., Any], args: tuple, run: RunSpec, what: str) -> Any: ...

    def share(self, value: Any) -> Any: ...

    def wait(self, handles: list) -> list: ...

    def result(self, handle: Any) -> Any: ...

    def cancel(self, handles: list) -> None: ...

    def describe(self, err: BaseException) -> str: ...


def schedule(cfg: BenchConfig, out: Path, pending: list[RunSpec], driver: Driver, tasks: TaskRunner) -> None:
    """Run the pending runs as independent tasks, each reported to the driver as it ends.

    A teacher that is trained or pretrained first is prepared once, as its own task (submitted
    before everything else: its runs wait for it); the driver saves it under ``DIR/agents/`` and
    ships its files to its runs, so workers need no disk shared with the driver. The seeds of a
    batching teacher are one task, one vector env; those of a trained one wait, as a group, for its agent.
    """
    on_done, on_fail, tensorboard = driver.on_done, driver.on_fail, driver.tensorboard
    in_flight: dict[Any, tuple[str, Any]] = {}  # handle -> ("run", RunSpec), ("batch", [RunSpec]) or ("agent", its path)
    # what waits for each agent: single runs, and batched groups of seeds (a list of runs)
    waiting: dict[Path, list[Union[RunSpec, list[RunSpec]]]] = defaultdict(list)
    ready: list[Union[RunSpec, list[RunSpec]]] = []  # runs and groups needing no agent, submitted after the agents' tasks

    def submit(item: Union[RunSpec, list[RunSpec]], files: Any = None, label: Optional[str] = None) -> None:
        if isinstance(item, list):
            ckpt = str(batch_checkpoint_path(out.resolve(), item)) if cfg.checkpoint_every else None
            handle = tasks.submit(_remote_batch, (cfg, item, files, label, ckpt), item[0], f"{item[0].key} +{len(item) - 1} seeds")
            in_flight[handle] = ("batch", item)
            return
        ckpt = str(checkpoint_path(out.resolve(), item)) if cfg.checkpoint_every else None
        in_flight[tasks.submit(_remote_run, (cfg, item, files, label, ckpt), item, item.key)] = ("run", item)

    def submit_waiting(path: Path, files: dict[str, bytes]) -> None:
        shared = tasks.share(files)  # one copy (in Ray's object store) for all the seeds
        for item in waiting[path]:
            submit(item, shared, agent_label(out, path))

    try:
        for group in batch_groups(cfg, pending):
            run = group[0]
            item = group if cfg.batches(run.teacher) else run  # a batching teacher's seeds: one task, one vector env
            path = agent_path(out, cfg, run)
            if path is None:
                ready.append(item)
                continue
            if path not in waiting and not path.exists():
                keep = str(path.resolve().parent) if tasks.shared_disk else None
                handle = tasks.submit(_remote_prepare, (cfg, run, path.name, str(tensorboard) if tensorboard else None, keep), run, f"agent {path.name}")
                in_flight[handle] = ("agent", path)
                driver.progress.note("{} ({} steps), {}".format(*agent_work(cfg, run), tasks.where))
            waiting[path].append(item)
        for path in waiting:
            if path.exists():  # saved by an earlier invocation
                submit_waiting(path, pack_agent(path))
        for item in ready:
            submit(item)
        while in_flight:
            for handle in tasks.wait(list(in_flight)):
                kind, item = in_flight.pop(handle)
                try:
                    result = tasks.result(handle)
                except Exception as err:  # the task raised, or its worker died (past Ray's retries)
                    error, details = tasks.describe(err), "".join(traceback.format_exception(type(err), err, err.__traceback__))
                    if kind == "agent":
                        for waiter in waiting[item]:
                            for run in waiter if isinstance(waiter, list) else [waiter]:
                                on_fail(RunFailure(run, f"preparing its agent failed: {error}", details))
                    else:
                        for run in item if kind == "batch" else [item]:
                            on_fail(RunFailure(run, error, details))
                    continue
                if kind == "run":
                    on_done(item, result)
                elif kind == "batch":
                    for run, record in zip(item, result):
                        on_done(run, record)
                else:
                    unpack_agent(result, item)
                    submit_waiting(item, result)
    except BaseException:
        tasks.cancel(list(in_flight))
        raise


class _RayTasks:
    """Each task a Ray task with the run's resources and the config's ``max_retries``."""

    where = "as a Ray task"
    shared_disk = False

    def __init__(self, ray: Any, cfg: BenchConfig) -> None:
        self.ray, self.cfg = ray, cfg
        self._remote: dict[Callable[..., Any], Any] = {}

    def submit(self, fn: Callable[..., Any], args: tuple, run: RunSpec, what: str) -> Any:
        if fn not in self._remote:
            self._remote[fn] = self.ray.remote(fn)
        options = dict(self.cfg.run_resources(run), max_retries=self.cfg.max_retries, retry_exceptions=False, name=f"l2t {what}")
        return self._remote[fn].options(**options).remote(*args)

    def share(self, value: Any) -> Any:
        return self.ray.put(value)

    def wait(self, handles: list) -> list:
        return self.ray.wait(handles, num_returns=1)[0]

    def result(self, handle: Any) -> Any:
        return self.ray.get(handle)

    def cancel(self, handles: list) -> None:
        for handle in handles:
            self.ray.cancel(handle, force=True)

    def describe(self, err: BaseException) -> str:
        ray = self.ray
        if isinstance(err, ray.exceptions.RayTaskError):
            cause = getattr(err, "cause", None)
            return _one_line(cause) if isinstance(cause, BaseException) else _one_line(err)
        if isinstance(err, ray.exceptions.WorkerCrashedError):
            return f"its worker process died {self.cfg.max_retries + 1} time(s) (max_retries={self.cfg.max_retries}): {_one_line(err)}"
        return _one_line(err)


def _init_worker(threads: int) -> None:
    """A worker process of :class:`_PoolTasks`: its share of the CPU's threads (the allocator
    setting comes with each task, as on Ray)."""
    import torch

    torch.set_num_threads(threads)


class _PoolTasks:
    """Each task in one of ``workers`` processes of this machine (``l2t bench --workers N``).

    Started with ``spawn`` (a forked child of a process that has run torch can hang in OpenMP);
    each worker gets ``threads`` torch threads. A worker that dies is not retried: every task in
    flight then fails, and the rerun resumes them.
    """

    where = "in a worker process"
    shared_disk = True

    def __init__(self, workers: int, threads: int) -> None:
        import multiprocessing
        from concurrent.futures import ProcessPoolExecutor

        self.pool = ProcessPoolExecutor(workers, mp_context=multiprocessing.get_context("spawn"), initializer=_init_worker, initargs=(threads,))

    def submit(self, fn: Callable[..., Any], args: tuple, run: RunSpec, what: str) -> Any:
        return self.pool.submit(fn, *args)

    def share(self, value: Any) -> Any:
        return value

    def wait(self, handles: list) -> list:
        from concurrent.futures import FIRST_COMPLETED, wait

        return list(wait(handles, return_when=FIRST_COMPLETED).done)

    def result(self, handle: Any) -> Any:
        return handle.result()

    def cancel(self, handles: list) -> None:
        for handle in handles:
            handle.cancel()

    def describe(self, err: BaseException) -> str:
        from concurrent.futures.process import BrokenProcessPool

        if isinstance(err, BrokenProcessPool):
            return f"a worker process died (workers are not retried; rerun to resume): {_one_line(err)}"
        return _one_line(err)

    def close(self, terminate: bool = False) -> None:
        """Shut the pool down; ``terminate`` also stops the runs still going (an interrupted benchmark)."""
        if terminate:
            processes = list((getattr(self.pool, "_processes", None) or {}).values())  # CPython's pool keeps them there
            self.pool.shutdown(wait=False, cancel_futures=True)
            for process in processes:
                process.terminate()
            return
        self.pool.shutdown(wait=True, cancel_futures=True)


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
        self.check_gpus(cfg, pending)
        ray = import_ray()
        started = self._init(ray)
        try:
            schedule(cfg, out, pending, driver, _RayTasks(ray, cfg))
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


def make_backend(name: str, address: Optional[str] = None, workers: Optional[int] = None) -> Backend:
    """A backend by its ``--backend`` name, with its own setting: the Ray cluster's ``address``, or
    the local backend's number of ``workers`` (default 1)."""
    if name == "local":
        if address:
            raise ValueError(f"--address {address!r} is for --backend ray, not {name!r}")
        return LocalBackend(1 if workers is None else workers)
    if name == "ray":
        if workers is not None:
            raise ValueError(f"--workers {workers!r} is for --backend local, not {name!r} (Ray places the runs itself)")
        return RayBackend(address=address)
    raise ValueError(f"unknown backend {name!r}; valid: {list(BACKENDS)}")
