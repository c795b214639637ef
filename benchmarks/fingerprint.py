"""A fingerprint of pinned runs, to check bit for bit that another machine computes what this one did.

Every teacher of the main job (``configs/bench/quick.yaml``: ce, gce, sce, fixed, random, hypergrad,
l2t-dln, l2t-dlf, l2t-dfm, and the SB3 agents ppo, a2c, sac, td3 with a tiny training budget) runs
short episodes of digits-mlp, the way ``l2t bench`` runs them (the seeds of a batching teacher as
one vector env, SB3 agents trained on a vector env of the training seeds, then frozen), plus one
conv student with BatchNorm (ResNet-8 on random CIFAR-shaped data, crop-flip augmentation). All
under pinned numerics (``l2t_bench.numerics``; this script pins itself before torch loads).

Per entry (task/teacher) and seed the fingerprint holds a hash of the final student parameters and
buffers, a hash of phi, every validation loss (the first before teaching, then one per teaching
step), a hash of the student and phi after every teaching step (so that the first differing step
can be named) and the final metrics; per trained SB3 entry a hash of the agent's policy; and the
``numerics`` record of the machine that wrote it.

    python benchmarks/fingerprint.py --write     # makes benchmarks/fingerprints/digits.json
    python benchmarks/fingerprint.py --check     # this machine against it: per entry "equal" or
                                                 # the first differing step; exit 0 only if all equal
    python benchmarks/fingerprint.py --check --only digits-mlp/ce --save runs/here.json
    python benchmarks/fingerprint.py --compare A.json B.json   # two saved fingerprints, no runs

75 s to 6 minutes on one pinned thread of our shared 2-core Intel Xeon VM, by its load (docs/reproducibility.md).
"""

from __future__ import annotations

import argparse
import hashlib
import json
import math
import sys
import tempfile
import time
from pathlib import Path
from typing import Any, Optional, Sequence

REPO = Path(__file__).resolve().parents[1]
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))

DEFAULT_FILE = REPO / "benchmarks" / "fingerprints" / "digits.json"
FORMAT = "l2t-fingerprint/1"

#: what the fingerprint runs; stored in the file, and ``--check`` reruns exactly what the file says
SPEC: dict[str, Any] = {
    "seeds": [0, 1],
    "digits": {
        "task": "digits-mlp",
        "overrides": {"teaching_steps": 8},
        "train_seeds": [1000, 1001],
        "train_timesteps": 40,
        # quick.yaml's SB3 entries with update sizes shrunk to the tiny budget (several updates each)
        "sb3_kwargs": {
            "ppo": {"vector_env": True, "n_envs": 2, "n_steps": 10, "batch_size": 10, "n_epochs": 2},
            "a2c": {"vector_env": True, "n_envs": 2, "n_steps": 2},
            "sac": {"vector_env": True, "n_envs": 2, "gradient_steps": -1, "learning_starts": 10, "batch_size": 16},
            "td3": {"vector_env": True, "n_envs": 2, "gradient_steps": -1, "learning_starts": 10, "batch_size": 16},
        },
    },
    "conv": {
        "task": "random-cifar10-resnet8",
        "overrides": {"teaching_steps": 2, "unroll_steps": 5, "val_batch_size": 50, "reward_val_size": 50,
                      "dataset_kwargs": {"seed": 0, "n_pool": 400, "n_test": 100}},
        "teachers": ["fixed"],
        "seeds": [0],
    },
}


def quick_teachers(sb3_kwargs: dict) -> list[Any]:
    """The teacher entries of the main job (``configs/bench/quick.yaml``), the SB3 agents' kwargs
    replaced by ``sb3_kwargs`` (the tiny budget); resolved when the fingerprint is written, so that
    ``--check`` reruns what the file says even after quick.yaml changes."""
    import yaml

    teachers = []
    for entry in yaml.safe_load((REPO / "configs" / "bench" / "quick.yaml").read_text())["teachers"]:
        name = entry if isinstance(entry, str) else entry["name"]
        if name in sb3_kwargs:
            entry = {**(entry if isinstance(entry, dict) else {"name": name}), "kwargs": sb3_kwargs[name]}
        teachers.append(entry)
    return teachers


