"""Do the embedded tasks leave room for a teacher? Untaught losses trained for each task's budget.

For each task, loss and seed: a student trained with a fixed loss for the task's whole budget
(no teacher, zero actions), with the test accuracy recorded every ``--every`` teaching steps
(reported only; nothing is selected on it). Losses:

- ``ce``: cross-entropy.
- ``bounded``: ``-sigmoid(log p_y)``, the L2T-DLF family at its init (bounded, so robust to noise).
- ``dln-ce``: the DLN frozen at its ``"ce"`` init (``l2t_env/dln_init.py``).
- ``dln-ce-balanced``: the same with the fit's row-balance penalty (``fit: {balance: 1.0}``).
- ``dln-kaiming``: the DLN frozen at the reference Kaiming init.

Prints the final and the best-along-the-way test accuracy per task and loss (mean, min, max over
seeds); the gap between them is the room that early stopping, or a teacher, could take. Per run
it also prints the spread and maximum of the student's logits on the validation split at the end
(a DLN sees only ``sigmoid(z)``, which saturates for large logits).

    python benchmarks/task_headroom.py --seeds 0 1 2 --json runs/task_headroom.json \
        --plot docs/task_headroom.png
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

import gymnasium as gym  # noqa: E402
import numpy as np  # noqa: E402
import torch  # noqa: E402

from _common import environment_info, print_table, write_json  # noqa: E402
from l2t_env.functional import evaluate  # noqa: E402

LOSSES = {
    "ce": {"loss": "ce"},
    "bounded": {"loss": "dlf"},
    "dln-ce": {"loss": "dln", "loss_kwargs": {"init": "ce"}},
    "dln-ce-balanced": {"loss": "dln", "loss_kwargs": {"init": "ce", "fit": {"balance": 1.0}}},
    "dln-kaiming": {"loss": "dln"},
}


def curve(task: str, loss: str, seed: int, every: int, overrides: dict) -> dict:
    """Test accuracy every ``every`` teaching steps (and at the end) of one untaught run."""
    env = gym.make("L2T-v0", task=task, lookahead="off", **LOSSES[loss], **overrides)
    env.reset(seed=seed)
    core = env.unwrapped
    action = np.zeros(env.action_space.shape, np.float32)
    steps, accs, logit_std, logit_max = [], [], [], []
    done, t = False, 0
    while not done:
        _, _, terminated, truncated, info = env.step(action)
        t += 1
        done = terminated or truncated
        if t % every == 0 or done:
            with torch.no_grad():
                _, acc = evaluate(core.student, core.params, core.buffers, core.splits.x_test, core.splits.y_test)
                core.student.train(False)  # the students here have no BatchNorm or dropout; as evaluate does
                try:
                    z = core.student(core.params, core.buffers, core.splits.x_val)
                finally:
                    core.student.train(True)
            steps.append(t * core.config.unroll_steps)
            accs.append(acc.item())
            logit_std.append(z.std().item())
            logit_max.append(z.max().item())
    return {"task": task, "loss": loss, "seed": seed, "student_steps": steps, "test_acc": accs,
            "val_logit_std": logit_std, "val_logit_max": logit_max, "diverged": bool(info.get("diverged", False))}


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--tasks", nargs="+", default=["digits-mlp-noisy", "mnist1d-mlp", "mnist1d-cnn"])
    p.add_argument("--losses", nargs="+", default=["ce", "bounded", "dln-ce"], choices=sorted(LOSSES))
    p.add_argument("--seeds", nargs="+", type=int, default=[0, 1, 2])
    p.add_argument("--every", type=int, default=20, help="record the test accuracy every N teaching steps")
    p.add_argument("--set", nargs="+", default=None, metavar="KEY=VALUE", dest="overrides", help="task overrides")
    p.add_argument("--json", type=Path, default=None)
    p.add_argument("--plot", type=Path, default=None, help="test accuracy curves, one panel per task")
    args = p.parse_args()
    from l2t_bench.options import parse_overrides

    overrides = parse_overrides(args.overrides, "task")
    runs = []
    for task in args.tasks:
        for loss in args.losses:
            for seed in args.seeds:
                runs.append(curve(task, loss, seed, args.every, overrides))
                r = runs[-1]
                print(f"{task} {loss} seed {seed}: final {r['test_acc'][-1]:.3f} best {max(r['test_acc']):.3f} "
                      f"(validation logits at the end: std {r['val_logit_std'][-1]:.1f}, max {r['val_logit_max'][-1]:.1f})",
                      flush=True)
    rows = []
    for task in args.tasks:
        for loss in args.losses:
            rs = [r for r in runs if r["task"] == task and r["loss"] == loss]
            final = np.array([r["test_acc"][-1] for r in rs])
            best = np.array([max(r["test_acc"]) for r in rs])
            rows.append([task, loss, rs[0]["student_steps"][-1], len(rs), f"{final.mean():.3f}",
                         f"{final.min():.3f}-{final.max():.3f}", f"{best.mean():.3f}"])
    print_table(["task", "loss", "student steps", "seeds", "final test acc", "min-max", "best along the way"], rows,
                align="llrrrrr")
    write_json(args.json, {"environment": environment_info("cpu"), "args": vars(args), "runs": runs})
    if args.plot:
        plot(runs, args.tasks, args.losses, args.plot)


def plot(runs: list[dict], tasks: list[str], losses: list[str], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, len(tasks), figsize=(4.5 * len(tasks), 3.4), squeeze=False)
    for ax, task in zip(axes[0], tasks):
        for i, loss in enumerate(losses):
            rs = [r for r in runs if r["task"] == task and r["loss"] == loss]
            acc = np.array([r["test_acc"] for r in rs])
            steps = rs[0]["student_steps"]
            ax.plot(steps, acc.mean(0), color=f"C{i}", label=loss)
            ax.fill_between(steps, acc.min(0), acc.max(0), color=f"C{i}", alpha=0.2)
        ax.set_title(task)
        ax.set_xlabel("student steps")
        ax.grid(alpha=0.3)
    axes[0][0].set_ylabel("test accuracy (mean, min-max over seeds)")
    axes[0][0].legend()
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=120)
    print(f"wrote {path}")


if __name__ == "__main__":
    main()
