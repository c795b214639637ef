"""How the randomly initialised DLN pushes the student, per episode seed (a diagnostic).

For each seed, at the initial student on the first K training batches, prints the cosine between
the student's gradient under the untaught DLN and under cross-entropy, and the DLN's derivative
with respect to the true-class logit at s = 0.5 (positive: the DLN pushes the true class DOWN).
With ``--episodes`` it also trains each seed's student on the frozen DLN (the ``fixed`` teacher)
and on cross-entropy for the task's budget and prints the final test accuracies.

    python benchmarks/dln_init_alignment.py --seeds 0-9 --episodes
"""

from __future__ import annotations

import argparse

import gymnasium as gym
import numpy as np
import torch
import torch.nn.functional as F

import l2t_env  # noqa: F401


def parse_seeds(text: str) -> list[int]:
    if "-" in text:
        lo, hi = text.split("-")
        return list(range(int(lo), int(hi) + 1))
    return [int(s) for s in text.split(",")]


def alignment(seed: int, task: str) -> tuple[float, float]:
    env = gym.make("L2T-v0", task=task, lookahead="off")
    env.reset(seed=seed)
    core = env.unwrapped
    batches = core._next
    x, y = batches.x.flatten(0, 1), batches.y.flatten()
    flat = lambda grads: torch.cat([g.flatten() for g in grads])  # noqa: E731
    g_dln = flat(torch.autograd.grad(core.loss_family(core.phi, core.student(core.params, core.buffers, x), y), core.params))
    g_ce = flat(torch.autograd.grad(F.cross_entropy(core.student(core.params, core.buffers, x), y), core.params))
    z = torch.zeros(1, core.raw.num_classes, requires_grad=True)
    dz = torch.autograd.grad(core.loss_family(core.phi, z, torch.tensor([0])), z)[0][0, 0]
    return F.cosine_similarity(g_dln, g_ce, dim=0).item(), dz.item()


def final_test_acc(seed: int, task: str, loss: str) -> float:
    env = gym.make("L2T-v0", task=task, loss=loss, lookahead="off")
    env.reset(seed=seed)
    done, info = False, {}
    while not done:
        _, _, terminated, truncated, info = env.step(np.zeros(env.action_space.shape, np.float32))
        done = terminated or truncated
    return info["test_acc"]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--task", default="digits-mlp")
    parser.add_argument("--seeds", default="0-9", help="e.g. 0-9 or 0,3,5")
    parser.add_argument("--episodes", action="store_true", help="also train on the frozen DLN and on CE")
    args = parser.parse_args()
    header = f"{'seed':>4}  {'cos(g_DLN, g_CE)':>16}  {'dL/dz_true':>10}"
    if args.episodes:
        header += f"  {'fixed-DLN test acc':>18}  {'CE test acc':>11}"
    print(header)
    for seed in parse_seeds(args.seeds):
        cos, dz = alignment(seed, args.task)
        line = f"{seed:>4}  {cos:>16.3f}  {dz:>10.3f}"
        if args.episodes:
            line += f"  {final_test_acc(seed, args.task, 'dln'):>18.3f}  {final_test_acc(seed, args.task, 'ce'):>11.3f}"
        print(line, flush=True)


if __name__ == "__main__":
    main()
