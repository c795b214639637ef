"""Is the clean validation split alone already the best use of a noisy task's data?

Plain CE on the (noisy) training split, CE on the clean validation split alone (``ce-val``) and
CE fine-tuned on the clean split for the last 20% of the teaching steps (``ce-finetune``), same
budget, same seeds (batched on the native vector env), final test accuracy. Used to pick the
clean split's size of ``mnist1d-mlp-noisy-smallval``: there the clean split alone must not win.

    python benchmarks/clean_split_baselines.py --tasks mnist1d-mlp-noisy-smallval,mnist1d-mlp-noisy --seeds 0 1 2
"""

from __future__ import annotations

import argparse
import time

import numpy as np
import torch

from l2t_agents.registry import make_teacher
from l2t_agents.evaluation import make_vector_env, run_episodes


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--tasks", default="mnist1d-mlp-noisy-smallval", help="comma-separated task names")
    parser.add_argument("--teachers", default="ce,ce-val,ce-finetune", help="comma-separated teacher names")
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--threads", type=int, default=1, help="torch CPU threads")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    for task in args.tasks.split(","):
        for name in args.teachers.split(","):
            start = time.perf_counter()
            teacher = make_teacher(name)
            env = make_vector_env(teacher, len(args.seeds), task=task, device="cpu")
            acc = np.array([r.final["test_acc"] for r in run_episodes(env, teacher, args.seeds)])
            spread = f" ± {acc.std(ddof=1):.3f}" if len(acc) > 1 else ""
            print(
                f"{task:28s} {name:12s} test acc {acc.mean():.3f}{spread}  per seed {np.round(acc, 3).tolist()}"
                f"  ({time.perf_counter() - start:.0f} s)",
                flush=True,
            )


if __name__ == "__main__":
    main()
