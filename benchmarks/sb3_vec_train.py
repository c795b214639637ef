"""SB3 teacher training: env steps per second with ``n_envs`` single envs in SB3's ``DummyVecEnv``
against the same ``n_envs`` students batched in one ``L2TVectorEnv`` (``vector_env: true``).

One measurement is ``SB3Teacher.train`` for ``--timesteps`` env steps on ``digits-mlp`` (the
teachers' env: ``action_mode="layer"``, look-ahead K, summary observation), from a fresh agent each
time, with episodes of ``--teaching-steps`` so that training crosses episode ends. The repeats are
interleaved (order rotated) and the median is reported; the ratio is to ``DummyVecEnv`` with the
same ``n_envs``, and to ``DummyVecEnv`` with ``n_envs = 1`` (the agent configs' default).

Full run:   python benchmarks/sb3_vec_train.py --threads 1
Smoke run:  python benchmarks/sb3_vec_train.py --quick --threads 1
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from _common import add_common_args, finish_common_args, fmt_x, median, print_header, print_table, rotate, timed, write_json  # noqa: E402


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    add_common_args(parser, ["digits-mlp"], repeats=2, warmup=0)
    parser.add_argument("--algos", nargs="+", default=["ppo", "sac"], choices=["ppo", "a2c", "sac", "td3"])
    parser.add_argument("--n-envs", type=int, nargs="+", default=[1, 4, 8], help="numbers of training envs")
    parser.add_argument("--timesteps", type=int, default=None, help="env steps per measurement (default 8 x teaching steps x max n_envs)")
    parser.add_argument("--teaching-steps", type=int, default=20, help="teaching steps per episode (default 20)")
    args = parser.parse_args()
    finish_common_args(args, ["digits-mlp"], repeats=2, warmup=0)
    if args.quick:
        args.n_envs, args.teaching_steps = [1, 2], 5
    timesteps = args.timesteps or 2 * args.teaching_steps * max(args.n_envs)
    info = print_header(f"SB3 training, {timesteps} env steps: DummyVecEnv of single envs vs one L2TVectorEnv", args)
    from l2t_agents import make_teacher

    env_kwargs = {**args.task_overrides, "teaching_steps": args.teaching_steps, "device": args.device}
    seeds = list(range(1000, 1000 + max(args.n_envs)))
    results = []
    for algo in args.algos:
        cases = [(n, vec) for n in args.n_envs for vec in (False, True)]
        hp = {"ppo": {"n_steps": args.teaching_steps, "batch_size": args.teaching_steps}, "a2c": {"n_steps": 5},
              "sac": {"learning_starts": args.teaching_steps}, "td3": {"learning_starts": args.teaching_steps}}[algo]

        def train(n: int, vec: bool) -> None:
            teacher = make_teacher(algo, n_envs=n, vector_env=vec, **hp)
            teacher.train(args.tasks[0], seeds, total_timesteps=timesteps, env_kwargs=env_kwargs)

        times: dict = {c: [] for c in cases}
        for r in range(args.warmup + args.repeats):
            for case in rotate(cases, r):
                seconds, _ = timed(lambda: train(*case), args.device)
                if r >= args.warmup:
                    times[case].append(seconds)
        base = timesteps / median(times[(1, False)]) if (1, False) in times else None
        rows = []
        for n, vec in cases:
            rate = timesteps / median(times[(n, vec)])
            same_n = rate / (timesteps / median(times[(n, False)]))
            rows.append([algo, str(n), "L2TVectorEnv" if vec else "DummyVecEnv", f"{rate:.1f}", fmt_x(same_n),
                         fmt_x(rate / base) if base else "-"])
            results.append({"algo": algo, "n_envs": n, "vector_env": vec, "env_steps_per_s": rate, "vs_dummy_same_n": same_n,
                            "vs_dummy_n1": rate / base if base else None})
        print(f"\n{algo}: {timesteps} env steps, episodes of {args.teaching_steps} teaching steps")
        print_table(["algo", "n_envs", "vec env", "env steps/s", "vs DummyVecEnv same n", "vs DummyVecEnv n=1"], rows)
    write_json(args.json, {"environment": info, "args": {k: v for k, v in vars(args).items() if k != "json"}, "results": results})


if __name__ == "__main__":
    main()