def bench_configs(spec: dict) -> list[dict]:
    """The bench configs (dicts) the fingerprint runs: digits with every quick teacher, and the conv entry."""
    d, c = spec["digits"], spec["conv"]
    common = {"device": "cpu", "seeds": spec["seeds"]}
    return [
        {**common, "name": "fingerprint-digits", "tasks": [{"name": d["task"], "overrides": d["overrides"]}], "teachers": d["teachers"],
         "train_seeds": d["train_seeds"], "train_timesteps": d["train_timesteps"]},
        {**common, "name": "fingerprint-conv", "tasks": [{"name": c["task"], "overrides": c["overrides"]}], "teachers": c["teachers"],
         "seeds": c["seeds"]},
    ]


# ------------------------------------------------------------------------------- running
def digest(tensors: Sequence[Any]) -> str:
    """sha256 (first 16 hex digits) of the tensors' bytes, shapes and dtypes, in order."""
    h = hashlib.sha256()
    for t in tensors:
        t = t.detach().cpu().contiguous()
        h.update(f"{tuple(t.shape)}{t.dtype}".encode())
        h.update(t.reshape(-1).numpy().tobytes())
    return h.hexdigest()[:16]


def student_states(env: Any) -> list[tuple[list[Any], Any]]:
    """(parameters + buffers, phi) of every student of a single env or of a native vector env."""
    core = env.unwrapped
    inner = getattr(core, "_core", None)
    if inner is None:  # a single L2TEnv
        return [([*core.params, *core.buffers], core.phi)]
    if hasattr(inner, "envs"):  # batching="loop": N single envs
        return [([*e.params, *e.buffers], e.phi) for e in inner.envs]
    n = core.num_envs  # batching="vmap": stacked [N, ...] tensors
    return [([p[i] for p in inner.params] + [b[i] for b in inner.buffers], inner.phi[i]) for i in range(n)]


def agent_digest(teacher: Any) -> Optional[str]:
    """A hash of a trained SB3 agent's policy (None for other teachers)."""
    model = getattr(teacher, "model", None)
    if model is None:
        return None
    state = model.policy.state_dict()
    return digest([state[k] for k in sorted(state)])


def state_digest(state: tuple[list[Any], Any]) -> str:
    """One hash of a student's parameters, buffers and phi (the per-step trace)."""
    params, phi = state
    return digest([*params, phi])


def entry_of(episode: Any, state: tuple[list[Any], Any], trace: list[str]) -> dict:
    params, phi = state
    return {
        "params": digest(params),
        "phi": digest([phi]),
        "val_loss": [float(v) for v in episode.curves["val_loss"]],
        "states": trace,
        "final": {k: float(v) for k, v in sorted(episode.final.items())},
    }


