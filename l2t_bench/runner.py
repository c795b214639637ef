"""One run of a benchmark, as plain functions every backend calls, in this process or in a worker.

``execute_run`` (one run -> its record), ``execute_batched`` (a batching teacher's seeds -> their
records) and ``prepare_agent`` (train or pretrain a teacher the runs start from), with where their
files lie. The layers above: :mod:`l2t_bench.backends` (where runs execute) calls these, and
:mod:`l2t_bench.driver` (``run_bench``: plan, skip what ``runs.jsonl`` holds, append each record)
drives a backend.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Optional

from l2t_bench.config import BenchConfig, RunSpec, pretrain_hash, pretrain_tasks
from l2t_bench.numerics import apply_pins_if_flagged
from l2t_bench.records import run_record


def agent_dir(out: Path, run: RunSpec) -> Path:
    """Where a trained agent of this task, teacher and settings is kept (seed-independent; the same
    folder whether its seeds are evaluated batched or one by one)."""
    return out / "agents" / f"{run.task.label}__{run.teacher.label}__{run.agent_hash or run.config_hash}"


def checkpoint_path(out: Path, run: RunSpec) -> Path:
    """Where a run's mid-episode checkpoint is kept while it runs (``checkpoint_every``)."""
    return out / "checkpoints" / f"{run.task.label}__{run.teacher.label}__seed{run.seed}__{run.config_hash}.pt"


def batch_checkpoint_path(out: Path, runs: list[RunSpec]) -> Path:
    """Where the mid-episode checkpoint of a batch of seeds (one vector env) is kept while it runs:
    keyed by task, teacher label, config hash and the seeds (a digest of them past a few)."""
    first, seeds = runs[0], [run.seed for run in runs]
    if len(seeds) <= 4:
        tag = "-".join(str(s) for s in seeds)
    else:
        tag = f"{seeds[0]}+{len(seeds) - 1}_" + hashlib.sha256(",".join(map(str, seeds)).encode()).hexdigest()[:10]
    return out / "checkpoints" / f"{first.task.label}__{first.teacher.label}__seeds{tag}__{first.config_hash}.pt"


def pretrained_path(out: Path, cfg: BenchConfig, run: RunSpec) -> Path:
    """Where the pretrained teacher of this run is kept: shared by every row with the same
    teacher, kwargs and pretraining (frozen and online rows, other labels)."""
    return out / "agents" / f"pretrained__{run.teacher.name}__{pretrain_hash(cfg, run.task, run.teacher)}.pt"


def agent_path(out: Path, cfg: BenchConfig, run: RunSpec) -> Optional[Path]:
    """Where the agent a run starts from lies (trained or pretrained), or None: a fresh teacher."""
    if run.teacher.agent_file is not None:
        return Path(run.teacher.agent_file)
    if run.teacher.trainable:
        return agent_dir(out, run)
    if run.teacher.pretrain is not None:
        return pretrained_path(out, cfg, run)
    return None


def learning_curve_paths(path: Path) -> tuple[Path, Path]:
    """Where a bench-trained agent's learning curve and training snapshot lie while it trains
    (beside its folder; the curve moves into the folder when training ends)."""
    return path.with_name(f".{path.name}.learning_curve.csv"), path.with_name(f".{path.name}.snapshot")


