"""``l2t train``: train one SB3 teacher on a native vector env and watch it learn.

The agent trains on ``--n-envs`` students of ``--task`` as one ``L2TVectorEnv`` (reset with the
training seeds in turn). Every ``--eval-every`` env steps the policy, frozen, teaches one student
per held-out seed (``--eval-seeds``, as one vector env; disjoint from the training seeds,
checked) and a row goes to ``OUT/learning_curve.csv`` (:mod:`l2t_bench.learning_curves`), the
figure ``OUT/learning_curve.png`` is redrawn, the agent is saved as ``OUT/agent.zip`` (load it
with ``l2t teach --teacher NAME --load OUT/agent.zip`` or name it in a bench config's ``load:``)
and a training snapshot as ``OUT/snapshot/``. ``--resume`` continues a killed training from
the snapshot. ``OUT/train.json`` records the command's settings.
"""

from __future__ import annotations

import argparse
import json
import os
import shlex
import sys
from pathlib import Path
from typing import Any, Optional, Sequence

from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn, TimeRemainingColumn

from l2t_bench.options import merge_overrides, parse_overrides

#: SB3 teachers ``l2t train`` trains
AGENTS = ("ppo", "a2c", "sac", "td3")
DEFAULT_TRAIN_SEEDS = "1000-1999"
DEFAULT_EVAL_SEEDS = "2000-2009"
#: what ``--resume`` must find unchanged in ``train.json``
SAME_ON_RESUME = ("agent", "config", "agent_args", "seed", "task", "task_overrides", "env_kwargs", "n_envs", "train_seeds", "eval_seeds", "eval_every")


def parse_seeds(text: str, flag: str) -> list[int]:
    """``"1000-1099"`` (inclusive range), ``"3,5,8"`` or a mix (``"0-4,10"``) -> the seeds, checked."""
    seeds: list[int] = []
    try:
        for part in str(text).split(","):
            part = part.strip()
            if "-" in part:
                lo, hi = (int(x) for x in part.split("-", 1))
                if hi < lo:
                    raise ValueError
                seeds.extend(range(lo, hi + 1))
            else:
                seeds.append(int(part))
    except ValueError:
        raise ValueError(f"{flag} {text!r}: expected seeds like '1000-1099' or '3,5,8' (integers >= 0)") from None
    if not seeds or min(seeds) < 0:
        raise ValueError(f"{flag} {text!r}: expected at least one seed, all >= 0")
    if len(set(seeds)) != len(seeds):
        raise ValueError(f"{flag} {text!r} repeats seeds")
    return seeds


def add_parser(subparsers: Any) -> None:
    p = subparsers.add_parser("train", help="train an SB3 teacher on a vector env, with a learning curve on held-out seeds")
    p.add_argument("--agent", required=True, choices=AGENTS, help="the SB3 algorithm")
    p.add_argument("--config", help="agent YAML (built-in name such as ppo-control, or a path); default: the agent's own")
    p.add_argument("--agent-arg", action="append", metavar="KEY=VALUE", help="override one agent hyper-parameter, e.g. --agent-arg learning_rate=1e-4")
    p.add_argument("--seed", type=int, default=0, help="the agent's seed (network init, exploration, minibatches); default 0")
    p.add_argument("--task", default="digits-mlp", help="built-in task or task YAML (default digits-mlp)")
    p.add_argument("--set", dest="task_set", action="append", metavar="KEY=VALUE", help="task override, e.g. --set teaching_steps=50")
    p.add_argument("--env-arg", action="append", metavar="KEY=VALUE", help="env argument, e.g. --env-arg loss=gce")
    p.add_argument("--timesteps", type=int, help="env steps to train (one per student per teaching step); default: the agent YAML's n_timesteps")
    p.add_argument("--n-envs", type=int, default=16, help="students trained side by side in one vector env (default 16)")
    p.add_argument("--train-seeds", default=DEFAULT_TRAIN_SEEDS, help=f"training episodes' seeds, in turn (default {DEFAULT_TRAIN_SEEDS})")
    p.add_argument("--eval-seeds", default=DEFAULT_EVAL_SEEDS, help=f"held-out seeds of the learning curve (default {DEFAULT_EVAL_SEEDS})")
    p.add_argument("--eval-every", type=int, help="env steps between evaluations (default: a tenth of --timesteps)")
    p.add_argument("--out", help="output folder (default runs/train/AGENT_TASK)")
    p.add_argument("--resume", action="store_true", help="continue the training whose snapshot is in OUT")
    p.add_argument("--tensorboard", action="store_true", help="log SB3's training statistics to OUT/tensorboard")
    p.add_argument("--device", default="cpu", help="device of the students (the agent's small MLPs stay on the CPU); default cpu")
    p.add_argument("--quiet", action="store_true", help="no progress bar")
    p.set_defaults(func=run)


def settings_of(args: argparse.Namespace) -> dict[str, Any]:
    """The command's settings as ``train.json`` records them (seeds expanded, checked)."""
    if args.n_envs < 1:
        raise ValueError(f"--n-envs {args.n_envs}: expected an integer >= 1")
    train_seeds = parse_seeds(args.train_seeds, "--train-seeds")
    eval_seeds = parse_seeds(args.eval_seeds, "--eval-seeds")
    shared = sorted(set(train_seeds) & set(eval_seeds))
    if shared:
        raise ValueError(f"--train-seeds and --eval-seeds share seed(s) {shared[:10]}{' ...' if len(shared) > 10 else ''}: "
                         "the learning curve must be measured on seeds the agent never trained on")
    return {
        "agent": args.agent,
        "config": args.config,
        "agent_args": parse_overrides(args.agent_arg, "agent"),
        "seed": args.seed,
        "task": args.task,
        "task_overrides": parse_overrides(args.task_set, "task"),
        "env_kwargs": parse_overrides(args.env_arg, "env"),
        "n_envs": args.n_envs,
        "train_seeds": train_seeds,
        "eval_seeds": eval_seeds,
        "eval_every": args.eval_every,
        "timesteps": args.timesteps,
        "device": args.device,
    }


