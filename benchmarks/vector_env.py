"""Student steps per second of the native vector env (N students batched) against one single env.

Per task and look-ahead setting, in one process: one ``L2T-v0`` single env and
``gym.make_vec(..., vectorization_mode="vector_entry_point", num_envs=N)`` for each N, stepped with
uniform random actions (so no look-ahead unroll is reused: the honest "look-ahead on" cost), the
episodes never truncating. A measurement is ``--steps`` teaching steps after ``--warmup`` ones;
the repeats are interleaved (the order rotated each repeat) and the median is reported.
Student steps/s = N * K * steps / seconds; the ratio is to the single env of the same run.
``--teacher`` adds teaching iterations/s of the batched ``l2t-dln`` teacher (N stacked LSTMs,
each iteration two batched K-step unrolls and one Adam step) against one teacher on one env.

``--single-from A.json`` adds ratios against the single env of an earlier run of this script (its
``--json``): each at its best setting on a small CPU, e.g. the single env on one thread and the
vector envs on two, which one process cannot measure side by side (after a two-thread section,
OpenMP's idle worker keeps spinning and slows the one-thread code of the same process).

Full run (CPU):  python benchmarks/vector_env.py --threads 1 --teacher --json runs/bench/vector_env.json
Both cores:      python benchmarks/vector_env.py --threads 1 --tasks digits-mlp --json runs/vec1.json
                 python benchmarks/vector_env.py --threads 2 --tasks digits-mlp --single-from runs/vec1.json
Smoke run:       python benchmarks/vector_env.py --quick --threads 1
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

import gymnasium as gym  # noqa: E402
import numpy as np  # noqa: E402

from _common import (  # noqa: E402
    NO_TRUNCATION,
    add_common_args,
    finish_common_args,
    fmt_x,
    median,
    print_header,
    print_table,
    rotate,
    task_spec,
    timed,
    write_json,
)

DEFAULT_TASKS = ("digits-mlp", "random-cifar10-resnet8")
DEFAULT_SIZES = (1, 8, 32, 64, 128)


def _make(task: str, overrides: dict, device: str, lookahead: str, n: int):
    name, extra = task_spec(task)
    kwargs = dict(task=name, lookahead=lookahead, device=device, **{**extra, **NO_TRUNCATION, **overrides})
    if n == 0:
        return gym.make("L2T-v0", **kwargs)
    return gym.make_vec("L2T-v0", num_envs=n, vectorization_mode="vector_entry_point", batching="vmap", **kwargs)


def _stepper(env, steps: int, seed: int):
    rng = np.random.default_rng(seed)
    shape = env.action_space.shape

    def run() -> None:
        for _ in range(steps):
            env.step(rng.uniform(-1, 1, shape).astype(np.float32))

    return run


def _teacher_stepper(env, teacher, obs, steps: int):
    state = {"obs": obs}

    def run() -> None:
        for _ in range(steps):
            out = env.step(teacher.act(state["obs"]))
            teacher.observe(*out)
            state["obs"] = out[0]

    return run


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    add_common_args(parser, DEFAULT_TASKS, repeats=3, warmup=1)
    parser.add_argument("--sizes", type=int, nargs="+", default=list(DEFAULT_SIZES), help="numbers of sub-envs N")
    parser.add_argument("--steps", type=int, default=5, help="teaching steps per measurement (default 5)")
    parser.add_argument("--lookahead", nargs="+", default=["off", "K"], choices=["off", "K"],
                        help="look-ahead settings to measure on digits-mlp (other tasks: off only)")
    parser.add_argument("--teacher", action="store_true", help="also time the batched l2t-dln teacher on digits-mlp")
    parser.add_argument("--single-from", type=Path, default=None, metavar="JSON",
                        help="also print ratios against the single env of an earlier run's --json (e.g. one with --threads 1)")
    args = parser.parse_args()
    finish_common_args(args, DEFAULT_TASKS, repeats=3, warmup=1, quick_tasks=["digits-mlp"])
    if args.quick:
        args.sizes = [n for n in args.sizes if n <= 8] or [1]
    info = print_header("vector env: student steps/s, N batched students vs one single env", args)
    earlier = {}
    if args.single_from:
        prior = json.loads(args.single_from.read_text())
        earlier = {(r["task"], r["lookahead"]): r["student_steps_per_s"] for r in prior["results"] if r.get("n") == 0 and "lookahead" in r}
        print(f"single env of {args.single_from}: torch threads {prior['environment'].get('threads', '?')}")
    results = []
    cases = [(task, la) for task in args.tasks for la in (args.lookahead if task == "digits-mlp" else ["off"])]
    for task, lookahead in cases:
        envs = {n: _make(task, args.task_overrides, args.device, lookahead, n) for n in [0, *args.sizes]}
        k = envs[0].unwrapped.config.unroll_steps
        runs = {}
        for n, env in envs.items():
            env.reset(seed=args.seed)
            runs[n] = _stepper(env, args.steps, args.seed)
        times: dict[int, list[float]] = {n: [] for n in envs}
        for r in range(args.warmup + args.repeats):
            for n in rotate(list(envs), r):
                seconds, _ = timed(runs[n], args.device)
                if r >= args.warmup:
                    times[n].append(seconds)
        single = k * args.steps / median(times[0])
        other = earlier.get((task, lookahead))

        def vs_other(rate: float) -> list[str]:
            return [fmt_x(rate / other)] if other else []

        rows = [["single env", "1", f"{single:.0f}", fmt_x(1.0), *vs_other(single)]]
        for n in args.sizes:
            rate = n * k * args.steps / median(times[n])
            rows.append(["vector env", str(n), f"{rate:.0f}", fmt_x(rate / single), *vs_other(rate)])
            results.append({"task": task, "lookahead": lookahead, "n": n, "student_steps_per_s": rate, "ratio": rate / single,
                            **({"ratio_vs_earlier_single": rate / other} if other else {})})
        results.append({"task": task, "lookahead": lookahead, "n": 0, "student_steps_per_s": single, "ratio": 1.0})
        print(f"\n{task}, look-ahead {lookahead} (K={k}, {args.steps} teaching steps per measurement)")
        print_table(["env", "N", "student steps/s", "vs single env", *([f"vs earlier single env ({other:.0f}/s)"] if other else [])], rows)
        del envs
    if args.teacher:
        from l2t_agents import make_teacher

        task = "digits-mlp"
        envs = {n: _make(task, args.task_overrides, args.device, "K", n) for n in [0, *args.sizes]}
        runs = {}
        for n, env in envs.items():
            obs, _ = env.reset(seed=args.seed)
            teacher = make_teacher("l2t-dln")
            teacher.reset(env)
            runs[n] = _teacher_stepper(env, teacher, obs, args.steps)
        times = {n: [] for n in envs}
        for r in range(args.warmup + args.repeats):
            for n in rotate(list(envs), r):
                seconds, _ = timed(runs[n], args.device)
                if r >= args.warmup:
                    times[n].append(seconds)
        single = args.steps / median(times[0])
        rows = [["one teacher, single env", "1", f"{single:.2f}", fmt_x(1.0)]]
        for n in args.sizes:
            rate = n * args.steps / median(times[n])
            rows.append(["N stacked teachers, vector env", str(n), f"{rate:.2f}", fmt_x(rate / single)])
            results.append({"task": task, "teacher": "l2t-dln", "n": n, "iterations_per_s": rate, "ratio": rate / single})
        results.append({"task": task, "teacher": "l2t-dln", "n": 0, "iterations_per_s": single, "ratio": 1.0})
        print(f"\n{task}: l2t-dln teaching iterations/s (one iteration = one teaching step of one student)")
        print_table(["teacher", "N", "iterations/s", "vs single"], rows)
    write_json(args.json, {"environment": info, "args": {k: v for k, v in vars(args).items() if k != "json"}, "results": results})


if __name__ == "__main__":
    main()
