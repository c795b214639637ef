"""What the online L2T-DLF teacher does to the dlf loss over one episode, against the frozen start.

Runs ``l2t-dlf`` online (and, for reference, frozen at its W = I, b = 0 start) on one seed and prints
every ``--every`` teaching steps: the validation accuracy, the dev measure the teacher descended
at that step (``teacher.last_value``, on that step's validation batch after the look-ahead), and
the loss parameters: mean of diag(W), mean |off-diagonal W|, mean b.

    python benchmarks/dlf_trace.py --seed 0 --json runs/bench/dlf_trace.json
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

import _common as C  # noqa: E402
import torch  # noqa: E402

from l2t_agents import make_env, make_teacher, run_episode  # noqa: E402


def trace(learning: bool, args: argparse.Namespace) -> dict:
    teacher = make_teacher("l2t-dlf", **args.teacher_kwargs)
    teacher.learning = learning
    env = make_env(teacher, args.task, device="cpu")
    rows: list[dict] = []

    def on_step(t: int, info: dict) -> None:
        if t % args.every and t != env.unwrapped.config.teaching_steps:
            return
        core = env.unwrapped
        c = core.raw.num_classes
        w, b = core.phi[: c * c].view(c, c), core.phi[c * c :]
        off = w - torch.diag(torch.diag(w))
        rows.append({"step": t, "val_acc": info["val_acc"], "dev_measure": getattr(teacher, "last_value", float("nan")),
                     "w_diag": torch.diag(w).mean().item(), "w_off_abs": off.abs().sum().item() / (c * c - c), "b": b.mean().item()})

    record = run_episode(env, teacher, args.seed, on_step=on_step)
    return {"learning": learning, "test_acc": record.final["test_acc"], "rows": rows}


def main(argv=None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--task", default="digits-mlp")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--every", type=int, default=10)
    parser.add_argument("--set", nargs="*", default=[], metavar="KEY=VALUE", help="teacher kwargs, e.g. lr=1e-4")
    parser.add_argument("--json", type=Path, default=None)
    args = parser.parse_args(argv)
    args.teacher_kwargs = C.parse_overrides(args.set, "--set teacher")
    torch.set_num_threads(1)
    results = [trace(True, args), trace(False, args)]
    for res in results:
        print(f"\n-- l2t-dlf {'online' if res['learning'] else 'frozen (W = I, b = 0)'} {args.teacher_kwargs or ''}, "
              f"{args.task}, seed {args.seed}: final test acc {res['test_acc']:.3f}")
        C.print_table(["step", "val acc", "dev measure", "mean diag W", "mean |offdiag W|", "mean b"],
                      [[r["step"], f"{r['val_acc']:.3f}", f"{r['dev_measure']:.3f}", f"{r['w_diag']:.3f}",
                        f"{r['w_off_abs']:.3f}", f"{r['b']:.3f}"] for r in res["rows"]])
    payload = {"benchmark": "dlf_trace", "args": {k: str(v) for k, v in vars(args).items()}, "results": results}
    C.write_json(args.json, payload)
    return payload


if __name__ == "__main__":
    main()