def run_all(spec: dict, only: Optional[set[str]] = None, log: Any = print) -> dict:
    """Run every entry (or those in ``only``) under this process's numerics: ``{entry: {...}}``."""
    import l2t_env  # noqa: F401  (registers L2T-v0)
    from l2t_agents import make_env, make_vector_env, run_episode, run_episodes
    from l2t_bench.config import load_bench_config, plan_runs
    from l2t_bench.runner import batch_groups, load_teacher, prepare_agent

    entries: dict[str, dict] = {}
    for raw in bench_configs(spec):
        cfg = load_bench_config(raw)
        for group in batch_groups(cfg, plan_runs(cfg)):
            run = group[0]
            name = f"{run.task.label}/{run.teacher.label}"
            if only is not None and name not in only:
                continue
            start = time.perf_counter()
            entry: dict[str, Any] = entries.setdefault(name, {"batched": cfg.batches(run.teacher), "seeds": {}})
            with tempfile.TemporaryDirectory(prefix="l2t-fingerprint-") as tmp:
                agent = None
                if run.teacher.trainable:
                    agent = Path(tmp) / "agent"
                    prepare_agent(cfg, run, agent)
                teacher, _ = load_teacher(run, agent)
                entry["agent"] = agent_digest(teacher)
                kwargs = {"device": cfg.device, **cfg.env_kwargs_for(run.teacher), **run.task.overrides}
                if entry["batched"]:
                    env = make_vector_env(teacher, len(group), run.task.name, **kwargs)
                    traces: list[list[str]] = [[] for _ in group]

                    def trace_all(t: int, info: Any) -> None:
                        for trace, state in zip(traces, student_states(env)):
                            trace.append(state_digest(state))

                    episodes = run_episodes(env, teacher, [r.seed for r in group], on_step=trace_all)
                    for r, episode, state, trace in zip(group, episodes, student_states(env), traces):
                        entry["seeds"][str(r.seed)] = entry_of(episode, state, trace[: episode.steps])
                    env.close()
                else:
                    for r in group:
                        if r is not run:
                            teacher, _ = load_teacher(r, agent)
                        env = make_env(teacher, r.task.name, **kwargs)
                        trace: list[str] = []
                        episode = run_episode(env, teacher, r.seed, on_step=lambda t, info: trace.append(state_digest(student_states(env)[0])))
                        entry["seeds"][str(r.seed)] = entry_of(episode, student_states(env)[0], trace)
                        env.close()
            log(f"  {name} seed(s) {[r.seed for r in group]}: {time.perf_counter() - start:.1f} s")
    return entries


# ------------------------------------------------------------------------------- comparing
def compare_entry(ref: dict, new: dict) -> Optional[str]:
    """None when the two runs of an entry are bit-equal, else what differs first, in words."""
    if ref.get("agent") != new.get("agent"):
        agent = "the trained agent's policy differs; "
    else:
        agent = ""
    first: Optional[int] = None
    worst, where = 0.0, []
    for seed, a in ref["seeds"].items():
        b = new["seeds"].get(seed)
        if b is None:
            return f"seed {seed} missing from this machine's run"
        va, vb = a["val_loss"], b["val_loss"]
        # val_loss[t] is measured after teaching step t (t = 0: before teaching); states[t - 1] after step t
        steps = [t for t, (x, y) in enumerate(zip(va, vb)) if x != y and not (math.isnan(x) and math.isnan(y))]
        steps += [t + 1 for t, (x, y) in enumerate(zip(a["states"], b["states"])) if x != y]
        if len(va) != len(vb) or len(a["states"]) != len(b["states"]):
            steps.append(min(len(va), len(vb), len(a["states"]) + 1, len(b["states"]) + 1))
        steps.sort()
        if steps:
            first = steps[0] if first is None else min(first, steps[0])
            finite = [abs(x - y) for x, y in zip(va, vb) if math.isfinite(x) and math.isfinite(y)]
            worst = max(worst, max(finite, default=0.0))
        if a["params"] != b["params"] or a["phi"] != b["phi"] or steps or a.get("final") != b.get("final"):
            where.append(seed)
    if first is not None:
        return f"{agent}first differing step {first} (seeds {', '.join(where)}; max |d val loss| {worst:.2e})"
    if where:
        return f"{agent}val losses and per-step states equal, final parameters, phi or metrics differ (seeds {', '.join(where)})"
    return agent.rstrip("; ") or None