def prepare_agent(
    cfg: BenchConfig,
    run: RunSpec,
    path: Path,
    *,
    tensorboard: Optional[Path] = None,
    progress: Optional[Callable[[int, int], Any]] = None,
    log: Optional[Callable[[str], Any]] = None,
    keep: Optional[Path] = None,
) -> None:
    """Train (``train:`` SB3 agents) or pretrain (``pretrain:`` entries) the teacher of ``run`` and
    save it at ``path``; ``progress(done, total)`` follows env steps or episodes, ``log`` gets a
    line per pretraining episode. With the bench's ``train_eval`` the learning curve and the
    training snapshot lie in ``keep`` (default beside ``path``) while it trains, and a snapshot
    found there is resumed."""
    import time

    from l2t_agents import make_env, make_teacher

    apply_pins_if_flagged()
    if run.teacher.agent_file is not None:
        raise FileNotFoundError(f"teacher {run.teacher.label!r}: the agent {run.teacher.agent_file} named by load: is gone")
    teacher = make_teacher(run.teacher.name, **run.teacher.kwargs)
    if run.teacher.trainable:
        env_kwargs = {**cfg.env_kwargs_for(run.teacher), **run.task.overrides, "device": cfg.device}
        callback = snapshot = curve_file = None
        if cfg.train_eval is not None:  # a learning curve, and a snapshot at each point that a rerun resumes from
            from l2t_agents import make_vector_env
            from l2t_bench.curve_callback import LearningCurve

            curve_file, snapshot = learning_curve_paths(keep / path.name if keep is not None else path)
            seeds = cfg.train_eval["seeds"]
            callback = LearningCurve(
                teacher, lambda: make_vector_env(teacher, len(seeds), run.task.name, monitor_every=cfg.monitor_every(run.task), **env_kwargs),
                seeds, cfg.train_eval["every"], curve_file, snapshot_path=snapshot, label=run.teacher.label,
            )
        teacher.train(
            run.task.name,
            cfg.train_seeds,
            total_timesteps=cfg.timesteps(run.teacher),
            env_kwargs=env_kwargs,
            tensorboard_log=str(tensorboard) if tensorboard else None,
            progress=progress,
            callback=callback,
            resume=snapshot if snapshot is not None and snapshot.is_dir() else None,
        )
        teacher.save(path)
        if curve_file is not None:
            import shutil

            shutil.move(str(curve_file), str(path / "learning_curve.csv"))
            shutil.rmtree(snapshot, ignore_errors=True)
        return
    from l2t_agents.pretraining import PretrainPlan, pretrain, save_pretrained

    spec = run.teacher.pretrain
    tasks = {t.label: t for t in pretrain_tasks(cfg, run.task, run.teacher)}
    plan = PretrainPlan(seeds=spec.seeds, tasks=list(tasks), episodes=spec.episodes)
    total = len(plan.schedule())

    def on_episode(i: int, record: Any) -> None:
        if progress is not None:
            progress(i + 1, total)
        if log is not None:
            log(f"pretrain {path.name} episode {i + 1}: {record.task} seed {record.seed} test acc {record.final.get('test_acc', float('nan')):.4f}")

    start = time.perf_counter()
    records = pretrain(
        teacher, plan, eval_seeds=cfg.seeds, on_episode=on_episode,
        make_task_env=lambda t, label: make_env(t, tasks[label].name, device=cfg.device, **cfg.env_kwargs_for(run.teacher), **tasks[label].overrides),
    )
    save_pretrained(teacher, path, records, time.perf_counter() - start)


def agent_work(cfg: BenchConfig, run: RunSpec) -> tuple[str, int]:
    """What preparing the agent of ``run`` is (for progress): a description and its total steps."""
    if run.teacher.trainable:
        return f"training {run.teacher.label} on {run.task.label}", cfg.timesteps(run.teacher) or 1
    from l2t_agents.pretraining import PretrainPlan

    spec = run.teacher.pretrain
    plan = PretrainPlan(seeds=spec.seeds, tasks=[t.label for t in pretrain_tasks(cfg, run.task, run.teacher)], episodes=spec.episodes)
    return f"pretraining {run.teacher.label} for {run.task.label}", len(plan.schedule())


def execute_run(
    cfg: BenchConfig,
    run: RunSpec,
    agent: Optional[Path] = None,
    agent_label: Optional[str] = None,
    checkpoint: Optional[Path] = None,
    on_resume: Optional[Callable[[int], Any]] = None,
) -> dict:
    """One run: a fresh teacher (or the one saved at ``agent``: trained agents act frozen, pretrained
    ones as their entry says) and env, one episode -> its record.

    ``agent_label`` is where the agent lies under the output folder, for the record. With the
    config's ``checkpoint_every``, the episode is checkpointed at ``checkpoint`` and resumed from it
    when a killed attempt left one (``on_resume(teaching step)`` is told).
    """
    import l2t_env  # noqa: F401  (registers L2T-v0)
    from l2t_agents import make_env
    from l2t_bench.episodes import run_checkpointed_episode

    apply_pins_if_flagged()  # a process (or Ray worker) started with pinned numerics sets torch's own switches

    teacher, train_time = load_teacher(run, agent)
    env = make_env(
        teacher, run.task.name, device=cfg.device, monitor_every=cfg.monitor_every(run.task), **cfg.env_kwargs_for(run.teacher), **run.task.overrides
    )
    if cfg.checkpoint_every is not None and checkpoint is None:
        raise ValueError(f"run {run.key}: checkpoint_every={cfg.checkpoint_every} needs a checkpoint path")
    try:
        episode = run_checkpointed_episode(
            env, teacher, run.seed, checkpoint_every=cfg.checkpoint_every, path=checkpoint, on_resume=on_resume
        )
    finally:
        env.close()
    return run_record(run, episode, agent_label, train_time, str(env.unwrapped.device))