def train_agent(s: dict[str, Any], out: Path, *, resume: bool = False, tensorboard: bool = False,
                report: Optional[Any] = None, progress: Optional[Any] = None) -> Any:
    """Train as ``l2t train`` does with settings ``s`` (see :func:`settings_of`) into ``out``; return the teacher."""
    import l2t_env  # noqa: F401  (registers L2T-v0)
    from l2t_agents import make_teacher, make_vector_env
    from l2t_bench.curve_callback import LearningCurve

    teacher = make_teacher(s["agent"], config=s["config"], seed=s["seed"], n_envs=s["n_envs"], vector_env=True, **s["agent_args"])
    total = int(s["timesteps"] or teacher.n_timesteps)
    if total < 1:
        raise ValueError(f"--timesteps {total}: expected an integer >= 1")
    every = int(s["eval_every"] or max(1, total // 10))
    if every < 1:
        raise ValueError(f"--eval-every {every}: expected an integer >= 1")
    env_kwargs = merge_overrides(s["env_kwargs"], {**s["task_overrides"], "device": s["device"]})
    if tensorboard:
        try:
            import tensorboard as _  # noqa: F401
        except ImportError as err:
            raise ImportError(f"--tensorboard needs the tensorboard package ({err}): pip install 'l2t-env[sb3]'") from err
    snapshot = out / "snapshot"
    check_out(out, resume)

    def eval_env() -> Any:
        return make_vector_env(teacher, len(s["eval_seeds"]), s["task"], monitor_every=_monitor_every(s, env_kwargs), **env_kwargs)

    curve = LearningCurve(
        teacher, eval_env, s["eval_seeds"], every, out / "learning_curve.csv", agent_path=out / "agent.zip",
        snapshot_path=snapshot, report=report, plot_path=out / "learning_curve.png", label=f"{s['agent']} on {s['task']}",
    )
    teacher.train(
        s["task"], s["train_seeds"], total_timesteps=total, env_kwargs=env_kwargs,
        tensorboard_log=str(out / "tensorboard") if tensorboard else None, progress=progress, callback=curve,
        resume=snapshot if resume else None,
    )
    teacher.save(out / "agent.zip")
    return teacher


def check_out(out: Path, resume: bool) -> None:
    """A fresh training needs a folder without one; ``--resume`` needs the snapshot."""
    if resume and not (out / "snapshot").is_dir():
        raise FileNotFoundError(f"--resume: no training snapshot in {out} (expected {out / 'snapshot'}); run without --resume to start")
    if not resume and (out / "learning_curve.csv").exists():
        raise ValueError(f"{out} already holds a training (learning_curve.csv); pass --resume to continue it, or another --out")


def _monitor_every(s: dict[str, Any], env_kwargs: dict) -> int:
    """Early stopping in the evaluations: the whole val/test splits every teaching_steps // 20 steps."""
    from l2t_env.tasks import load_task

    task_keys = {k: v for k, v in env_kwargs.items() if k in s["task_overrides"]}
    return max(1, load_task(s["task"], **task_keys).teaching_steps // 20)


def run(args: argparse.Namespace) -> int:
    console = Console()
    if not console.is_terminal and "COLUMNS" not in os.environ:
        console = Console(width=200)  # a pipe or a log file: one line per evaluation, not folded
    s = settings_of(args)
    out = Path(args.out or f"runs/train/{args.agent}_{Path(args.task).stem}")
    record = out / "train.json"
    if args.resume and record.is_file():
        before = json.loads(record.read_text())["settings"]
        changed = {k: (before.get(k), s[k]) for k in SAME_ON_RESUME if before.get(k) != s[k]}
        if changed:
            raise ValueError(f"--resume with other settings than {record} (before, now): {changed}")
    check_out(out, args.resume)  # before train.json is rewritten
    out.mkdir(parents=True, exist_ok=True)
    if not args.resume:
        record.write_text(json.dumps({"command": shlex.join(["l2t", *sys.argv[1:]]), "settings": s}, indent=1))

    def line(row: dict) -> None:
        console.print(
            f"{int(row['env_steps']):>8} env steps  {row['wall_time_s']:>7.0f} s  return {row['return_mean']:+.4f}  "
            f"test acc {row['test_acc_mean']:.4f} [{row['test_acc_ci_low']:.4f}, {row['test_acc_ci_high']:.4f}]  "
            f"early-stopped {row['es_test_acc_mean']:.4f}",
            highlight=False,
        )

    use_bar = console.is_terminal and not args.quiet
    with Progress(TextColumn("training {task.description}"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn(), TimeRemainingColumn(),
                  console=console, disable=not use_bar) as bar:
        task_id = bar.add_task(args.agent, total=None)
        progress = (lambda done, total: bar.update(task_id, completed=done, total=total)) if use_bar else None
        train_agent(s, out, resume=args.resume, tensorboard=args.tensorboard, report=line, progress=progress)
    console.print(f"agent: {out / 'agent.zip'}   learning curve: {out / 'learning_curve.csv'}, {out / 'learning_curve.png'}")
    return 0
