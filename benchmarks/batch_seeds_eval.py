"""Evaluation time of a teacher's seeds in ``l2t bench``: one by one against one batched vector env.

What ``l2t bench`` does with a (task, teacher)'s evaluation seeds, timed in one process: a trained
(SB3) teacher's agent is trained once (or loaded from ``--out``, where ``l2t bench`` would keep
it), then the seeds are evaluated by ``execute_run`` one after another (``batch_seeds: false``)
and by one ``execute_batched`` call (``batch_seeds: true``, the default). The repeats alternate
the order; the median is reported with the ratio, and how far the two modes' final metrics lie
apart (float32 rounding, grown over the episode).

    python benchmarks/batch_seeds_eval.py --config quick --teacher ppo --out runs/sb3batch --threads 1 --repeats 2
    python benchmarks/batch_seeds_eval.py --config quick --teacher hypergrad --threads 1
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

import torch  # noqa: E402

from _common import environment_info, fmt_x, median, print_table, rotate, write_json  # noqa: E402
from l2t_bench.config import load_bench_config, plan_runs, resolve_config_path  # noqa: E402
from l2t_bench.runner import agent_path, execute_batched, execute_run, prepare_agent  # noqa: E402
from l2t_env.config_files import read_yaml  # noqa: E402


def main(argv: list[str] | None = None) -> dict:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--config", default="quick", help="bench config (built-in name or YAML; default quick)")
    p.add_argument("--teacher", default="ppo", help="a teacher label of the config that batches its seeds (default ppo)")
    p.add_argument("--task", default=None, help="a task label of the config (default: its first)")
    p.add_argument("--out", type=Path, default=Path("runs/sb3batch"), help="where the trained agent is kept (reused)")
    p.add_argument("--repeats", type=int, default=1, help="measured repeats of both modes (median reported)")
    p.add_argument("--threads", type=int, default=None, help="torch.set_num_threads (1 on a shared host)")
    p.add_argument("--json", type=Path, default=None, help="also write the results as JSON")
    args = p.parse_args(argv)
    if args.threads is not None:
        torch.set_num_threads(args.threads)
    raw = read_yaml(resolve_config_path(args.config))
    batched_cfg = load_bench_config({**raw, "batch_seeds": True})
    single_cfg = load_bench_config({**raw, "batch_seeds": False})
    task = args.task or batched_cfg.tasks[0].label

    def runs_of(cfg):
        runs = [r for r in plan_runs(cfg) if r.teacher.label == args.teacher and r.task.label == task]
        if not runs:
            raise SystemExit(f"no runs of teacher {args.teacher!r} on task {task!r} in {args.config!r}")
        return runs

    batched_runs, single_runs = runs_of(batched_cfg), runs_of(single_cfg)
    if not batched_cfg.batches(batched_runs[0].teacher):
        raise SystemExit(f"teacher {args.teacher!r} does not batch its seeds (batched = False, or a pretrain: entry)")
    path = agent_path(args.out, batched_cfg, batched_runs[0])
    assert path == agent_path(args.out, single_cfg, single_runs[0])  # one agent for both modes
    info = environment_info("cpu")
    print(f"== {args.teacher} on {task}: {len(batched_runs)} evaluation episodes, one by one vs one vector env")
    print(f"torch {info['torch']} | {info['device_name']} | torch threads {info['threads']} | cpus {info['cpu_count']} | "
          f"load average {info['load_average']}")
    if path is not None and not path.exists():
        start = time.perf_counter()
        prepare_agent(batched_cfg, batched_runs[0], path)
        print(f"trained the agent in {time.perf_counter() - start:.1f} s -> {path}")
    label = str(path.relative_to(args.out)) if path is not None else None
    modes = {
        "one by one (batch_seeds: false)": lambda: [execute_run(single_cfg, run, path, label) for run in single_runs],
        "one vector env (batch_seeds: true)": lambda: execute_batched(batched_cfg, batched_runs, path, label),
    }
    times: dict[str, list[float]] = {m: [] for m in modes}
    records: dict[str, list[dict]] = {}
    for r in range(args.repeats):
        for mode in rotate(list(modes), r):
            start = time.perf_counter()
            records[mode] = modes[mode]()
            times[mode].append(time.perf_counter() - start)
    single_mode, batched_mode = list(modes)
    base = median(times[single_mode])
    n = len(batched_runs)
    print_table(
        ["evaluation", f"s for {n} episodes", "s per episode", "speed-up"],
        [[m, f"{median(ts):.1f}", f"{median(ts) / n:.2f}", fmt_x(base / median(ts))] for m, ts in times.items()],
    )
    gaps = {
        key: max(abs(a[key] - b[key]) for a, b in zip(records[single_mode], records[batched_mode]))
        for key in ("test_acc", "test_loss", "val_loss")
    }
    print("largest |one by one - batched| over the seeds: " + ", ".join(f"{k} {v:.2e}" for k, v in gaps.items()))
    result = {"environment": info, "args": {k: str(v) for k, v in vars(args).items()}, "seconds": times, "ratio": base / median(times[batched_mode]), "gaps": gaps}
    write_json(args.json, result)
    return result


if __name__ == "__main__":
    main()
