"""Issue 18: the documented search behind ``configs/agents/ppo-control.yaml`` (docs/rl.md).

Each point is one ``l2t train`` of PPO in control mode on the fused metric of ce, gce and rce on
``digits-mlp-noisy``, 100,000 env steps on 16 students, its learning curve on the held-out seeds
2000-2009 (which are neither training seeds nor the bench's evaluation seeds 0-9). The point with
the best final test accuracy on those seeds at the end of training sets the config; one agent
seed per point. Prints each point's last row and plots the curves in one figure.

    python benchmarks/rl_search.py --out runs/rl-search            # train every point (about 10 min each on 2 cores)
    python benchmarks/rl_search.py --out runs/rl-search --report    # only the table and the figure
"""

from __future__ import annotations

import argparse
import shlex
import subprocess
import sys
from pathlib import Path

BASE = ["--agent", "ppo", "--config", "ppo-control", "--task", "digits-mlp-noisy", "--env-arg", "loss=dfm",
        "--env-arg", "loss_kwargs={metrics: [ce, gce, rce]}", "--timesteps", "100000", "--n-envs", "16", "--eval-every", "10000"]
#: name -> the arguments it adds to BASE
POINTS = {
    "ppo-dfm-noisy": [],  # the config as written: lr 3e-4, reward val_loss_decrease every step
    "ppo-dfm-noisy-acc": ["--env-arg", "reward=val_acc_increase"],
    "ppo-dfm-noisy-lr1e-3": ["--agent-arg", "learning_rate=1e-3"],
    "ppo-dfm-noisy-re10": ["--env-arg", "reward_every=10"],
}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", type=Path, default=Path("runs/rl-search"))
    parser.add_argument("--points", nargs="+", choices=sorted(POINTS), default=list(POINTS))
    parser.add_argument("--report", action="store_true", help="only print the table and draw the figure from OUT/*/learning_curve.csv")
    parser.add_argument("--png", type=Path, help="the figure (default OUT/search.png)")
    args = parser.parse_args()
    if not args.report:
        for name in args.points:
            cmd = ["l2t", "train", *BASE, *POINTS[name], "--out", str(args.out / name), "--quiet"]
            print("$ " + shlex.join(cmd), flush=True)
            subprocess.run(cmd, check=True)
    from l2t_bench.learning_curves import plot_curves, read_curve

    curves = {name: read_curve(args.out / name / "learning_curve.csv") for name in args.points}
    print("| point | adds | env steps | final test acc [95% CI] | early-stopped | mean return | wall s |")
    print("|---|---|---:|---:|---:|---:|---:|")
    for name, rows in curves.items():
        if not rows:
            print(f"| {name} | {shlex.join(POINTS[name])} | (not trained) | | | | |")
            continue
        r = rows[-1]
        print(f"| {name} | {shlex.join(POINTS[name]) or '(as configured)'} | {int(r['env_steps'])} | {r['test_acc_mean']:.3f} "
              f"[{r['test_acc_ci_low']:.3f}, {r['test_acc_ci_high']:.3f}] | {r['es_test_acc_mean']:.3f} | {r['return_mean']:+.3f} | {r['wall_time_s']:.0f} |")
    png = plot_curves({k: v for k, v in curves.items() if v}, args.png or args.out / "search.png",
                      title="PPO (control, fused ce/gce/rce) on digits-mlp-noisy: held-out seeds 2000-2009")
    print(f"wrote {png}")


if __name__ == "__main__":
    sys.exit(main())
