"""Which teachers' results survive a change of CPU numerics bit for bit, and by how much others move.

Two machines differ in the kernels torch, MKL, oneDNN and numpy pick for their CPU and in the
thread count. This script emulates those differences on one machine: it runs the same short
episodes (each teacher, each seed) in fresh subprocesses under different settings (the knobs of
``l2t_bench.numerics``: ``ATEN_CPU_CAPABILITY``, ``MKL_CBWR``, threads, numpy's dispatch, and the
pinned mode) and compares every run with the first setting: bit-equal (final student parameters,
phi, every val-loss value) or not, and if not, the first teaching step that differs and the largest
difference of the val-loss curve and of the final test accuracy.

    python benchmarks/cross_machine.py --json runs/bench/cross_machine.json

Default: teachers ce fixed random hypergrad l2t-dln ppo, seed 0, 30 teaching steps of digits-mlp
(K = 15), PPO trained for 40 steps first; about 10 minutes on a shared 2-core CPU. A cell reads
"=" (bit-equal) or "@t dv da": the first teaching step t whose val loss differs ("end": only the
final parameters do), the largest |difference| of the val-loss curve and of the final test accuracy.

Across two real machines: run the same command with ``--json`` on each and compare the files:

    python benchmarks/cross_machine.py --only pinned --json runs/A.json      # on machine A, then B
    python benchmarks/cross_machine.py --compare runs/A.json runs/B.json
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))

from l2t_bench.numerics import PIN_FLAG, PINNED_ENV, pinned_environment  # noqa: E402  (imports no torch)

NUMPY_BASELINE_ONLY = {"NPY_DISABLE_CPU_FEATURES": PINNED_ENV["NPY_DISABLE_CPU_FEATURES"]}
#: the variables a setting may change; each subprocess starts with these removed, then the setting's own
KNOBS = (*PINNED_ENV, PIN_FLAG)


def cpu_flags() -> set[str]:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("flags"):
                return set(line.split(":", 1)[1].split())
    except OSError:
        pass
    return set()


def settings() -> dict[str, dict[str, str]]:
    """name -> environment: torch's defaults on one thread first (the reference), one knob at a time, pinned.

    The reference runs one thread: on a shared 2-core host two OpenMP threads spin-wait on each
    other and run several times slower; the "2 threads" setting shows what the thread count changes.
    """
    flags = cpu_flags()
    one = {"OMP_NUM_THREADS": "1"}
    out = {
        "torch defaults, 1 thread": one,
        "2 threads": {"OMP_NUM_THREADS": "2"},
        "ATen default kernels": {**one, "ATEN_CPU_CAPABILITY": "default"},
    }
    if "avx512f" in flags and "avx512bw" in flags:
        out["ATen avx2 kernels"] = {**one, "ATEN_CPU_CAPABILITY": "avx2"}
    out["MKL_CBWR=AVX (older CPU path)"] = {**one, "MKL_CBWR": "AVX"}
    out["MKL_CBWR=COMPATIBLE"] = {**one, "MKL_CBWR": "COMPATIBLE"}
    out["numpy baseline SIMD"] = {**one, **NUMPY_BASELINE_ONLY}
    out["pinned"] = pinned_environment()
    return out


# ------------------------------------------------------------------------------- worker side
def _digest(tensors: Any) -> str:
    h = hashlib.sha256()
    for t in tensors:
        h.update(t.detach().cpu().contiguous().numpy().tobytes())
    return h.hexdigest()[:16]


def worker(args: argparse.Namespace) -> None:
    """Run every (teacher, seed) episode in this process and print one JSON line."""
    from l2t_bench.numerics import apply_pins_if_flagged, numerics_record

    apply_pins_if_flagged()
    import l2t_env  # noqa: F401
    from l2t_agents import make_env, make_teacher, run_episode

    task = dict(teaching_steps=args.steps)
    runs = {}
    for name in args.teachers:
        kwargs = {"n_steps": 20, "batch_size": 10, "n_epochs": 2} if name == "ppo" else {}
        teacher = make_teacher(name, **kwargs)
        start = time.perf_counter()
        if hasattr(teacher, "train"):
            teacher.train("digits-mlp", [1000, 1001], total_timesteps=args.train_steps, env_kwargs={**task, "device": "cpu"})
            teacher.learning = False
        train_time = time.perf_counter() - start
        for seed in args.seeds:
            env = make_env(teacher, "digits-mlp", device="cpu", **task)
            episode = run_episode(env, teacher, seed)
            u = env.unwrapped
            runs[f"{name}/{seed}"] = {
                "test_acc": episode.final["test_acc"],
                "val_loss": episode.curves["val_loss"],
                "params": _digest(u.params + u.buffers),
                "phi": _digest([u.phi]),
                "wall_time": episode.wall_time + (train_time if seed == args.seeds[0] else 0.0),
            }
            env.close()
    print(json.dumps({"numerics": numerics_record(), "runs": runs}))


# ------------------------------------------------------------------------------- driver side
def run_setting(env_vars: dict[str, str], args: argparse.Namespace) -> dict:
    env = {k: v for k, v in os.environ.items() if k not in KNOBS}
    env.update(env_vars)
    cmd = [sys.executable, __file__, "--worker", "--teachers", *args.teachers, "--seeds", *map(str, args.seeds),
           "--steps", str(args.steps), "--train-steps", str(args.train_steps)]
    done = subprocess.run(cmd, env=env, capture_output=True, text=True, check=False)
    if done.returncode != 0:
        raise SystemExit(f"worker failed ({env_vars}):\n{done.stderr[-3000:]}")
    return json.loads(done.stdout.strip().splitlines()[-1])


def compare(ref: dict, other: dict, teacher: str, seeds: list[int]) -> dict:
    """Bit-equality and size of the differences of one teacher's runs against the reference's."""
    first, d_val, d_acc, equal = None, 0.0, 0.0, True
    for seed in seeds:
        a, b = ref["runs"][f"{teacher}/{seed}"], other["runs"][f"{teacher}/{seed}"]
        same = a["params"] == b["params"] and a["phi"] == b["phi"] and a["val_loss"] == b["val_loss"]
        equal &= same
        if not same:
            steps = [t for t, (x, y) in enumerate(zip(a["val_loss"], b["val_loss"])) if x != y]
            if steps:
                first = steps[0] if first is None else min(first, steps[0])
            d_val = max(d_val, max(abs(x - y) for x, y in zip(a["val_loss"], b["val_loss"])))
            d_acc = max(d_acc, abs(a["test_acc"] - b["test_acc"]))
    return {"bit_equal": equal, "first_step": first, "max_d_val_loss": d_val, "max_d_test_acc": d_acc}


def report(results: dict[str, dict], teachers: list[str], seeds: list[int], steps: int) -> dict:
    """Print every setting against the first one; return the comparison table."""
    names = list(results)
    ref = results[names[0]]
    print(f"\nagainst '{names[0]}' on {ref['numerics']['cpu']} (torch {ref['numerics']['torch']}); "
          f"{len(seeds)} seeds x {steps} teaching steps; '=' bit-equal, else first differing step / "
          "max |d val_loss| / max |d test_acc|")
    table: dict[str, dict] = {}
    width = max(len(n) for n in names)
    print(f"{'setting':{width}s}  " + "  ".join(f"{t:>24s}" for t in teachers))
    for name in names[1:]:
        cells = []
        for teacher in teachers:
            c = compare(ref, results[name], teacher, seeds)
            table.setdefault(name, {})[teacher] = c
            step = "end" if c["first_step"] is None else c["first_step"]
            cells.append("=" if c["bit_equal"] else f"@{step} {c['max_d_val_loss']:.1e} {c['max_d_test_acc']:.3f}")
        print(f"{name:{width}s}  " + "  ".join(f"{cell:>24s}" for cell in cells))
    print("\nmean final test accuracy over the seeds:")
    for name, res in results.items():
        means = {t: sum(res["runs"][f"{t}/{s}"]["test_acc"] for s in seeds) / len(seeds) for t in teachers}
        print(f"{name:{width}s}  " + "  ".join(f"{t} {m:.6f}" for t, m in means.items()))
    return table


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--teachers", nargs="+", default=["ce", "fixed", "random", "hypergrad", "l2t-dln", "ppo"])
    parser.add_argument("--seeds", nargs="+", type=int, default=[0])
    parser.add_argument("--steps", type=int, default=30, help="teaching steps per episode (digits-mlp, K = 15)")
    parser.add_argument("--train-steps", type=int, default=40, help="training env steps of the SB3 teachers")
    parser.add_argument("--only", nargs="+", default=None, metavar="SETTING", help="run only these settings (names as printed)")
    parser.add_argument("--json", type=Path, default=None)
    parser.add_argument("--compare", nargs=2, type=Path, default=None, metavar=("A.json", "B.json"),
                        help="no runs: compare the settings two --json files (two machines) have in common")
    parser.add_argument("--worker", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.worker:
        return worker(args)
    if args.compare:
        a, b = (json.loads(p.read_text()) for p in args.compare)
        run_args = a["args"]
        for name in [n for n in a["results"] if n in b["results"]]:
            pair = {f"{tag} {name}": d["results"][name] for tag, d in (("A", a), ("B", b))}
            for label, res in pair.items():
                n = res["numerics"]
                print(f"{label}: {n['cpu']}, torch {n['torch']}, {n['cpu_capability']}, {n['threads']} thread(s)")
            report(pair, run_args["teachers"], run_args["seeds"], run_args["steps"])
        return None

    plan = settings()
    if args.only:
        plan = {k: v for k, v in plan.items() if k in args.only or k == next(iter(plan))}
    results = {}
    for name, env_vars in plan.items():
        start = time.perf_counter()
        results[name] = run_setting(env_vars, args)
        n = results[name]["numerics"]
        print(f"{name:32s} {time.perf_counter() - start:6.1f} s  capability {n['cpu_capability']}, threads {n['threads']}, "
              f"pinned {n['pinned']}", flush=True)
    table = report(results, args.teachers, args.seeds, args.steps)
    times = {name: {t: sum(r["wall_time"] for k, r in res["runs"].items() if k.startswith(t + "/")) for t in args.teachers}
             for name, res in results.items()}
    print("\nwall time per teacher (s, all seeds): " + "; ".join(
        f"{name}: " + " ".join(f"{t} {times[name][t]:.1f}" for t in args.teachers) for name in (next(iter(times)), "pinned") if name in times))
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        payload = {"args": {k: v for k, v in vars(args).items() if k not in ("json", "compare")}, "settings": plan,
                   "comparison": table, "times": times, "results": results}
        args.json.write_text(json.dumps(payload, indent=1, default=str))


if __name__ == "__main__":
    main()