def compare(ref: dict, new: dict, only: Optional[set[str]] = None, out: Any = print) -> bool:
    """Print per entry of ``ref`` (or of ``only``) "equal" or the first difference; True when all are equal."""
    if ref.get("spec") != new.get("spec"):
        out("the two fingerprints ran different specs; nothing is comparable")
        return False
    ok = True
    names = [n for n in ref["entries"] if only is None or n in only]
    width = max((len(n) for n in names), default=0)
    for name in names:
        if name not in new["entries"]:
            out(f"{name:{width}s}  not run here")
            ok = False
            continue
        diff = compare_entry(ref["entries"][name], new["entries"][name])
        out(f"{name:{width}s}  {'equal' if diff is None else 'DIFFERS: ' + diff}")
        ok &= diff is None
    rn, nn = ref.get("numerics", {}), new.get("numerics", {})
    for key in ("torch", "numpy", "python", "libc", "machine", "pinned"):
        if rn.get(key) != nn.get(key):
            out(f"note: {key} differs ({rn.get(key)!r} in the reference, {nn.get(key)!r} here): pinned numerics do not promise equal bits then")
    out(f"reference: {rn.get('cpu')}; here: {nn.get('cpu')}")
    return ok


def load(path: Path) -> dict:
    data = json.loads(Path(path).read_text())
    if data.get("format") != FORMAT:
        raise SystemExit(f"{path} is not a fingerprint (format {FORMAT!r})")
    return data


def main(argv: Optional[list[str]] = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    mode = parser.add_mutually_exclusive_group(required=True)
    mode.add_argument("--write", action="store_true", help="run every entry pinned and write the fingerprint file")
    mode.add_argument("--check", action="store_true", help="run pinned and compare with the fingerprint file")
    mode.add_argument("--compare", nargs=2, type=Path, metavar=("REFERENCE.json", "OTHER.json"), help="compare two saved fingerprints (no runs)")
    parser.add_argument("--file", type=Path, default=DEFAULT_FILE, help=f"the fingerprint (default {DEFAULT_FILE.relative_to(REPO)})")
    parser.add_argument("--only", nargs="+", default=None, metavar="TASK/TEACHER", help="only these entries (e.g. digits-mlp/ce)")
    parser.add_argument("--save", type=Path, default=None, help="--check: also write this machine's fingerprint here")
    parser.add_argument("--unpinned", action="store_true",
                        help="--check: run under torch's own numerics (one thread) instead of pinned ones, to see what the pins remove")
    args = parser.parse_args(argv)
    only = set(args.only) if args.only else None

    if args.compare:
        return 0 if compare(load(args.compare[0]), load(args.compare[1]), only) else 1

    from l2t_bench.numerics import numerics_record, pin_numerics  # imports no torch

    if args.unpinned:
        if args.write:
            raise SystemExit("--unpinned is for --check only: the committed fingerprint is of pinned runs")
        import torch

        torch.set_num_threads(1)
        numerics = numerics_record()
    else:
        numerics = pin_numerics()  # before torch loads (or re-executes this script pinned)
    ref = load(args.file) if args.check else None
    spec = ref["spec"] if ref else {**SPEC, "digits": {**SPEC["digits"], "teachers": quick_teachers(SPEC["digits"]["sb3_kwargs"])}}
    if ref and only:
        unknown = sorted(only - set(ref["entries"]))
        if unknown:
            raise SystemExit(f"--only {unknown}: not in {args.file}; valid: {sorted(ref['entries'])}")
    start = time.perf_counter()
    print(f"running {'every entry' if only is None else sorted(only)} {'unpinned' if args.unpinned else 'pinned'} on {numerics['cpu']} (torch {numerics['torch']})", flush=True)
    mine = {"format": FORMAT, "spec": spec, "numerics": numerics, "entries": run_all(spec, only)}
    print(f"ran in {time.perf_counter() - start:.0f} s")
    if args.write:
        args.file.parent.mkdir(parents=True, exist_ok=True)
        args.file.write_text(json.dumps(mine, indent=1) + "\n")
        print(f"wrote {args.file}")
        return 0
    if args.save:
        args.save.parent.mkdir(parents=True, exist_ok=True)
        args.save.write_text(json.dumps(mine, indent=1) + "\n")
    return 0 if compare(ref, mine, only) else 1


if __name__ == "__main__":
    sys.exit(main())
