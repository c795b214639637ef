"""Issue 18: training throughput of an RL teacher, env steps per second while PPO trains.

PPO with ``configs/agents/ppo-control.yaml`` (``action_mode="control"`` on the fused metric of
``ce``, ``gce`` and ``rce``, no look-ahead: each env step is K = 15 student SGD steps, the
validation forward of the reward, and the policy's share of the updates) on ``digits-mlp`` with
full episodes (100 teaching steps), from a fresh agent each time. The same ``n_envs`` students
train either as SB3's ``DummyVecEnv`` of single envs or as one ``L2TVectorEnv`` (``vector_env:
true``, what ``l2t train`` uses); the repeats are interleaved and the median is printed, with the
ratio of the two and the minutes 100,000 env steps would take at that rate.

``--aim`` then trains one PPO agent for 100,000 env steps on the vector env, timed end to end
(the issue's aim: under 10 minutes on 2 cores), and prints the measured minutes.

Run (nothing else on the machine):   python benchmarks/rl_throughput.py --threads 2 --aim
Smoke run:                           python benchmarks/rl_throughput.py --quick
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from _common import add_common_args, finish_common_args, fmt_x, median, print_header, print_table, rotate, timed, write_json  # noqa: E402

LOSS = {"loss": "dfm", "loss_kwargs": {"metrics": ["ce", "gce", "rce"]}}
AIM_STEPS = 100_000


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    add_common_args(parser, ["digits-mlp"], repeats=2, warmup=0)
    parser.add_argument("--n-envs", type=int, nargs="+", default=[16], help="students trained side by side (default 16)")
    parser.add_argument("--timesteps", type=int, default=None, help="env steps per measurement (default 2 episodes per student)")
    parser.add_argument("--aim", action="store_true", help=f"then train {AIM_STEPS:,} env steps on the vector env, timed")
    args = parser.parse_args()
    finish_common_args(args, ["digits-mlp"], repeats=2, warmup=0)
    if args.quick:
        args.n_envs = [2]
        args.task_overrides = {**args.task_overrides, "teaching_steps": 5}
    from l2t_agents import make_teacher
    from l2t_env.tasks import load_task

    task = args.tasks[0]
    episode = load_task(task, **args.task_overrides).teaching_steps
    timesteps = args.timesteps or 2 * episode * max(args.n_envs)
    info = print_header(f"PPO (ppo-control) training on {task}, {timesteps} env steps: DummyVecEnv of single envs vs one L2TVectorEnv", args)
    env_kwargs = {**LOSS, **args.task_overrides, "device": args.device}
    seeds = list(range(1000, 1000 + 4 * max(args.n_envs)))

    def train(n: int, vec: bool, steps: int) -> None:
        teacher = make_teacher("ppo", config="ppo-control", n_envs=n, vector_env=vec, seed=args.seed)
        teacher.train(task, seeds, total_timesteps=steps, env_kwargs=env_kwargs)

    cases = [(n, vec) for n in args.n_envs for vec in (False, True)]
    times: dict = {c: [] for c in cases}
    for r in range(args.warmup + args.repeats):
        for case in rotate(cases, r):
            seconds, _ = timed(lambda: train(*case, timesteps), args.device)
            if r >= args.warmup:
                times[case].append(seconds)
    rows, results = [], []
    for n, vec in cases:
        rate = timesteps / median(times[(n, vec)])
        ratio = rate / (timesteps / median(times[(n, False)]))
        rows.append([str(n), "L2TVectorEnv" if vec else "DummyVecEnv", f"{rate:.0f}", fmt_x(ratio), f"{AIM_STEPS / rate / 60:.1f}"])
        results.append({"n_envs": n, "vector_env": vec, "env_steps_per_s": rate, "vs_dummy": ratio, "minutes_per_100k": AIM_STEPS / rate / 60})
    print_table(["n_envs", "env", "env steps/s", "vs DummyVecEnv", "min per 100k steps (at this rate)"], rows)
    aim = None
    if args.aim:
        n = max(args.n_envs)
        start = time.perf_counter()
        train(n, True, AIM_STEPS)
        seconds = time.perf_counter() - start
        aim = {"n_envs": n, "timesteps": AIM_STEPS, "seconds": seconds, "minutes": seconds / 60, "under_10_minutes": seconds < 600}
        print(f"\n{AIM_STEPS:,} PPO env steps on one L2TVectorEnv of {n} students: {seconds / 60:.1f} min "
              f"({AIM_STEPS / seconds:.0f} env steps/s; aim: under 10 min -> {'met' if seconds < 600 else 'NOT met'})")
    write_json(args.json, {"environment": info, "args": {k: v for k, v in vars(args).items() if k != "json"}, "results": results, "aim": aim})


if __name__ == "__main__":
    main()
