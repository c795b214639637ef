"""``l2t teach``: teach one student with one teacher and report the result."""

from __future__ import annotations

import argparse
import time
from pathlib import Path
from typing import Any

from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn, TimeRemainingColumn
from rich.table import Table

from l2t_bench.options import merge_overrides, parse_overrides, write_json
from l2t_env.config_files import read_yaml

DEFAULTS = {"teacher": "l2t-dln", "task": "digits-mlp", "seed": 0, "out": "runs/teach", "device": "auto"}


def add_parser(subparsers: Any) -> None:
    p = subparsers.add_parser("teach", help="teach one student with one teacher and report the result")
    p.add_argument("--config", help="YAML file with any of: teacher, task, seed, out, device, task_overrides, env_kwargs, teacher_kwargs")
    p.add_argument("--teacher", help=f"teacher name (default {DEFAULTS['teacher']}); `l2t list` shows them")
    p.add_argument("--task", help=f"built-in task or task YAML (default {DEFAULTS['task']})")
    p.add_argument("--seed", type=int, help="episode seed: fixes split, student and DLN init, batches, augmentation")
    p.add_argument("--set", dest="task_set", action="append", metavar="KEY=VALUE", help="task override, e.g. --set teaching_steps=50")
    p.add_argument("--env-arg", action="append", metavar="KEY=VALUE", help="env argument, e.g. --env-arg reward=neg_val_loss or --env-arg loss_kwargs.init=ce")
    p.add_argument("--teacher-arg", action="append", metavar="KEY=VALUE", help="teacher argument, e.g. --teacher-arg lr=0.01")
    p.add_argument("--device", help="auto (CUDA when present), cpu, cuda, cuda:1, ...")
    p.add_argument("--out", help=f"output folder for the JSON record (default {DEFAULTS['out']})")
    p.add_argument("--episodes", type=int, default=1, help="teach N students in a row with one teacher (seeds SEED..SEED+N-1): "
                   "its memory is reset per episode, what it learnt is kept (pre-training); default 1")
    p.add_argument("--checkpoint-every", type=int, metavar="N", help="checkpoint env and teacher every N teaching steps; "
                   "a rerun of the same command resumes from the checkpoint (same final record) and removes it at the end")
    p.add_argument("--checkpoint", metavar="PATH", help="the checkpoint file (default OUT/checkpoints/TEACHER_TASK_seedSEED.pt)")
    p.add_argument("--save", help="save the teacher's state here after the (last) episode")
    p.add_argument("--load", help="load a saved teacher before the episode")
    p.add_argument("--frozen", action="store_true", help="act only, do not learn (use with --load to test transfer)")
    p.add_argument("--quiet", action="store_true", help="no progress bar")
    p.set_defaults(func=run)


def resolve_settings(args: argparse.Namespace) -> dict[str, Any]:
    """Defaults, then the config file, then the command line."""
    settings: dict[str, Any] = {**DEFAULTS, "task_overrides": {}, "env_kwargs": {}, "teacher_kwargs": {}}
    if args.config:
        from_file = read_yaml(args.config)
        unknown = sorted(set(from_file) - set(settings))
        if unknown:
            raise SystemExit(f"error: {args.config}: unknown key(s) {unknown}; valid: {sorted(settings)}")
        settings.update(from_file)
    for key in ("teacher", "task", "seed", "out", "device"):
        if getattr(args, key) is not None:
            settings[key] = getattr(args, key)
    settings["task_overrides"] = merge_overrides(settings["task_overrides"], parse_overrides(args.task_set, "task"))
    settings["env_kwargs"] = merge_overrides(settings["env_kwargs"], parse_overrides(args.env_arg, "env"))
    settings["teacher_kwargs"] = merge_overrides(settings["teacher_kwargs"], parse_overrides(args.teacher_arg, "teacher"))
    return settings


