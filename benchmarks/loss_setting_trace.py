"""What the online L2T-DLF / L2T-DFM teachers do to their loss over one episode.

``--teacher l2t-dlf``: runs it online (and, for reference, frozen at its W = I, b = 0 start) on one
seed and prints every ``--every`` teaching steps: the validation accuracy, the dev measure the
teacher descended at that step (``teacher.last_value``, on that step's validation batch after the
look-ahead), and the loss parameters: mean of diag(W), mean |off-diagonal W|, mean b.

``--teacher l2t-dfm``: runs it online and prints the validation accuracy, the metric weights the
teacher committed and the metric confidences after that step's update.

    python benchmarks/loss_setting_trace.py --teacher l2t-dlf --seed 0 --json runs/bench/dlf_trace.json
    python benchmarks/loss_setting_trace.py --teacher l2t-dfm --seed 0 --json runs/bench/dfm_trace.json
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
    teacher = make_teacher(args.teacher, **args.teacher_kwargs)
    teacher.learning = learning
    env = make_env(teacher, args.task, device="cpu")
    rows: list[dict] = []

    def on_step(t: int, info: dict) -> None:
        if t % args.every and t != env.unwrapped.config.teaching_steps:
            return
        core = env.unwrapped
        if args.teacher == "l2t-dfm":
            rows.append({"step": t, "val_acc": info["val_acc"], "weights": core.phi.tolist(), "confidence": teacher.confidence.tolist()})
            return
        c = core.raw.num_classes
        w, b = core.phi[: c * c].view(c, c), core.phi[c * c :]
        off = w - torch.diag(torch.diag(w))
        rows.append({"step": t, "val_acc": info["val_acc"], "dev_measure": getattr(teacher, "last_value", float("nan")),
                     "w_diag": torch.diag(w).mean().item(), "w_off_abs": off.abs().sum().item() / (c * c - c), "b": b.mean().item()})

    record = run_episode(env, teacher, args.seed, on_step=on_step)
    out = {"learning": learning, "test_acc": record.final["test_acc"], "rows": rows}
    if args.teacher == "l2t-dfm":
        out["metrics"] = list(env.unwrapped.loss_family.metrics)
    return out


def main(argv=None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--teacher", default="l2t-dlf", choices=("l2t-dlf", "l2t-dfm"))
    parser.add_argument("--task", default="digits-mlp")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--every", type=int, default=10)
    parser.add_argument("--set", nargs="*", default=[], metavar="KEY=VALUE", help="teacher kwargs, e.g. lr=1e-4")
    parser.add_argument("--json", type=Path, default=None)
    args = parser.parse_args(argv)
    args.teacher_kwargs = C.parse_overrides(args.set, "--set teacher")
    torch.set_num_threads(1)
    if args.teacher == "l2t-dfm":
        res = trace(True, args)
        metrics = res["metrics"]
        print(f"\n-- l2t-dfm online {args.teacher_kwargs or ''}, {args.task}, seed {args.seed}: final test acc {res['test_acc']:.3f}")
        C.print_table(["step", "val acc", *(f"w {m}" for m in metrics), *(f"conf {m}" for m in metrics)],
                      [[r["step"], f"{r['val_acc']:.3f}", *(f"{w:.3f}" for w in r["weights"]),
                        *(f"{c:+.3f}" for c in r["confidence"])] for r in res["rows"]])
        payload = {"benchmark": "dfm_trace", "args": {k: str(v) for k, v in vars(args).items()}, "results": [res]}
        C.write_json(args.json, payload)
        return payload
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
