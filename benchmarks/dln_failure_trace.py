"""Trace one seed's episode to see how a DLN teacher fails (a diagnostic behind the README).

Two traces on the same seed, at a few teaching steps:

- the ``l2t-dln`` teacher learning online: mean and max |u| of its output (u = +-1 is the env's
  per-step bound), the validation accuracy, and how far phi has moved from its initialisation;
- the DLN frozen at its initialisation (``fixed``): the validation accuracy, the mean |logit|, the
  fraction of saturated output sigmoids (s < 1e-3 or s > 1 - 1e-3, where the DLN's input stops
  moving) and the student's gradient norm.

    python benchmarks/dln_failure_trace.py --seed 1
"""

from __future__ import annotations

import argparse

import gymnasium as gym
import numpy as np
import torch

import l2t_env  # noqa: F401
from l2t_agents import make_env, make_teacher


def trace_teacher(task: str, seed: int, report_at: set[int]) -> None:
    teacher = make_teacher("l2t-dln")
    env = make_env(teacher, task)
    obs, _ = env.reset(seed=seed)
    teacher.reset(env)
    phi0 = env.unwrapped.phi.clone()
    print(f"l2t-dln teacher, seed {seed}")
    print(f"{'step':>5} {'mean|u|':>8} {'max|u|':>7} {'val acc':>8} {'max|phi-phi0|':>14} {'|phi-phi0|/|phi0|':>18}")
    done, t = False, 0
    while not done:
        u = teacher.act(obs)
        obs, _, terminated, truncated, info = env.step(u)
        teacher.observe(obs, 0.0, terminated, truncated, info)
        done, t = terminated or truncated, t + 1
        if t in report_at or done:
            moved = env.unwrapped.phi - phi0
            print(f"{t:>5} {u.abs().mean().item():>8.4f} {u.abs().max().item():>7.3f} {info['val_acc']:>8.3f} "
                  f"{moved.abs().max().item():>14.4f} {(moved.norm() / phi0.norm()).item():>18.4f}")


def trace_fixed(task: str, seed: int, report_at: set[int]) -> None:
    env = gym.make("L2T-v0", task=task, lookahead="off")
    env.reset(seed=seed)
    core = env.unwrapped
    print(f"frozen DLN (fixed), seed {seed}")
    print(f"{'step':>5} {'val acc':>8} {'mean|z|':>8} {'saturated sigmoid':>18} {'student grad norm':>18}")
    done, t = False, 0
    while not done:
        _, _, terminated, truncated, info = env.step(np.zeros(env.action_space.shape, np.float32))
        done, t = terminated or truncated, t + 1
        if t in report_at or done:
            with torch.no_grad():
                z = core.student(core.params, core.buffers, core.splits.x_val)
                s = torch.sigmoid(z)
            saturated = ((s < 1e-3) | (s > 1 - 1e-3)).float().mean().item()
            print(f"{t:>5} {info['val_acc']:>8.3f} {z.abs().mean().item():>8.2f} {saturated:>18.3f} {info['grad_norm']:>18.3f}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--task", default="digits-mlp")
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--at", type=int, nargs="+", default=[1, 10, 25, 50, 75, 100], help="teaching steps to report")
    args = parser.parse_args()
    trace_teacher(args.task, args.seed, set(args.at))
    print()
    trace_fixed(args.task, args.seed, set(args.at))


if __name__ == "__main__":
    main()
