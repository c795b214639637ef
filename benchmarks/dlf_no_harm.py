"""Does the online L2T-DLF teacher leave its student at least as good as its own frozen start?

Runs ``l2t-dlf`` variants (teacher options) on the same seeds, each teacher fresh per seed, and the
teacher frozen at its start (W = I, b = 0, the bounded surrogate ``-sigmoid(log p_y)``) as the
reference. Prints, per variant: final test accuracy across seeds, its paired difference to the
frozen start (mean and 95% bootstrap interval over the seeds), the drift of the loss from its start
at the episode's end (max |Phi - Phi_0|, mean |off-diagonal W|), and the mean norm of the
hypergradient d measure / d Phi together with the norm of its mean over the episode (their ratio
says how much of it is noise).

    python benchmarks/dlf_no_harm.py --seeds 0 1 2 --variants frozen paper sgd
    python benchmarks/dlf_no_harm.py --variant "mine=optimizer=sgd,lr=0.3" --seeds 0 1 2
    python benchmarks/dlf_no_harm.py --plot docs/x.png --plot-from runs/a.json runs/b.json   # figure only
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

import _common as C  # noqa: E402
import numpy as np  # noqa: E402
import torch  # noqa: E402

from l2t_agents import make_env, make_teacher, run_episode  # noqa: E402
from l2t_bench.stats import paired_difference  # noqa: E402

#: the earlier default of l2t-dlf, which every named variant starts from (so that a name means
#: the same options whatever the teacher's defaults are now)
EARLIER = {"optimizer": "adam", "lr": 1e-3, "proximity": 0.0, "max_drift": None, "measure": "smoothed_error"}

#: the variants by name: teacher options (``None``: the teacher frozen at its start)
VARIANTS: dict[str, dict | None] = {
    "frozen": None,
    "paper": dict(EARLIER),  # the earlier default (the name of the row in the first tables)
    "adam-lr1e-4": {**EARLIER, "lr": 1e-4},
    "adam-lr3e-5": {**EARLIER, "lr": 3e-5},
    "adam-prox0.1": {**EARLIER, "proximity": 0.1},
    "adam-prox1": {**EARLIER, "proximity": 1.0},
    "adam-prox10": {**EARLIER, "proximity": 10.0},
    "drift0.02": {**EARLIER, "max_drift": 0.02},
    "adam-drift0.05": {**EARLIER, "max_drift": 0.05},
    "drift0.1": {**EARLIER, "max_drift": 0.1},
    "ce-adam": {**EARLIER, "measure": "ce"},
    "ce-lr1e-4": {**EARLIER, "measure": "ce", "lr": 1e-4},
    "sgd": {**EARLIER, "optimizer": "sgd", "lr": 1e-1},
    "sgd-lr1e-2": {**EARLIER, "optimizer": "sgd", "lr": 1e-2},
    "sgd-lr3e-3": {**EARLIER, "optimizer": "sgd", "lr": 3e-3},
    "sgd-lr1e-3": {**EARLIER, "optimizer": "sgd", "lr": 1e-3},
    "sgd-lr1e-3-prox1": {**EARLIER, "optimizer": "sgd", "lr": 1e-3, "proximity": 1.0},
    "default": {},  # whatever L2TDLFConfig's defaults are (since this study: sgd-lr1e-3-prox1)
}


def replayed(options: dict, task: str, seed: int, episodes: int, overrides: dict):
    """A teacher trained the paper's way: ``episodes`` episodes of the same student (``seed``)."""
    teacher = make_teacher("l2t-dlf", **options)
    env = make_env(teacher, task, device="cpu", **overrides)
    for _ in range(episodes):
        record = run_episode(env, teacher, seed)
        print(f"  replay episode on seed {seed}: test acc {record.final['test_acc']:.3f}", flush=True)
    return teacher


