"""Issue 17 section 4: how much of the L2T-DLN loss state is signal, how much validation-batch noise?

The teacher's input ``loss_grad`` is d(val CE)/d(phi) through the K-step look-ahead, measured on
ONE validation batch of ``val_batch_size`` (100) examples drawn anew each step. Because the val CE
is a mean over examples, that hypergradient is exactly the mean of per-example hypergradients g_i
(same student, same K training batches, same phi). So from the per-example hypergradients of the
whole validation split (~360 images) we can form the hypergradient of any validation batch and ask:

- do two disjoint batches of 100 agree (cosine)? does one agree with the whole split?
- how large is a batch's norm against the whole split's (noise inflates it)?
- the per-example signal-to-noise ratio s = |mu|^2 / tr(Sigma) (mu: mean hypergradient, Sigma:
  the per-example covariance, |mu|^2 estimated without the noise of the split's own mean), which
  under i.i.d. draws predicts the cosine of two independent batches of m as s*m / (s*m + 1):
  m = 1/s is the batch at which it reaches 0.5, and the prediction at m = 360 says how well a whole
  split of that size would agree with a second, independent one.

Setup: ``digits-mlp-noisy``, DLN ``loss_kwargs={"init": "ce"}``, the ``fixed`` teacher's
trajectory (zero action: phi stays at its init), probe teaching steps (default 0 50 100 200 399),
seeds 0-2. Two envs per seed step in lock-step with zero actions: A, the default task
(``val_batch_size=100``), and B, made with ``val_batch_size=360`` (clipped by the env to the whole
split). Their students and training batches are the same (the env draws training and validation
batches from separate samplers; the script checks the parameters and the next K batches through
``state_dict()``). Both use ``lookahead="off"`` so that stepping costs no look-ahead;
``loss_gradient()`` at a probe gives what the ``loss_grad`` observation holds.

Public API only: ``unrolled_val_loss(phi, measure=...)`` on B with a ``measure`` that keeps the
whole split's logits (with graph), then one batched backward (``is_grads_batched``) gives every
g_i. A logit of an MLP does not depend on the other examples of its batch, so a subset's CE of the
whole-split logits is the CE that batch alone would give (not true of a BatchNorm student in train
mode: the script refuses such a task). The env A's own ``loss_grad`` at the probe is recovered
from the g_i of its validation batch (rows matched through ``state_dict()["next"]``), a check of
all of the above, printed as ``env check``.

    python benchmarks/hypergradient_signal.py --json runs/bench/hypergradient_signal.json \
        --png runs/bench/hypergradient_signal.png
"""

from __future__ import annotations

import argparse
import json
import math
import sys
import time
from pathlib import Path
from typing import Any, Sequence

REPO = Path(__file__).resolve().parents[1]
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))

import gymnasium as gym  # noqa: E402
import numpy as np  # noqa: E402
import torch  # noqa: E402
import torch.nn.functional as F  # noqa: E402

import l2t_env  # noqa: E402,F401  (registers L2T-v0)

DEFAULT_STEPS = (0, 50, 100, 200, 399)
#: batch sizes of the disjoint-pair measurement (two disjoint batches must fit in the split)
PAIR_SIZES = (10, 25, 50, 100, 150)


def make_env(task: str, val_batch_size: int | None, overrides: dict[str, Any]) -> gym.Env:
    kwargs: dict[str, Any] = dict(task=task, loss_kwargs={"init": "ce"}, lookahead="off", device="cpu", **overrides)
    if val_batch_size is not None:
        kwargs["val_batch_size"] = val_batch_size
    return gym.make("L2T-v0", **kwargs)


