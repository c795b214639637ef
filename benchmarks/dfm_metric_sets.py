"""The L2T-DFM teacher with different metric sets of its ``dfm`` family: final test accuracy per seed.

Why: adding members to the fused metric changes what the teacher can select (and its action
space), so a new default list must be measured against the old one on the same seeds. One seed at
a time (the ``l2t-dfm`` teacher does not batch seeds), one torch thread, as ``l2t bench`` runs it.

    python benchmarks/dfm_metric_sets.py --task digits-mlp --seeds 0-4 --metrics ce,brier,focal,hinge,kl
    python benchmarks/dfm_metric_sets.py --task digits-mlp-noisy --seeds 0-2 --metrics default
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

import torch  # noqa: E402

import _common  # noqa: E402,F401  (puts the repo on sys.path, registers L2T-v0)
from l2t_agents.registry import make_teacher  # noqa: E402
from l2t_agents.evaluation import make_env, run_episode  # noqa: E402


def parse_seeds(text: str) -> list[int]:
    """``0-4`` or ``0,2,5``."""
    if "-" in text:
        lo, hi = text.split("-")
        return list(range(int(lo), int(hi) + 1))
    return [int(s) for s in text.split(",")]


def main(argv: list[str] | None = None) -> dict:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--task", default="digits-mlp")
    p.add_argument("--seeds", default="0-4", help="e.g. 0-4 or 0,3")
    p.add_argument("--metrics", default="default", help="comma-separated metric names, or 'default' (the family's default)")
    p.add_argument("--threads", type=int, default=1)
    args = p.parse_args(argv)
    torch.set_num_threads(args.threads)
    loss_kwargs = {} if args.metrics == "default" else {"metrics": tuple(args.metrics.split(","))}
    accs = []
    for seed in parse_seeds(args.seeds):
        teacher = make_teacher("l2t-dfm")
        env = make_env(teacher, args.task, loss_kwargs=loss_kwargs, device="cpu")
        start = time.perf_counter()
        record = run_episode(env, teacher, seed)
        acc = record.final["test_acc"]
        accs.append(acc)
        print(f"{args.task} metrics={args.metrics} seed {seed}: test_acc {acc:.4f} ({time.perf_counter() - start:.0f} s)", flush=True)
    std = statistics.stdev(accs) if len(accs) > 1 else 0.0
    print(f"{args.task} metrics={args.metrics}: mean {statistics.mean(accs):.4f} +- {std:.4f} over {len(accs)} seeds")
    return {"task": args.task, "metrics": args.metrics, "test_acc": accs}


if __name__ == "__main__":
    main()