def run(name: str, options: dict | None, task: str, seed: int, overrides: dict, trained=None) -> dict:
    """One episode; ``trained``: a teacher trained beforehand, evaluated frozen (a copy per seed)."""
    if trained is not None:
        teacher = make_teacher("l2t-dlf", **(options or {}))
        teacher.load_state_dict(trained.state_dict())
        teacher.learning = False
    else:
        teacher = make_teacher("l2t-dlf", **(options or {}))
        teacher.learning = options is not None
    env = make_env(teacher, task, device="cpu", **overrides)
    grads: list[torch.Tensor] = []
    if teacher.learning:
        learn = teacher.learn

        def recording_learn(*a, **k):
            g = learn(*a, **k)
            grads.append(g.detach().double().clone())
            return g

        teacher.learn = recording_learn  # type: ignore[method-assign]
    curve: list[float] = []
    off_curve: list[float] = []

    def on_step(t: int, info: dict) -> None:
        core = env.unwrapped
        c = core.raw.num_classes
        w = core.phi[: c * c].view(c, c)
        curve.append(float(info["val_acc"]))
        off_curve.append(float((w - torch.diag(torch.diag(w))).abs().sum() / (c * c - c)))

    start = time.perf_counter()
    record = run_episode(env, teacher, seed, on_step=on_step)
    core = env.unwrapped
    phi0 = core.loss_family.init_params(seed, core.phi.device, core.phi.dtype)
    g = torch.stack(grads) if grads else None
    return {
        "variant": name, "options": options, "seed": seed, "test_acc": float(record.final["test_acc"]),
        "max_drift": float((core.phi - phi0).abs().max()), "off_diag": off_curve[-1] if off_curve else 0.0,
        "grad_norm": float(g.norm(dim=1).mean()) if g is not None else float("nan"),
        "mean_grad_norm": float(g.mean(0).norm()) if g is not None else float("nan"),
        "val_curve": curve, "off_curve": off_curve, "wall_s": time.perf_counter() - start,
    }


def table(results: list[dict], reference: str = "frozen") -> None:
    by: dict[str, dict[int, dict]] = {}
    for r in results:
        by.setdefault(r["variant"], {})[r["seed"]] = r
    ref = {s: r["test_acc"] for s, r in by.get(reference, {}).items()}
    rows = []
    for name, runs in by.items():
        acc = np.array([r["test_acc"] for r in runs.values()])
        d = paired_difference({s: r["test_acc"] for s, r in runs.items()}, ref) if ref and name != reference else None
        worst = min((runs[s]["test_acc"] - ref[s] for s in runs if s in ref), default=float("nan")) if d else float("nan")
        rows.append([name, len(acc), f"{acc.mean():.3f} ± {acc.std(ddof=1) if len(acc) > 1 else 0:.3f}",
                     "—" if d is None else f"{d['mean']:+.3f} [{d['ci_low']:+.3f}, {d['ci_high']:+.3f}]",
                     "—" if d is None else f"{worst:+.3f}",
                     f"{np.mean([r['max_drift'] for r in runs.values()]):.3f}",
                     f"{np.mean([r['off_diag'] for r in runs.values()]):.4f}",
                     f"{np.mean([r['grad_norm'] for r in runs.values()]):.2e}",
                     f"{np.mean([r['mean_grad_norm'] for r in runs.values()]):.2e}",
                     f"{np.mean([r['wall_s'] for r in runs.values()]):.0f}"])
    C.print_table(["variant", "n", "test acc", f"Δ vs {reference} [95% CI]", "worst Δ", "max|Φ-Φ0|",
                   "mean|offdiag W|", "mean ‖g‖", "‖mean g‖", "s/run"], rows)


