"""``l2t bench``: every teacher x task x seed of a config, resumable, summarised across seeds.

This module is the command only; the harness's functions live where they are defined
(``l2t_bench.config``: configs and run plans, ``l2t_bench.driver``: ``run_bench``,
``l2t_bench.backends``, ``l2t_bench.runner``, ``l2t_bench.records``, ``l2t_bench.report``,
``l2t_bench.stats``, ``l2t_bench.plots``).

A benchmark config (YAML; ``configs/bench/quick.yaml`` is the worked example)::

    tasks: [digits-mlp, {name: digits-mlp, label: digits-mlp-50, overrides: {teaching_steps: 50}}]
    teachers: [ce, hypergrad, {name: ppo, kwargs: {n_steps: 100}},
               {name: fixed, label: "fixed (ce init)", env_kwargs: {loss_kwargs: {init: ce}}},
               {name: l2t-dln, label: "l2t-dln (pretrained, frozen)",
                pretrain: {seeds: [2000, 2001], episodes: 4, tasks: [digits-mlp], online: false}}]
    seeds: [0, 1, 2, 3, 4]            # evaluation seeds
    train_seeds: [1000, 1001]         # SB3 teachers train on these; must be disjoint from seeds
    train_timesteps: 2000             # or per teacher: {ppo: 2000, sac: 1000}; default: the agent YAML's
    task_overrides: {}                # for every task, under each task's own overrides
    env_kwargs: {}                    # for every env, e.g. {reward: val_acc_increase}
    device: auto
    reference: ce                     # paired differences are taken against this teacher
    checkpoint_every: 100             # optional: checkpoint each episode every 100 teaching steps
    batch_seeds: true                 # default: a batching teacher's seeds as one vector-env run

Each run is ``run_episode`` with a fresh teacher: ``l2t-dln`` learns online on that seed, as in
the paper; a trainable teacher (one with ``train``: the SB3 agents) is trained once per task on
``train_seeds``, saved under ``DIR/agents/``, and loaded frozen for every evaluation seed.
A teacher entry with ``pretrain:`` (a gradient teacher such as ``l2t-dln``) is first meta-trained
by :func:`l2t_agents.pretraining.pretrain` for ``episodes`` episodes over its ``seeds`` (disjoint
from ``seeds``) and ``tasks`` (bench task labels or task names; default the evaluated task), memory
reset per episode; it is saved under ``DIR/agents/pretrained__*.pt`` (reused by every row and rerun
with the same teacher, kwargs and pretraining) and evaluated on each seed frozen, or still learning
with ``online: true``. Give such entries a ``label`` so fresh, frozen and online are separate rows.

With ``batch_seeds: true`` (the default) the pending seeds of a teacher that acts on batches
(``batched = True``: ``ce``, ``fixed``, ``random``, ``hypergrad``, ``l2t-dln`` fresh, and the
trained SB3 agents frozen; not ``pretrain:`` entries) run as one native vector env
(:func:`l2t_agents.run_episodes`, N students trained together), still one record per seed; a
rerun runs the missing seeds as a smaller batch. Batched and one-by-one runs agree to float32
rounding, not bit for bit, so ``batch_seeds`` is part of those runs' keys (not of a trained
agent's folder: both modes load the same agent). With ``checkpoint_every`` such a batch is
checkpointed as one (the vector env's state, every sub-env's), and a killed batch resumes where
its checkpoint left it: the records equal an uninterrupted batched run's on CPU.

What ``--out DIR`` holds:

- ``runs.jsonl``: one JSON line per finished run, appended, flushed and fsynced as soon as it ends.
  A run's key is (task, teacher, seed, hash of everything else that shapes it); a rerun with the
  same DIR skips the keys already there, so an interrupted benchmark loses no finished run.
- ``agents/``: the trained agents, reused by a rerun with the same settings.
- ``checkpoints/``: with ``checkpoint_every: N``, the running episode's (or batch's) env and teacher state,
  written atomically every N teaching steps; a rerun resumes a killed run from it (same final
  record) and deletes it when the run ends. Not part of a run's key.
- ``failed_runs.json``: the runs that failed in the last invocation (key, error, traceback);
  removed once a rerun has finished them all.
- ``summary.csv``, ``summary.md``, ``val_curves.png``, ``test_acc.png``: across seeds, per
  (task, teacher); rebuilt from ``runs.jsonl`` alone with ``--summarise-only``.

``--backend ray [--address auto|ray://host:port]`` runs each run as a Ray task (see
``l2t_bench.backends``); the driver still writes everything above. A run that fails is reported
with its key and error, the others go on, and the command exits with 1 after printing the command
that retries the failed runs (the same command: it resumes).

``--workers N`` (config key ``workers``; default 1: one run after another in this process) runs N
tasks at a time in worker processes of this machine, with the Ray backend's scheduler and an equal
share of torch's threads each; where a run executes is not part of its key.

``--tasks LABEL ...`` and ``--teachers LABEL ...`` run (or summarise) a subset of the config's rows
under the same run keys, so a big config can be run piece by piece into one folder.
"""

from __future__ import annotations

import argparse
import os
import shlex
import time
from pathlib import Path
from typing import Any

from rich.console import Console

from l2t_bench.backends import BACKENDS, make_backend
from l2t_bench.config import check_workers, load_bench_config, plan_runs
from l2t_bench.driver import FAILED_FILE, run_bench
from l2t_bench.records import RUNS_FILE, read_runs
from l2t_bench.report import report
from l2t_bench.runner import RunFailure
from l2t_env.config_files import builtin_names