def load_teacher(run: RunSpec, agent: Optional[Path] = None) -> tuple[Any, Optional[float]]:
    """The teacher a run starts from and its agent's training time: a fresh one, or the one saved at
    ``agent`` (trained agents act frozen, pretrained ones as their entry says)."""
    from l2t_agents import make_teacher

    teacher = make_teacher(run.teacher.name, **run.teacher.kwargs)
    trained = run.teacher.trainable or run.teacher.agent_file is not None
    if not (trained or run.teacher.pretrain is not None):
        return teacher, None
    if agent is None:
        raise ValueError(f"run {run.key}: teacher {run.teacher.label!r} starts from a trained agent, but none was given")
    teacher.load(agent)
    if trained:
        teacher.learning = False
        return teacher, getattr(teacher, "meta", {}).get("train_time")
    from l2t_agents.pretraining import pretrained_meta

    teacher.learning = run.teacher.pretrain.online
    return teacher, pretrained_meta(agent).get("train_time")


def batch_groups(cfg: BenchConfig, runs: list[RunSpec]) -> list[list[RunSpec]]:
    """The runs grouped for execution: the pending seeds of a (task, teacher) that
    :meth:`BenchConfig.batches` together, every other run alone; in plan order of first runs."""
    groups: dict[Any, list[RunSpec]] = {}
    for run in runs:
        key = (run.task.label, run.teacher.label, run.config_hash) if cfg.batches(run.teacher) else run.key
        groups.setdefault(key, []).append(run)
    return list(groups.values())


def execute_batched(
    cfg: BenchConfig,
    runs: list[RunSpec],
    agent: Optional[Path] = None,
    agent_label: Optional[str] = None,
    checkpoint: Optional[Path] = None,
    on_resume: Optional[Callable[[int], Any]] = None,
) -> list[dict]:
    """The seeds of one (task, teacher) as one run of the native vector env: the teacher (fresh, or
    the trained agent saved at ``agent``, frozen) acts on the batch of students
    (:func:`l2t_agents.run_episodes`); one record per seed, as :func:`execute_run` writes it
    (``wall_time``: the batched run's divided by the seeds). With the config's
    ``checkpoint_every``, the batch is checkpointed at ``checkpoint`` (:func:`batch_checkpoint_path`)
    and resumed from it when a killed attempt left one (``on_resume(teaching step)`` is told)."""
    import l2t_env  # noqa: F401  (registers L2T-v0)
    from l2t_agents import make_vector_env
    from l2t_bench.episodes import run_checkpointed_episodes

    apply_pins_if_flagged()  # as execute_run: a pinned process's workers set torch's switches
    first = runs[0]
    teacher, train_time = load_teacher(first, agent)
    env = make_vector_env(
        teacher, len(runs), first.task.name, device=cfg.device, monitor_every=cfg.monitor_every(first.task),
        **cfg.env_kwargs_for(first.teacher), **first.task.overrides,
    )
    if cfg.checkpoint_every is not None and checkpoint is None:
        raise ValueError(f"runs {first.key} +{len(runs) - 1} seeds: checkpoint_every={cfg.checkpoint_every} needs a checkpoint path")
    try:
        episodes = run_checkpointed_episodes(
            env, teacher, [run.seed for run in runs], checkpoint_every=cfg.checkpoint_every, path=checkpoint, on_resume=on_resume
        )
    finally:
        env.close()
    return [run_record(run, episode, agent_label, train_time, str(env.unwrapped.device)) for run, episode in zip(runs, episodes)]


def agent_label(out: Path, path: Optional[Path]) -> Optional[str]:
    """How a record names its agent: relative to the bench folder, or as given (a ``load:`` file elsewhere)."""
    if path is None:
        return None
    try:
        return str(path.relative_to(out))
    except ValueError:
        return str(path)


def pack_agent(path: Path) -> dict[str, bytes]:
    """A saved agent (a file or a folder) as ``{path relative to its parent: bytes}``, to ship to a worker."""
    files = [path] if path.is_file() else sorted(p for p in path.rglob("*") if p.is_file())
    return {str(p.relative_to(path.parent)): p.read_bytes() for p in files}


def unpack_agent(files: dict[str, bytes], path: Path) -> Path:
    """Write a packed agent to ``path`` (its name as packed), atomically: a folder beside it renamed into place."""
    import shutil
    import tempfile

    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{path.name}.", dir=path.parent))
    try:
        names = {Path(name).parts[0] for name in files}
        if len(names) != 1:
            raise ValueError(f"a packed agent holds one file or folder, got {sorted(names)}")
        for name, data in files.items():
            target = tmp / name
            target.parent.mkdir(parents=True, exist_ok=True)
            target.write_bytes(data)
        if path.is_dir():
            shutil.rmtree(path)
        (tmp / names.pop()).replace(path)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return path


@dataclass
class RunFailure:
    """A run that raised or whose worker died past its retries; it is not in ``runs.jsonl``."""

    run: RunSpec
    error: str  # one line: the exception's type and message
    details: str = ""  # the traceback, where there is one

    @property
    def key(self) -> str:
        return self.run.key