def plot(results: list[dict], path: Path, title: str, curves: list[str] | None = None) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    names = list(dict.fromkeys(r["variant"] for r in results))
    fig, axes = plt.subplots(1, 3, figsize=(15, 4.2))
    ax = axes[0]
    for i, name in enumerate(names):
        acc = [r["test_acc"] for r in results if r["variant"] == name]
        ax.scatter(np.full(len(acc), i) + np.linspace(-0.15, 0.15, len(acc)), acc, s=14, alpha=0.7)
        ax.plot([i - 0.3, i + 0.3], [np.mean(acc)] * 2, color="k")
    ax.set_xticks(range(len(names)), names, rotation=30, ha="right", fontsize=8)
    ax.set_ylabel("final test accuracy")
    ax.set_title("per seed (dots) and mean (bar)")
    for ax, key, label in ((axes[1], "val_curve", "validation accuracy"), (axes[2], "off_curve", "mean |off-diagonal W|")):
        for name in names:
            runs = [r[key] for r in results if r["variant"] == name and r[key]]
            if runs and (not curves or name in curves):
                n = min(len(c) for c in runs)
                ax.plot(np.arange(1, n + 1), np.mean([c[:n] for c in runs], axis=0), label=name)
        ax.set_xlabel("teaching step")
        ax.set_ylabel(label + " (mean over seeds)")
    axes[1].legend(fontsize=7)
    fig.suptitle(title)
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110)
    print(f"wrote {path}")


def main(argv=None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--task", default="digits-mlp")
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--variants", nargs="*", default=["frozen", "paper", "default"], choices=list(VARIANTS))
    parser.add_argument("--variant", action="append", default=[], metavar="NAME=K=V,K=V",
                        help="an extra variant: teacher options, e.g. 'mine=optimizer=sgd,lr=0.3'")
    parser.add_argument("--set", nargs="*", default=[], metavar="KEY=VALUE", help="task overrides, e.g. teaching_steps=50")
    parser.add_argument("--replay", type=int, default=0, metavar="N",
                        help="instead of learning online: train each variant's teacher for N episodes of the "
                             "student --replay-seed (the paper's way), then evaluate it frozen on --seeds")
    parser.add_argument("--replay-seed", type=int, default=1000)
    parser.add_argument("--json", type=Path, default=None)
    parser.add_argument("--plot", type=Path, default=None, help="also draw the figure (PNG)")
    parser.add_argument("--plot-from", type=Path, nargs="*", default=None, help="draw from these JSON files, run nothing")
    parser.add_argument("--title", default=None)
    parser.add_argument("--curves", nargs="*", default=None, metavar="VARIANT", help="variants drawn as curves (default all)")
    parser.add_argument("--rename", nargs="*", default=[], metavar="OLD=NEW",
                        help="with --plot-from: rename variants (the same options run under two names)")
    args = parser.parse_args(argv)
    torch.set_num_threads(1)
    if args.plot_from:
        import json

        results = [r for p in args.plot_from for r in json.loads(p.read_text())["results"]]
        renames = dict(spec.split("=", 1) for spec in args.rename)
        for r in results:
            r["variant"] = renames.get(r["variant"], r["variant"])
        order = list(dict.fromkeys(r["variant"] for r in results))
        results.sort(key=lambda r: order.index(r["variant"]))  # a renamed variant's runs together
        table(results)
        if args.plot:
            plot(results, args.plot, args.title or args.task, args.curves)
        return {"results": results}
    variants = {name: VARIANTS[name] for name in args.variants}
    for spec in args.variant:
        name, _, opts = spec.partition("=")
        variants[name] = C.parse_overrides([o for o in opts.split(",") if o], "--variant")
    overrides = C.parse_overrides(args.set, "--set")
    results = []
    for name, options in variants.items():
        trained = None
        if args.replay and options is not None:
            trained = replayed(options, args.task, args.replay_seed, args.replay, overrides)
            name = f"{name} (replayed x{args.replay}, frozen)"
        for seed in args.seeds:
            r = run(name, options, args.task, seed, overrides, trained)
            r["task"] = args.task
            results.append(r)
            print(f"{name} seed {seed}: test acc {r['test_acc']:.3f}, max drift {r['max_drift']:.3f} ({r['wall_s']:.0f} s)", flush=True)
    print(f"\n-- l2t-dlf on {args.task} {overrides or ''}, seeds {args.seeds}")
    table(results)
    payload = {"benchmark": "dlf_no_harm", "args": {k: str(v) for k, v in vars(args).items()}, "results": results}
    C.write_json(args.json, payload)
    if args.plot:
        plot(results, args.plot, args.title or args.task, args.curves)
    return payload


if __name__ == "__main__":
    main()