def add_parser(subparsers: Any) -> None:
    p = subparsers.add_parser("bench", help="benchmark teachers x tasks x seeds from a config (resumable)")
    p.add_argument("--config", help=f"bench YAML, or a built-in name ({', '.join(builtin_names('bench')) or 'none yet'})")
    p.add_argument("--out", help="output folder (default runs/bench/<config name>); rerunning into it resumes")
    p.add_argument("--device", help="override the config's device: auto, cpu, cuda, ...")
    p.add_argument("--tasks", nargs="+", metavar="LABEL", help="run (or summarise) only these task labels of the config")
    p.add_argument("--teachers", nargs="+", metavar="LABEL", help="run (or summarise) only these teacher labels of the config")
    p.add_argument("--summarise-only", action="store_true", help="only rebuild the summary and plots from DIR/runs.jsonl")
    p.add_argument("--tensorboard", action="store_true", help="log SB3 training to DIR/tensorboard")
    p.add_argument("--quiet", action="store_true", help="no progress bar (nor, without a terminal, the line per finished run)")
    p.add_argument("--backend", choices=BACKENDS, default="local", help="where runs execute: this process (default) or Ray tasks")
    p.add_argument("--address", help="with --backend ray: the cluster, 'auto' or ray://host:port (default: start a local Ray)")
    p.add_argument("--workers", type=int, help="local backend: run this many tasks at once in worker processes, each with "
                        "its share of torch's threads (default: the config's workers, else 1: one after another in this process)")
    p.add_argument("--pin-numerics", action="store_true",
                   help="run in a process with CPU-independent kernels and one thread (l2t_bench/numerics.py), "
                        "for bit-equal results across x86-64 CPUs with the same torch and numpy builds; "
                        "one thread and up to ~1.6x slower per episode")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    console = Console()
    if not console.is_terminal and "COLUMNS" not in os.environ:
        console = Console(width=200)  # a pipe or log file: do not fold the table into 80 columns
    if not args.config and not args.summarise_only:
        raise ValueError("l2t bench needs --config (a YAML file or a built-in name), or --summarise-only --out DIR")
    cfg = load_bench_config(args.config) if args.config else None
    if cfg is not None and args.device:
        cfg.device = args.device
    workers = getattr(args, "workers", None)
    if workers is not None:
        workers = check_workers(workers, "--workers")
    if args.tasks or args.teachers:
        if cfg is None:
            raise ValueError("--tasks/--teachers select labels of a config: give --config too")
        cfg.select(args.tasks, args.teachers)
    if args.out is None and cfg is None:
        raise ValueError("--summarise-only needs --out DIR (the folder holding runs.jsonl)")
    out = Path(args.out) if args.out else Path("runs/bench") / cfg.name
    start = time.perf_counter()
    failures: list[RunFailure] = []
    if args.summarise_only:
        records = read_runs(out / RUNS_FILE)
        if cfg is not None:  # only the runs this config plans, in its order
            by_key = {r["key"]: r for r in records}
            records = [by_key[r.key] for r in plan_runs(cfg) if r.key in by_key]
        if not records:
            raise ValueError(f"{out / RUNS_FILE} holds no runs" + (f" of config {cfg.name!r}" if cfg else ""))
    else:
        name = getattr(args, "backend", "local")
        if workers is None and name == "local":
            workers = cfg.workers  # the config's default for the local backend
        backend = make_backend(name, getattr(args, "address", None), workers=workers)
        try:
            result = run_bench(cfg, out, backend=backend, console=console, quiet=args.quiet, tensorboard=args.tensorboard)
        except KeyboardInterrupt:
            console.print(f"[yellow]interrupted: finished runs are in {out / RUNS_FILE}; rerun the same command to resume")
            return 130
        records, failures = result.records, result.failures
    if records:
        report(records, out, reference=cfg.reference if cfg else "best", console=console)
    if not args.summarise_only:
        console.print(f"bench wall time {time.perf_counter() - start:.0f} s")
    if failures:
        report_failures(failures, out, retry_command(args, out), console)
        return 1
    return 0


def retry_command(args: argparse.Namespace, out: Path) -> str:
    """The command that reruns the failed runs: the same benchmark into the same folder resumes."""
    words = ["l2t", "bench", "--config", str(args.config), "--out", str(out)]
    for flag in ("tasks", "teachers"):
        if getattr(args, flag, None):
            words += [f"--{flag}", *getattr(args, flag)]
    for flag in ("device", "address", "workers"):
        if getattr(args, flag, None):
            words += [f"--{flag}", str(getattr(args, flag))]
    if getattr(args, "backend", "local") != "local":
        words += ["--backend", args.backend]
    if args.tensorboard:
        words.append("--tensorboard")
    if getattr(args, "pin_numerics", False):
        words.append("--pin-numerics")
    return shlex.join(words)


def report_failures(failures: list[RunFailure], out: Path, command: str, console: Console) -> None:
    """Which runs failed and why; they are not in runs.jsonl, so rerunning retries exactly them."""
    console.print(f"[red]{len(failures)} run(s) failed[/] (not in runs.jsonl; the summary above leaves them out):", highlight=False)
    for failure in failures:
        console.print(f"  {failure.key}: {failure.error}", markup=False, highlight=False, soft_wrap=True)
    console.print(f"tracebacks: {out / FAILED_FILE}", markup=False, highlight=False, soft_wrap=True)
    console.print(f"retry them (finished runs are kept): {command}", markup=False, highlight=False, soft_wrap=True)