def run(args: argparse.Namespace) -> int:
    import l2t_env  # noqa: F401  (registers L2T-v0)
    from l2t_agents import make_env, make_teacher
    from l2t_agents.pretraining import run_episodes
    from l2t_bench.episodes import check_checkpoint_every, run_checkpointed_episode

    console = Console()
    s = resolve_settings(args)
    if args.episodes < 1:
        raise ValueError(f"--episodes {args.episodes}: expected an integer >= 1")
    check_checkpoint_every(args.checkpoint_every, "--checkpoint-every")
    if args.checkpoint_every and args.episodes > 1:
        raise ValueError(f"--checkpoint-every checkpoints one episode; got --episodes {args.episodes} (run them one by one)")
    if args.checkpoint and not args.checkpoint_every:
        raise ValueError(f"--checkpoint {args.checkpoint} needs --checkpoint-every N")
    teacher = make_teacher(s["teacher"], **s["teacher_kwargs"])
    if args.load:
        teacher.load(args.load)
    if args.frozen:
        teacher.learning = False
    def new_env(t: Any, task: Any) -> Any:
        return make_env(t, task, device=s["device"], **s["env_kwargs"], **s["task_overrides"])

    env = new_env(teacher, s["task"])
    cfg = env.unwrapped.config
    console.print(
        f"teaching [bold]{cfg.name}[/] with [bold]{teacher.name}[/] (seed {s['seed']}, {cfg.teaching_steps} steps "
        f"x K={cfg.unroll_steps}, device {env.unwrapped.device}, {'frozen' if not teacher.learning else 'online'})"
    )
    env.close()
    seeds = list(range(s["seed"], s["seed"] + args.episodes))
    with Progress(
        TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), TextColumn("val acc {task.fields[acc]:.3f}"),
        TimeElapsedColumn(), TimeRemainingColumn(), console=console, disable=args.quiet,
    ) as progress:
        bar = progress.add_task("teaching", total=cfg.teaching_steps, acc=float("nan"))

        def on_episode(i: int, record: Any) -> None:
            if args.episodes > 1:
                console.print(f"episode {i + 1}/{args.episodes}, seed {record.seed}: test acc {record.final['test_acc']:.4f}")
            progress.update(bar, description=f"teaching seed {record.seed + 1}")

        on_step = lambda t, info: progress.update(bar, completed=t, acc=info["val_acc"])  # noqa: E731
        if args.checkpoint_every:
            path = Path(args.checkpoint or Path(s["out"]) / "checkpoints" / f"{teacher.name}_{cfg.name}_seed{s['seed']}.pt")
            env = new_env(teacher, s["task"])
            try:
                records = [run_checkpointed_episode(
                    env, teacher, s["seed"], checkpoint_every=args.checkpoint_every, path=path, on_step=on_step,
                    on_resume=lambda t: console.print(f"resumed from {path} at teaching step {t}"),
                )]
            finally:
                env.close()
        else:
            records = run_episodes(
                teacher, [(s["task"], seed) for seed in seeds], on_episode=on_episode, make_task_env=new_env, on_step=on_step,
            )
    record = records[-1]
    table = Table(title=f"{teacher.name} on {cfg.name}, seed {record.seed}" + (f" (episode {args.episodes} of {args.episodes})" if args.episodes > 1 else ""))
    table.add_column("split")
    table.add_column("accuracy", justify="right")
    table.add_column("loss (CE)", justify="right")
    for split in ("train", "val", "test"):
        table.add_row(split, f"{record.final[split + '_acc']:.4f}", f"{record.final[split + '_loss']:.4f}")
    console.print(table)
    console.print(f"wall time {sum(r.wall_time for r in records):.1f} s, {sum(r.student_steps for r in records)} student steps" + (", DIVERGED" if record.diverged else ""))
    out = Path(s["out"]) / f"{teacher.name}_{cfg.name}_seed{s['seed']}_{time.strftime('%Y%m%d-%H%M%S')}.json"
    data = {"settings": s, "task": cfg.to_dict(), "record": record.to_dict()}
    if args.episodes > 1:
        data.update(episodes=args.episodes, records=[r.to_dict() for r in records])
    write_json(out, data)
    console.print(f"record: {out}")
    if args.save:
        teacher.save(args.save)
        console.print(f"teacher saved: {args.save}")
    return 0
