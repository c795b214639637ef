"""How close a DLN fitted to a robust loss, frozen, comes to that loss: final test accuracy and gradient agreement.

For each target (``gce``, ``sce``, ... any registered robust loss, or ``ce`` for the pairwise
``"ce"`` init against plain cross-entropy) and each seed: the target loss frozen (its teacher) and
the DLN fitted to it frozen (teacher ``fixed`` with ``loss_kwargs={"init": target}``), the seeds
of each batched in one vector env. The gradient agreement (:func:`l2t_env.dln_init.gradient_agreement`)
is measured on held-out logits (:func:`l2t_env.dln_init.draw_logits`, another generator): 4,096
examples drawn like the fit's (scale ``U(0, 3)``, the label's logit raised by ``U(0, 6)``) and
4,096 smaller ones (scale ``U(0, 1)``, ``U(0, 2)``), nearer the student's start.

    python benchmarks/dln_fit_targets.py --task digits-mlp-noisy --seeds 0-4 --targets gce sce --threads 1
    python benchmarks/dln_fit_targets.py --task digits-mlp-noisy --seeds 0-4 --targets gce sce --fit shift=0
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

import torch  # noqa: E402

import _common  # noqa: E402,F401  (puts the repo on sys.path, registers L2T-v0)
from _common import write_json  # noqa: E402
from l2t_agents.registry import make_teacher  # noqa: E402
from l2t_agents.evaluation import make_vector_env, run_episodes  # noqa: E402
from l2t_env import dln_init  # noqa: E402
from l2t_env.losses import DynamicLossNetwork  # noqa: E402
from l2t_env.robust_losses import ce  # noqa: E402
from l2t_env.tasks import load_task  # noqa: E402

#: held-out logits: (label, logit_std, margin); the generator seed is not any fit's (fits use seed + 1)
HELD_OUT = (("fit-like", 3.0, 6.0), ("small", 1.0, 2.0))
HELD_OUT_SEED = 10_007


def parse_seeds(text: str) -> list[int]:
    """``0-4`` or ``0,2,5``."""
    if "-" in text:
        lo, hi = text.split("-")
        return list(range(int(lo), int(hi) + 1))
    return [int(s) for s in text.split(",")]


def final_accuracies(teacher_name: str, task: str, seeds: list[int], env_kwargs: dict) -> list[float]:
    teacher = make_teacher(teacher_name)
    env = make_vector_env(teacher, len(seeds), task, device="cpu", **env_kwargs)
    try:
        records = run_episodes(env, teacher, seeds)
    finally:
        env.close()
    return [r.final["test_acc"] for r in records]


def agreement(target: str, seeds: list[int], num_classes: int, fit: dict) -> list[dict]:
    """Per seed, the fitted DLN's gradient agreement with its target on each held-out set."""
    family = DynamicLossNetwork(init=target, num_classes=num_classes, fit=fit)
    target_fn = ce if target == "ce" else family.target_loss
    out = []
    for seed in seeds:
        phi = family.init_params(seed, torch.device("cpu"), torch.float64)
        row = {}
        for label, std, margin in HELD_OUT:
            z, y = dln_init.draw_logits(torch.Generator().manual_seed(HELD_OUT_SEED), 4096, num_classes, std, margin)
            row[label] = dln_init.gradient_agreement(family, phi, target_fn, z, y)
        out.append(row)
    return out


def mean_std(values: list[float]) -> str:
    std = statistics.stdev(values) if len(values) > 1 else 0.0
    return f"{statistics.mean(values):.3f} ± {std:.3f}"


def main(argv: list[str] | None = None) -> dict:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--task", default="digits-mlp-noisy")
    p.add_argument("--seeds", default="0-4", help="e.g. 0-4 or 0,3")
    p.add_argument("--targets", nargs="+", default=["gce", "sce"], help="robust loss names, or ce (the pairwise init vs CE)")
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--fit", nargs="*", default=[], metavar="KEY=VALUE",
                   help="fit settings (TargetFit, or CEFit for ce), e.g. --fit shift=0 steps=300")
    p.add_argument("--json", type=Path, default=None)
    args = p.parse_args(argv)
    torch.set_num_threads(args.threads)
    seeds = parse_seeds(args.seeds)
    num_classes = 10 if "digits" in args.task else None
    if num_classes is None:
        raise SystemExit(f"--task {args.task!r}: only the digits tasks (10 classes) are wired here")
    load_task(args.task)  # a bad task name fails before any fit
    fit = {k: json.loads(v) for k, v in (item.split("=", 1) for item in args.fit)}
    results = {"task": args.task, "seeds": seeds, "fit": fit, "targets": {}}
    for target in args.targets:
        start = time.perf_counter()
        agree = agreement(target, seeds, num_classes, fit)  # also warms the fit caches the env reads
        fit_time = time.perf_counter() - start
        target_acc = final_accuracies(target, args.task, seeds, {})
        dln_acc = final_accuracies("fixed", args.task, seeds, {"loss_kwargs": {"init": target, "fit": fit}})
        results["targets"][target] = {"target_acc": target_acc, "dln_acc": dln_acc, "agreement": agree,
                                      "seconds": time.perf_counter() - start, "fit_seconds": fit_time}
        print(f"\n{target} on {args.task} (fits {fit_time:.0f} s, total {time.perf_counter() - start:.0f} s)")
        print("| seed | target frozen | fitted DLN frozen | Δ | " + " | ".join(f"cos {h[0]} | rel.err {h[0]}" for h in HELD_OUT) + " |")
        for seed, a, b, g in zip(seeds, target_acc, dln_acc, agree):
            cells = " | ".join(f"{g[h[0]]['cosine']:.3f} | {g[h[0]]['rel_error']:.3f}" for h in HELD_OUT)
            print(f"| {seed} | {a:.4f} | {b:.4f} | {b - a:+.4f} | {cells} |")
        cells = " | ".join(f"{statistics.mean(g[h[0]]['cosine'] for g in agree):.3f} | "
                           f"{statistics.mean(g[h[0]]['rel_error'] for g in agree):.3f}" for h in HELD_OUT)
        print(f"| mean ± std | {mean_std(target_acc)} | {mean_std(dln_acc)} | "
              f"{statistics.mean(b - a for a, b in zip(target_acc, dln_acc)):+.3f} | {cells} |", flush=True)
    if args.json:
        write_json(args.json, results)
    return results


if __name__ == "__main__":
    main()