def per_example_hypergradients(env: gym.Env, chunk: int = 60) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """``(G [N, n_phi], x_val [N, ...], loss)``: d CE_i / d phi through the K-step look-ahead for every
    example of env's validation batch, at the current phi; the mean of G's rows is the batch's
    hypergradient."""
    core = env.unwrapped
    kept: dict[str, torch.Tensor] = {}

    def keep(logits: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        kept["z"], kept["y"] = logits, y
        return F.cross_entropy(logits, y)

    phi = core.phi.clone().requires_grad_(True)
    loss = core.unrolled_val_loss(phi, measure=keep)
    per_example = F.cross_entropy(kept["z"], kept["y"], reduction="none")
    n = per_example.numel()
    rows = []
    for start in range(0, n, chunk):
        stop = min(n, start + chunk)
        eye = torch.zeros(stop - start, n, dtype=per_example.dtype)
        eye[torch.arange(stop - start), torch.arange(start, stop)] = 1.0
        (g,) = torch.autograd.grad(per_example, phi, grad_outputs=eye, is_grads_batched=True, retain_graph=stop < n)
        rows.append(g.detach())
    x_val = core.state_dict()["next"]["x_val"]
    return torch.cat(rows), x_val, loss.detach()


def cos(a: torch.Tensor, b: torch.Tensor) -> float:
    return float(F.cosine_similarity(a.double(), b.double(), dim=-1).mean())


def pair_stats(G: torch.Tensor, m: int, pairs: int, gen: torch.Generator, groups: Sequence[tuple[str, slice]]) -> dict[str, Any]:
    """Disjoint batches of m drawn from the split: cosine of the two, of each with the whole split,
    and the norm ratio; per DLN layer too."""
    n = G.shape[0]
    full = G.mean(0)
    perms = torch.stack([torch.randperm(n, generator=gen)[: 2 * m] for _ in range(pairs)])
    a = G[perms[:, :m]].mean(1)
    b = G[perms[:, m:]].mean(1)
    out = {
        "cos_pair": cos(a, b),
        "cos_full": 0.5 * (cos(a, full.expand_as(a)) + cos(b, full.expand_as(b))),
        "norm_ratio": float(torch.cat([a, b]).norm(dim=1).mean() / full.norm()),
        "layers": {},
    }
    for name, s in groups:
        out["layers"][name] = {
            "cos_pair": cos(a[:, s], b[:, s]),
            "cos_full": cos(torch.cat([a, b])[:, s], full[s].expand(2 * pairs, -1)),
        }
    return out


def snr(G: torch.Tensor) -> dict[str, float]:
    """Per-example signal-to-noise from moments: s = |mu|^2 / tr(Sigma), |mu|^2 estimated as
    |mean|^2 - tr(Sigma)/N; and how much of tr(Sigma) the 5% largest deviations carry (heavy tails
    make the moment estimate a poor predictor of the cosine of two batches: see ``fit_snr``)."""
    n = G.shape[0]
    Gd = G.double()
    mean = Gd.mean(0)
    dev = (Gd - mean).square().sum(1)
    tr_sigma = float(dev.sum() / (n - 1))
    mu2 = float(mean.square().sum()) - tr_sigma / n
    top = max(1, round(0.05 * n))
    return {"s_moment": mu2 / tr_sigma, "n_val": n, "top5pct_share_of_var": float(dev.sort(descending=True).values[:top].sum() / dev.sum()),
            "max_over_median_dev": float(dev.max() / dev.median())}


def fit_snr(pairs: dict) -> float:
    """s fitted to the measured cosines of disjoint batches: under cos(m) = s*m / (s*m + 1),
    1/cos - 1 = 1/(s*m), a least-squares line through the origin in 1/m."""
    m = np.asarray([float(k) for k in pairs], dtype=float)
    c = np.asarray([pairs[k]["cos_pair"] for k in pairs], dtype=float)
    y, x = 1 / np.clip(c, 1e-6, None) - 1, 1 / m
    slope = float((x * y).sum() / (x * x).sum())
    return 1 / slope if slope > 0 else float("inf")


def predicted_cos(s: float, m: float) -> float:
    return 1.0 if math.isinf(s) else s * m / (s * m + 1)


def add_fit(row: dict[str, Any]) -> None:
    """The fitted s and what it predicts: m at cosine 0.5, two independent batches of 100 and of 360."""
    s = fit_snr(row["pairs"])
    row.update(s=s, m_half=1 / s, pred_cos_pair_100=predicted_cos(s, 100), pred_cos_pair_360=predicted_cos(s, 360),
               pred_cos_split_mu=math.sqrt(predicted_cos(s, row["n_val"])))


def env_check(G: torch.Tensor, x_full: torch.Tensor, env_a: gym.Env) -> dict[str, float]:
    """The default env's own loss_grad (batch of 100) against the g_i of the same rows."""
    core = env_a.unwrapped
    g_env = core.loss_gradient().detach()
    x_a = core.state_dict()["next"]["x_val"]
    flat_full, flat_a = x_full.flatten(1), x_a.flatten(1)
    idx = torch.cdist(flat_a.double(), flat_full.double()).argmin(1)
    rebuilt = G[idx].mean(0)
    full = G.mean(0)
    return {
        "rel_err_rebuilt": float((rebuilt - g_env).norm() / g_env.norm()),
        "cos_env_full": cos(g_env, full),
        "norm_ratio_env": float(g_env.norm() / full.norm()),
    }


def same_student(env_a: gym.Env, env_b: gym.Env) -> bool:
    sa, sb = env_a.unwrapped.state_dict(), env_b.unwrapped.state_dict()
    params = all(torch.equal(p, q) for p, q in zip(sa["student"]["params"], sb["student"]["params"]))
    return params and torch.equal(sa["next"]["x"], sb["next"]["x"]) and torch.equal(sa["phi"], sb["phi"])


def run(task: str, seeds: Sequence[int], steps: Sequence[int], pairs: int, overrides: dict[str, Any]) -> dict[str, Any]:
    results: list[dict[str, Any]] = []
    for seed in seeds:
        env_a, env_b = make_env(task, None, overrides), make_env(task, 360, overrides)
        env_a.reset(seed=seed)
        env_b.reset(seed=seed)
        if any(isinstance(m, torch.nn.modules.batchnorm._BatchNorm) for m in env_b.unwrapped.student.module.modules()):
            raise ValueError(f"task {task!r} has a BatchNorm student: a subset of whole-split logits is not that batch's forward")
        groups = [(name, s) for name, s in env_b.unwrapped.groups]
        zero = np.zeros(env_a.action_space.shape, dtype=np.float32)
        gen = torch.Generator().manual_seed(seed)
        t = 0
        for probe in sorted(steps):
            while t < probe:
                for env in (env_a, env_b):
                    *_, term, trunc, _ = env.step(zero)
                    if term or trunc:
                        raise ValueError(f"probe step {probe} is past the episode's end (teaching_steps); expected < {t + 1}")
                t += 1
            if not same_student(env_a, env_b):
                raise RuntimeError(f"seed {seed} step {t}: envs A and B hold different students or batches")
            t0 = time.perf_counter()
            G, x_full, _ = per_example_hypergradients(env_b)
            row: dict[str, Any] = {"seed": seed, "step": t, "n_val": G.shape[0], "full_norm": float(G.mean(0).norm())}
            row["pairs"] = {m: pair_stats(G, m, pairs, gen, groups) for m in PAIR_SIZES if 2 * m <= G.shape[0]}
            row.update(snr(G))
            add_fit(row)
            row.update(env_check(G, x_full, env_a))
            row["seconds"] = time.perf_counter() - t0
            results.append(row)
            p = row["pairs"][100]
            print(f"  seed {seed} step {t:3d}: cos(100,100') {p['cos_pair']:+.3f}  cos(100,full) {p['cos_full']:+.3f}  "
                  f"|g100|/|gfull| {p['norm_ratio']:.2f}  s {row['s']:.2e}  env check {row['rel_err_rebuilt']:.1e}  "
                  f"({row['seconds']:.1f}s)", flush=True)
    return {"task": task, "seeds": list(seeds), "steps": sorted(steps), "pairs": pairs, "overrides": overrides,
            "layers": [name for name, _ in groups], "rows": results}


def summarise(out: dict[str, Any]) -> list[dict[str, Any]]:
    """Per probe step: mean and [min, max] over seeds."""
    table = []
    for r in out["rows"]:
        r["pairs"] = {int(k): v for k, v in r["pairs"].items()}
        if "s_moment" not in r:  # a JSON of the first version, whose "s" was the moment estimate
            r["s_moment"] = r["s"]
        add_fit(r)  # (again: a JSON read back has string keys)
    for step in out["steps"]:
        rows = [r for r in out["rows"] if r["step"] == step]
        if not rows:
            continue
        col = lambda f: [f(r) for r in rows]  # noqa: E731
        entry = {"step": step}
        for key, f in {
            "cos_pair_100": lambda r: r["pairs"][100]["cos_pair"],
            "cos_full_100": lambda r: r["pairs"][100]["cos_full"],
            "norm_ratio_100": lambda r: r["pairs"][100]["norm_ratio"],
            "cos_env_full": lambda r: r["cos_env_full"],
            "m_half": lambda r: r["m_half"],
            "s_moment": lambda r: r["s_moment"],
            "top5pct_share_of_var": lambda r: r.get("top5pct_share_of_var", float("nan")),
            "pred_cos_pair_100": lambda r: r["pred_cos_pair_100"],
            "pred_cos_pair_360": lambda r: r["pred_cos_pair_360"],
            "pred_cos_split_mu": lambda r: r["pred_cos_split_mu"],
        }.items():
            v = col(f)
            entry[key] = {"mean": float(np.mean(v)), "median": float(np.median(v)), "min": float(np.min(v)), "max": float(np.max(v))}
        entry["layers"] = {
            name: {k: float(np.mean([r["pairs"][100]["layers"][name][k] for r in rows])) for k in ("cos_pair", "cos_full")}
            for name in out["layers"]
        }
        table.append(entry)
    return table


def print_table(table: list[dict[str, Any]], layers: Sequence[str]) -> None:
    fmt = lambda e: f"{e['mean']:+.3f} [{e['min']:+.2f},{e['max']:+.2f}]"  # noqa: E731
    print("\nbatch of 100 (mean over seeds [min, max]); m at cos .5 (median over seeds), pred: from s fitted to the disjoint-pair cosines of 10..150")
    print(f"{'step':>5} | {'cos(100,100)':>20} | {'cos(100,full)':>20} | {'|g100|/|gfull|':>18} | {'cos(env,full)':>20} "
          f"| {'m at cos .5':>8} | {'pred 100':>8} | {'pred 360':>8}")
    for e in table:
        print(f"{e['step']:>5} | {fmt(e['cos_pair_100']):>20} | {fmt(e['cos_full_100']):>20} | "
              f"{e['norm_ratio_100']['mean']:>6.2f} [{e['norm_ratio_100']['min']:.2f},{e['norm_ratio_100']['max']:.2f}] | "
              f"{fmt(e['cos_env_full']):>20} | {e['m_half']['median']:>8.0f} | {e['pred_cos_pair_100']['mean']:>+8.3f} | "
              f"{e['pred_cos_pair_360']['mean']:>+8.3f}")
    print("\nper-example SNR s (mean over seeds): fitted to the pair cosines / from moments; share of the per-example"
          " variance in the 5% largest deviations")
    for e in table:
        print(f"{e['step']:>5} | s fit {1 / e['m_half']['median']:.3f} (1/median m) | "
              f"s moment {e['s_moment']['median']:.3f} (median) | top 5% share {e['top5pct_share_of_var']['mean']:.2f}")
    print("\nper DLN layer, batch of 100: cos(100,100') / cos(100,full), mean over seeds")
    print(f"{'step':>5} | " + " | ".join(f"{name:>15}" for name in layers))
    for e in table:
        print(f"{e['step']:>5} | " + " | ".join(f"{e['layers'][n]['cos_pair']:+.2f} / {e['layers'][n]['cos_full']:+.2f}" for n in layers))


def plot(out: dict[str, Any], table: list[dict[str, Any]], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 2, figsize=(11, 4.2))
    colors = plt.cm.viridis(np.linspace(0, 0.9, len(out["steps"])))
    ms = np.geomspace(5, 5000, 80)
    for color, step in zip(colors, out["steps"]):
        rows = [r for r in out["rows"] if r["step"] == step]
        if not rows:
            continue
        sizes = sorted(rows[0]["pairs"], key=int)
        meas = [np.mean([r["pairs"][m]["cos_pair"] for r in rows]) for m in sizes]
        sizes = [int(m) for m in sizes]
        s = np.median([r["s"] for r in rows])
        axes[0].plot(sizes, meas, "o", color=color, label=f"step {step}")
        axes[0].plot(ms, s * ms / (s * ms + 1), "-", color=color, alpha=0.6)
    axes[0].axvline(100, color="grey", ls=":", lw=1)
    axes[0].axvline(rows[0]["n_val"], color="grey", ls="--", lw=1)
    axes[0].set_xscale("log")
    axes[0].set_xlabel("validation batch size m (dotted: 100, dashed: whole split)")
    axes[0].set_ylabel("cosine of two independent batches' hypergradients")
    axes[0].set_title("points: disjoint batches of the split; lines: s*m/(s*m+1), s fitted", fontsize=9)
    axes[0].legend(fontsize=8)
    width = 0.8 / max(1, len(out["layers"]))
    x = np.arange(len(table))
    for i, name in enumerate(out["layers"]):
        axes[1].bar(x + i * width, [e["layers"][name]["cos_full"] for e in table], width, label=name)
    axes[1].bar(x - width, [e["cos_full_100"]["mean"] for e in table], width, color="k", label="all of phi")
    axes[1].set_xticks(x + width * (len(out["layers"]) - 2) / 2, [str(e["step"]) for e in table])
    axes[1].set_xlabel("teaching step (fixed teacher)")
    axes[1].set_ylabel("cos(batch of 100, whole split)")
    axes[1].legend(fontsize=7)
    fig.suptitle(f"{out['task']}: loss_grad signal vs validation-batch noise (seeds {out['seeds']})", fontsize=10)
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110)
    plt.close(fig)


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--task", default="digits-mlp-noisy")
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--steps", type=int, nargs="+", default=list(DEFAULT_STEPS), help="probe teaching steps")
    parser.add_argument("--pairs", type=int, default=200, help="random disjoint batch pairs per size and probe")
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--quick", action="store_true", help="smoke run: seed 0, steps 0 and 5")
    parser.add_argument("--json", type=Path, default=None)
    parser.add_argument("--png", type=Path, default=None)
    parser.add_argument("--from-json", type=Path, default=None, metavar="PATH", help="re-summarise and plot a --json of an earlier run")
    args = parser.parse_args(argv)
    if args.from_json:
        out = json.loads(args.from_json.read_text())
        table = out["table"] = summarise(out)
        print_table(table, out["layers"])
        if args.json:
            args.json.write_text(json.dumps(out, indent=1, default=str))
        if args.png:
            plot(out, table, args.png)
        return 0
    torch.set_num_threads(args.threads)
    seeds, steps = (([0], [0, 5]) if args.quick else (args.seeds, args.steps))
    t0 = time.perf_counter()
    out = run(args.task, seeds, steps, args.pairs, {})
    table = summarise(out)
    out["table"] = table
    out["seconds"] = time.perf_counter() - t0
    out["torch"] = torch.__version__
    print_table(table, out["layers"])
    print(f"\n{out['seconds']:.0f} s, torch {torch.__version__}, {args.threads} thread(s)")
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps(out, indent=1, default=str))
    if args.png:
        plot(out, table, args.png)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
