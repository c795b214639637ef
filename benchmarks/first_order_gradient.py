"""How good is the first-order teacher gradient? Exact dL'_val/du against -action_scale * g.

The faithful L2T-DLN teacher differentiates the validation loss after a second K-step unroll under
phi' = phi - action_scale * u (stage 3); ``first_order=True`` replaces that by stage 1's
hypergradient g = dL_val/dphi at phi: dL'/du ~= -action_scale * g, exact to first order in
action_scale (phi' - phi = -action_scale * u, so the error should shrink linearly with the scale).

Per task and seed (``--repeats`` seeds: 0, 1, ...), an ``L2TDLNTeacher()`` teaches online in the
faithful mode (``act`` + ``step``: the student, phi, the LSTM and its memory evolve as in a real run),
and before each of ``--iterations`` measured iterations (after ``--warmup`` unmeasured ones):

- u: the LSTM's output on pre(g) from the teacher's current memory (the u that ``act`` then
  computes; checked bit for bit on CPU),
- exact: ``u_leaf = u.detach().requires_grad_(True)``;
  ``L = env.unwrapped.unrolled_val_loss(env.unwrapped.phi_after(u_leaf))``; ``grad(L, u_leaf)``,
- first-order: ``-env.unwrapped.action_scale * env.unwrapped.loss_grad``,
- their cosine similarity and relative error ``||fo - exact|| / ||exact||``, and the same for the
  gradients they induce on the LSTM's parameters psi (``torch.autograd.grad(u, psi,
  grad_outputs=...)``, retain_graph between the two).

Then a sweep of the env's ``action_scale`` (fresh env and teacher per scale, the same seeds and
iterations): the relative error should fall roughly linearly with the scale. Below ~1e-4 it falls
more slowly, in float64 too (``--dtype float64``): the student's ReLUs and the DLN's LeakyReLUs make
the hypergradient piecewise smooth, and a move of phi that flips a few activation patterns makes it
jump; with fewer flips as the scale shrinks the error is linear only on average (at one state on
digits-mlp, float64: 1.4e-2, 1.3e-3, 6.3e-4, 1.0e-4, 1.2e-7 at scales 1e-3 ... 1e-7).

Full run:  python benchmarks/first_order_gradient.py --json runs/bench/first_order_gradient.json
Smoke run: python benchmarks/first_order_gradient.py --quick --threads 1
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

import _common as C  # noqa: E402
import torch  # noqa: E402

from l2t_agents.evaluation import make_env  # noqa: E402
from l2t_agents.l2t_dln import L2TDLNTeacher, preprocess_gradient  # noqa: E402

DEFAULT_TASKS = ("digits-mlp",)
DEFAULT_SCALES = (1e-2, 1e-3, 1e-4, 1e-5)


def compare(a: torch.Tensor, b: torch.Tensor) -> tuple[float, float]:
    """(cosine similarity, ||a - b|| / ||b||), in float64."""
    a, b = a.double().flatten(), b.double().flatten()
    cos = torch.nn.functional.cosine_similarity(a, b, dim=0).item()
    rel = ((a - b).norm() / b.norm()).item()
    return cos, rel


def measure(env, teacher: L2TDLNTeacher) -> dict:
    """Exact vs first-order teacher gradient at the env's and the teacher's current state."""
    core = env.unwrapped
    g = core.loss_grad
    x = preprocess_gradient(g, teacher.config.preprocess_p)
    u, _ = teacher.lstm(x, teacher.state)  # the state is not advanced: act() recomputes this u
    u_leaf = u.detach().requires_grad_(True)
    val_loss = core.unrolled_val_loss(core.phi_after(u_leaf))
    (exact,) = torch.autograd.grad(val_loss, u_leaf)
    first_order = -core.action_scale * g
    psi = list(teacher.lstm.parameters())
    g_psi_exact = torch.autograd.grad(u, psi, grad_outputs=exact, retain_graph=True)
    g_psi_fo = torch.autograd.grad(u, psi, grad_outputs=first_order)
    cos_u, rel_u = compare(first_order, exact)
    cos_psi, rel_psi = compare(torch.cat([t.flatten() for t in g_psi_fo]), torch.cat([t.flatten() for t in g_psi_exact]))
    return {"cos_u": cos_u, "rel_u": rel_u, "cos_psi": cos_psi, "rel_psi": rel_psi,
            "norm_exact_u": exact.double().norm().item(), "norm_fo_u": first_order.double().norm().item(),
            "mean_abs_u": u.detach().abs().mean().item(), "action_scale": core.action_scale, "val_loss_after": val_loss.item(), "u": u.detach()}


def run_seed(task_name: str, seed: int, args: argparse.Namespace, action_scale=None) -> list[dict]:
    task, extra = C.task_spec(task_name)
    env_kwargs = {**extra, **C.NO_TRUNCATION, **args.task_overrides, "device": args.device, "dtype": args.dtype}
    if action_scale is not None:
        env_kwargs["action_scale"] = action_scale
    teacher = L2TDLNTeacher(seed=args.teacher_seed)
    env = make_env(teacher, task, **env_kwargs)
    obs, _ = env.reset(seed=seed)
    teacher.reset(env)
    records = []
    for it in range(args.warmup + args.iterations):
        rec = None
        if it >= args.warmup:
            rec = measure(env, teacher)
        u = teacher.act(obs)  # faithful: stage 2 + stage 3 + Adam on psi
        if rec is not None:
            rec["u_matches_act"] = bool(torch.equal(rec.pop("u"), u))
            rec.update(seed=seed, iteration=it)
            records.append(rec)
        obs, reward, terminated, truncated, info = env.step(u)
        teacher.observe(obs, reward, terminated, truncated, info)
        if terminated or truncated:
            break
    return records


def main(argv=None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0], formatter_class=argparse.RawDescriptionHelpFormatter,
                                     epilog=__doc__.split("\n\n", 1)[1])
    C.add_common_args(parser, DEFAULT_TASKS, repeats=3, warmup=0)
    parser.add_argument("--iterations", type=int, default=None, help="measured teacher iterations per seed (default 5; --quick 3)")
    parser.add_argument("--scales", type=float, nargs="+", default=list(DEFAULT_SCALES), help="action_scale sweep")
    parser.add_argument("--dtype", default="float32", choices=("float32", "float64"), help="the env's dtype")
    parser.add_argument("--teacher-seed", type=int, default=0, help="seed of the LSTM's initial weights")
    args = parser.parse_args(argv)
    # here --repeats is the number of episode seeds (0..repeats-1; --seed shifts them) and --warmup the
    # unmeasured teacher iterations before the measured ones; --quick keeps K (digits is cheap)
    if args.warmup is None:
        args.warmup = 0
    C.finish_common_args(args, DEFAULT_TASKS, repeats=3, warmup=0, quick_overrides={})
    if args.iterations is None:
        args.iterations = 3 if args.quick else 5
    info = C.print_header("First-order vs exact L2T-DLN teacher gradient", args)
    seeds = list(range(args.seed, args.seed + args.repeats))
    print(f"seeds {seeds}, {args.iterations} measured iteration(s) each after {args.warmup} unmeasured | "
          f"dtype {args.dtype} | teacher learning online, faithful mode")
    results = []
    for task_name in args.tasks:
        records = [r for s in seeds for r in run_seed(task_name, s, args)]
        print(f"\n-- {task_name}: exact dL'/du (through the stage-3 unroll) vs first-order -action_scale * g, "
              f"action_scale {records[0]['action_scale']:g} (the env's default)")
        rows = [[r["seed"], r["iteration"], f"{r['cos_u']:.6f}", f"{r['rel_u']:.2e}", f"{r['cos_psi']:.6f}",
                 f"{r['rel_psi']:.2e}", f"{r['norm_exact_u']:.3e}", f"{r['mean_abs_u']:.3f}", r["u_matches_act"]]
                for r in records]
        C.print_table(["seed", "iter", "cos(u-grad)", "rel err(u-grad)", "cos(psi-grad)", "rel err(psi-grad)",
                       "||exact dL/du||", "mean|u|", "u == act's u"], rows)
        print(f"summary: cos(u-grad) min {min(r['cos_u'] for r in records):.6f}, rel err median "
              f"{C.median([r['rel_u'] for r in records]):.2e} max {max(r['rel_u'] for r in records):.2e}; "
              f"cos(psi-grad) min {min(r['cos_psi'] for r in records):.6f}, rel err median "
              f"{C.median([r['rel_psi'] for r in records]):.2e} max {max(r['rel_psi'] for r in records):.2e}")
        sweep = []
        for s in args.scales:
            recs = [r for seed in seeds for r in run_seed(task_name, seed, args, action_scale=s)]
            sweep.append({"action_scale": s, "records": recs,
                          "rel_u_median": C.median([r["rel_u"] for r in recs]),
                          "rel_u_max": max(r["rel_u"] for r in recs),
                          "cos_u_min": min(r["cos_u"] for r in recs),
                          "rel_psi_median": C.median([r["rel_psi"] for r in recs]),
                          "cos_psi_min": min(r["cos_psi"] for r in recs)})
        print(f"\naction_scale sweep ({len(seeds)} seed(s) x {args.iterations} iteration(s) each, fresh env and teacher "
              "per scale): the error should shrink ~linearly (x0.1 per row); activation-pattern flips "
              "(ReLU student, LeakyReLU DLN) make it shrink more slowly at the smallest scales")
        rows = []
        prev = None
        for e in sweep:
            rows.append([f"{e['action_scale']:.0e}", f"{e['rel_u_median']:.2e}", f"{e['rel_u_max']:.2e}",
                         f"{e['cos_u_min']:.8f}", f"{e['rel_psi_median']:.2e}", f"{e['cos_psi_min']:.8f}",
                         f"{e['rel_u_median'] / e['action_scale']:.3g}",
                         "-" if prev is None else f"{e['rel_u_median'] / prev:.3g}"])
            prev = e["rel_u_median"]
        C.print_table(["action_scale", "rel err u median", "rel err u max", "cos u min", "rel err psi median",
                       "cos psi min", "rel err / scale", "x previous row"], rows)
        results.append({"task": task_name, "records": records, "sweep": sweep, "default_action_scale": records[0]["action_scale"]})
    payload = {"benchmark": "first_order_gradient", "environment": info,
               "args": {k: v for k, v in vars(args).items() if k != "json"}, "seeds": seeds, "results": results}
    C.write_json(args.json, payload)
    return payload


if __name__ == "__main__":
    main()
