"""Running the runs of a benchmark in this process (the local backend), resumable run by run."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Optional, Union

import yaml
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn, TimeRemainingColumn

from l2t_bench.config import BenchConfig, RunSpec, plan_runs, pretrain_hash, pretrain_tasks
from l2t_bench.numerics import apply_pins_if_flagged
from l2t_bench.options import jsonable
from l2t_bench.records import RUNS_FILE, append_run, read_runs, repair_runs_file, run_record


def agent_dir(out: Path, run: RunSpec) -> Path:
    """Where a trained agent of this task, teacher and settings is kept (seed-independent)."""
    return out / "agents" / f"{run.task.label}__{run.teacher.label}__{run.config_hash}"


def _train_agent(cfg: BenchConfig, run: RunSpec, path: Path, progress: Progress, tensorboard: Optional[Path]) -> None:
    from l2t_agents import make_teacher

    teacher = make_teacher(run.teacher.name, **run.teacher.kwargs)
    steps = cfg.timesteps(run.teacher)
    bar = progress.add_task(f"training {run.teacher.label} on {run.task.label}", total=steps or 1)
    teacher.train(
        run.task.name,
        cfg.train_seeds,
        total_timesteps=steps,
        env_kwargs={**cfg.env_kwargs_for(run.teacher), **run.task.overrides, "device": cfg.device},
        tensorboard_log=str(tensorboard) if tensorboard else None,
        progress=lambda done, total: progress.update(bar, completed=done, total=total),
    )
    teacher.save(path)
    progress.remove_task(bar)


def checkpoint_path(out: Path, run: RunSpec) -> Path:
    """Where a run's mid-episode checkpoint is kept while it runs (``checkpoint_every``)."""
    return out / "checkpoints" / f"{run.task.label}__{run.teacher.label}__seed{run.seed}__{run.config_hash}.pt"


def pretrained_path(out: Path, cfg: BenchConfig, run: RunSpec) -> Path:
    """Where the pretrained teacher of this run is kept: shared by every row with the same
    teacher, kwargs and pretraining (frozen and online rows, other labels)."""
    return out / "agents" / f"pretrained__{run.teacher.name}__{pretrain_hash(cfg, run.task, run.teacher)}.pt"


def _pretrain_agent(cfg: BenchConfig, run: RunSpec, path: Path, progress: Progress, console: Optional[Console]) -> None:
    import time

    from l2t_agents import make_env, make_teacher
    from l2t_agents.pretraining import PretrainPlan, pretrain, save_pretrained

    spec = run.teacher.pretrain
    tasks = {t.label: t for t in pretrain_tasks(cfg, run.task, run.teacher)}
    plan = PretrainPlan(seeds=spec.seeds, tasks=list(tasks), episodes=spec.episodes)
    teacher = make_teacher(run.teacher.name, **run.teacher.kwargs)
    bar = progress.add_task(f"pretraining {run.teacher.name} ({path.name})", total=len(plan.schedule()))

    def on_episode(i: int, record) -> None:
        progress.update(bar, completed=i + 1)
        if console and not console.is_terminal:
            console.print(f"pretrain {path.name} episode {i + 1}: {record.task} seed {record.seed} test acc {record.final.get('test_acc', float('nan')):.4f}")

    start = time.perf_counter()
    records = pretrain(
        teacher, plan, eval_seeds=cfg.seeds, on_episode=on_episode,
        make_task_env=lambda t, label: make_env(t, tasks[label].name, device=cfg.device, **cfg.env_kwargs_for(run.teacher), **tasks[label].overrides),
    )
    save_pretrained(teacher, path, records, time.perf_counter() - start)
    progress.remove_task(bar)


def run_bench(
    cfg: BenchConfig,
    out: Union[str, Path],
    *,
    console: Optional[Console] = None,
    quiet: bool = False,
    tensorboard: bool = False,
) -> list[dict]:
    """Run every planned run not yet in ``out/runs.jsonl``; return the records of the whole plan.

    Trainable teachers are trained (or their saved agent reused) just before their first pending
    run on a task; every run gets a freshly made teacher and env.
    """
    import l2t_env  # noqa: F401  (registers L2T-v0)
    from l2t_agents import make_env, make_teacher
    from l2t_bench.episodes import run_checkpointed_episode

    apply_pins_if_flagged()  # a process started with pinned numerics also sets torch's own switches

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
            f"= {len(plan)} runs; {len(plan) - len(pending)} already in {runs_file}, {len(pending)} to run (device {cfg.device})"
        )
    with Progress(
        TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn(), TimeRemainingColumn(),
        console=console, disable=quiet,
    ) as progress:
        bar = progress.add_task("runs", total=len(plan), completed=len(plan) - len(pending))
        for run in pending:
            progress.update(bar, description=f"{run.task.label} · {run.teacher.label} · seed {run.seed}")
            teacher = make_teacher(run.teacher.name, **run.teacher.kwargs)
            agent, train_time = None, None
            if run.teacher.trainable:
                path = agent_dir(out, run)
                if not path.exists():
                    _train_agent(cfg, run, path, progress, out / "tensorboard" if tensorboard else None)
                teacher.load(path)
                teacher.learning = False
                agent = str(path.relative_to(out))
                train_time = getattr(teacher, "meta", {}).get("train_time")
            elif run.teacher.pretrain is not None:
                from l2t_agents.pretraining import pretrained_meta

                path = pretrained_path(out, cfg, run)
                if not path.exists():
                    _pretrain_agent(cfg, run, path, progress, console)
                teacher.load(path)
                teacher.learning = run.teacher.pretrain.online
                agent = str(path.relative_to(out))
                train_time = pretrained_meta(path).get("train_time")
            env = make_env(teacher, run.task.name, device=cfg.device, **cfg.env_kwargs_for(run.teacher), **run.task.overrides)
            try:
                episode = run_checkpointed_episode(
                    env, teacher, run.seed, checkpoint_every=cfg.checkpoint_every, path=checkpoint_path(out, run),
                    on_resume=lambda t: progress.console.print(f"{run.key}: resumed from its checkpoint at teaching step {t}"),
                )
            finally:
                env.close()
            record = run_record(run, episode, agent, train_time, str(env.unwrapped.device))
            append_run(runs_file, record)
            done[run.key] = json.loads(json.dumps(jsonable(record)))  # as a rerun would read it back
            progress.advance(bar)
    return [done[r.key] for r in plan]
