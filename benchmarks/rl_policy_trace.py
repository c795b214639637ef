"""Issue 18: what a trained control-mode agent does to the loss over an episode.

Loads a saved SB3 agent (``agent.zip`` of ``l2t train``, or a bench's agent folder), runs it frozen
on the given seeds of a task as one vector env, and records phi (the loss's hyper-parameters or
the fused metric's weights) after every teaching step. Prints the mean over seeds at a few points
of the episode, and with ``--png`` plots the mean and the range over seeds per parameter.

    python benchmarks/rl_policy_trace.py --agent runs/rl/agents/.../ --task digits-mlp-noisy \\
        --env-arg loss=dfm --env-arg 'loss_kwargs={metrics: [ce, gce, rce]}' --seeds 0-9 --png trace.png
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import numpy as np


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--agent", required=True, help="a saved SB3 agent (folder or .zip)")
    parser.add_argument("--task", default="digits-mlp-noisy")
    parser.add_argument("--env-arg", action="append", default=[], metavar="KEY=VALUE", help="env argument, as in l2t teach")
    parser.add_argument("--set", dest="task_set", action="append", default=[], metavar="KEY=VALUE", help="task override")
    parser.add_argument("--seeds", default="0-9", help="evaluation seeds, e.g. 0-9 or 3,5")
    parser.add_argument("--threads", type=int, default=None)
    parser.add_argument("--png", type=Path, help="plot the trace here")
    parser.add_argument("--json", type=Path, help="write the trace here")
    args = parser.parse_args()
    import torch

    if args.threads:
        torch.set_num_threads(args.threads)
    import l2t_env  # noqa: F401
    from l2t_agents import make_teacher, make_vector_env
    from l2t_agents.sb3_teachers import SB3Teacher
    from l2t_bench.options import parse_overrides
    from l2t_bench.train import parse_seeds

    info = SB3Teacher.read_info(args.agent)
    teacher = make_teacher(info["teacher"])
    teacher.load(args.agent)
    seeds = parse_seeds(args.seeds, "--seeds")
    env_kwargs = {**parse_overrides(args.env_arg, "env"), **parse_overrides(args.task_set, "task"), "device": "cpu"}
    env = make_vector_env(teacher, len(seeds), args.task, **env_kwargs)
    names = [name for name, _ in env.unwrapped.groups]
    obs, _ = env.reset(seed=seeds)
    teacher.reset(env)
    phis = [obs["loss_params"].copy()]
    accs = []
    done = np.zeros(len(seeds), dtype=bool)
    while not done.all():
        obs, _, term, trunc, step_info = env.step(teacher.act(obs))
        done |= term | trunc
        phis.append(obs["loss_params"].copy())
        accs.append(step_info["val_acc"].copy())
    env.close()
    trace = np.stack(phis)  # [steps + 1, seeds, n_phi]: the start, then phi after each step (NEXT_STEP autoreset: the last is the end)
    steps = len(trace) - 1
    print(f"{info['teacher']} agent {args.agent} on {args.task}, seeds {seeds}: phi = {names} over {steps} teaching steps "
          f"(mean over seeds [min, max])")
    for frac in (0.0, 0.01, 0.1, 0.25, 0.5, 0.75, 1.0):
        t = int(round(frac * steps))
        cells = [f"{n} {trace[t, :, i].mean():.3f} [{trace[t, :, i].min():.3f}, {trace[t, :, i].max():.3f}]" for i, n in enumerate(names)]
        print(f"  step {t:>4}: " + "   ".join(cells))
    if args.json:
        args.json.write_text(json.dumps({"names": names, "seeds": seeds, "trace": trace.tolist()}))
    if args.png:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt

        fig, ax = plt.subplots(figsize=(7, 4))
        x = np.arange(len(trace))
        for i, n in enumerate(names):
            line = ax.plot(x, trace[:, :, i].mean(1), label=n)[0]
            ax.fill_between(x, trace[:, :, i].min(1), trace[:, :, i].max(1), color=line.get_color(), alpha=0.2)
        ax.set_xlabel("teaching step")
        ax.set_ylabel("phi (mean over seeds, range)")
        ax.set_title(f"{info['teacher']} on {args.task}")
        ax.legend()
        fig.tight_layout()
        fig.savefig(args.png, dpi=110)
        print(f"wrote {args.png}")


if __name__ == "__main__":
    sys.exit(main())
