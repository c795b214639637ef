"""Issue #5's evidence: the cost of one L2T-DLN teacher iteration against plain training.

Per student task, medians over repeats after a warm-up, all variants interleaved in one process
(each repeat runs every variant once, the order rotated from repeat to repeat):

- ``plain loop``: K cross-entropy SGD steps on a ``copy.deepcopy`` of the env's student module
  (``torch.optim.SGD(lr=task lr)``, ``zero_grad / backward / step``), on the batches of the
  faithful env's step of the same repeat (every env has the same seed, hence the same batches).
- ``faithful``: the real ``teacher.act(obs)`` + ``env.step(u)`` (+ ``teacher.observe``) of an
  ``L2TDLNTeacher()`` on ``l2t_agents.evaluation.make_env``. In steady state: stage 2 + stage 3 (a
  second unroll under phi', its backward, the LSTM backward and Adam step) + the commit (which
  reuses the stage-3 unroll) + the reward's evaluation + the next observation's stage 1.
- ``first-order``: the same with ``L2TDLNTeacher(first_order=True)``: no stage-3 unroll, the
  teacher's gradient is ``-action_scale * g`` from stage 1, and the commit is a plain K-step run.
- ``faithful, checkpointed``: the faithful iteration on an env made with ``checkpoint_unroll=True``
  (both look-aheads keep K parameter lists and recompute one step's graph at a time in backward).

Per-stage breakdown: a second faithful and a second first-order teacher/env pair run an
instrumented copy of ``act`` + ``step`` written with the same public pieces
(``l2t_agents.l2t_dln.preprocess_gradient``, ``teacher.lstm``, ``teacher.optimizer``,
``env.unwrapped.unrolled_val_loss`` / ``phi_after`` / ``loss_gradient``), a timer around each piece:

- stage 1: ``env.unwrapped.loss_gradient()`` re-run right after ``env.step`` (the step has just
  computed it on exactly these inputs: same phi, student, batches), timed on its own;
- evaluate: ``l2t_env.functional.evaluate`` on the fixed validation subset, re-run the same way;
- commit: ``env.step`` time minus those two re-runs (so it includes the observation bookkeeping).
  Faithful: a copy of the reused unroll; first-order: the K-step DLN run.

Whether the instrumented copy does what ``act`` + ``step`` do is checked: on CPU the two faithful
(and the two first-order) envs must end with bit-identical phi (printed).

FLOPs: after the timed repeats, one more iteration of every variant (and one plain loop on that
iteration's batches) runs under ``torch.utils.flop_counter.FlopCounterMode``, which counts the
matmul and convolution FLOPs of every op dispatched, backward and double-backward included. The
FLOP ratio to the plain loop is the time ratio any implementation of the same computation would
reach at the plain loop's FLOP throughput: a floor for the time ratio unless FLOPs are removed.
"efficiency" = FLOP ratio / time ratio (1.0 = as many FLOPs per second as the plain loop).

Peak memory: per task and variant, a FRESH subprocess builds the same env (and teacher), runs the
warm-up iterations, then measures ``--mem-iters`` iterations. CUDA: ``max_memory_allocated`` after
``reset_peak_memory_stats``, minus ``memory_allocated`` before. CPU: the process RSS
(/proc/self/statm) sampled every ~1 ms from a background thread, peak minus the RSS just before,
after ``gc.collect()`` + ``malloc_trim(0)``, and with ``MALLOC_MMAP_THRESHOLD_=131072`` in the
child's environment (a fixed threshold: large tensors are mmapped and returned to the OS when
freed, so RSS follows the live tensors instead of glibc's free lists).

Full run (CPU):  python benchmarks/teacher_iteration.py --json runs/bench/teacher_iteration.json
Full run (GPU):  python benchmarks/teacher_iteration.py --device cuda --tasks digits-mlp random-cifar10-resnet8 \
                     random-cifar10-resnet8-wide random-cifar10-resnet20 --json runs/bench/teacher_iteration_gpu.json
Smoke run:       python benchmarks/teacher_iteration.py --quick --threads 1
Re-print a run:  python benchmarks/teacher_iteration.py --report runs/bench/teacher_iteration.json
"""

from __future__ import annotations

import argparse
import copy
import json
import subprocess
import sys
from pathlib import Path
from typing import Any, Optional

sys.path.insert(0, str(Path(__file__).resolve().parent))

import _common as C  # noqa: E402
import torch  # noqa: E402
import torch.nn.functional as F  # noqa: E402
from torch.utils.flop_counter import FlopCounterMode  # noqa: E402

from l2t_agents.evaluation import make_env  # noqa: E402
from l2t_agents.l2t_dln import L2TDLNTeacher, preprocess_gradient  # noqa: E402
from l2t_env.functional import evaluate  # noqa: E402

DEFAULT_TASKS = ("digits-mlp", "random-cifar10-resnet8", "random-cifar10-resnet8-wide")
QUICK_TASKS = ("digits-mlp", "random-cifar10-resnet8")
TIME_TARGETS = {"faithful": 6.0, "first_order": 4.5}
#: peak-memory ratio of the reference implementation to plain training, by student (issue #5; not measured here)
REFERENCE_MEMORY_RATIO = {"resnet8": 6.0, "resnet8-wide": 16.0}
VARIANTS = (("plain", "plain loop (K CE SGD steps)"), ("faithful", "faithful L2T-DLN iteration"),
            ("faithful_ckpt", "faithful, checkpoint_unroll=True"), ("first_order", "first-order iteration"))
TEACHER_VARIANTS = {"faithful": dict(first_order=False, checkpoint=False),
                    "faithful_ckpt": dict(first_order=False, checkpoint=True),
                    "first_order": dict(first_order=True, checkpoint=False)}
STAGES = (
    ("stage1", "stage 1: look-ahead hypergradient g (loss_gradient)"),
    ("stage2", "stage 2: preprocess + LSTM forward"),
    ("stage3_unroll", "stage 3a: unroll under phi' (forward)"),
    ("stage3_backward", "stage 3b: backward through the unroll (dL'/du)"),
    ("stage3_teacher_update", "stage 3c: LSTM backward + Adam step"),
    ("commit", "commit (env.step - stage 1 - evaluate)"),
    ("evaluate", "evaluate (fixed val subset)"),
)


class PlainLoop:
    """K plain SGD steps on a deep copy of a student module."""

    def __init__(self, module: torch.nn.Module, lr: float) -> None:
        self.module = copy.deepcopy(module)
        self.module.train(True)
        self.optimizer = torch.optim.SGD(self.module.parameters(), lr=lr)

    def run(self, xs: torch.Tensor, ys: torch.Tensor) -> None:
        for k in range(len(xs)):
            self.optimizer.zero_grad()
            F.cross_entropy(self.module(xs[k]), ys[k]).backward()
            self.optimizer.step()


class TeacherRun:
    """An L2T-DLN teacher on its own env, advanced one iteration at a time."""

    def __init__(self, task_name: str, device: str, seed: int, overrides: dict, first_order: bool,
                 checkpoint: bool = False) -> None:
        self.teacher = L2TDLNTeacher(first_order=first_order)
        task, extra = C.task_spec(task_name)
        self.env = make_env(self.teacher, task, device=device, checkpoint_unroll=checkpoint,
                            **{**extra, **C.NO_TRUNCATION, **overrides})
        self.seed = seed
        self.obs, _ = self.env.reset(seed=seed)
        self.teacher.reset(self.env)
        self.reused: list[bool] = []  # info["reused_unroll"] of each step

    def _after_step(self, obs: Any, reward: float, terminated: bool, truncated: bool, info: dict) -> None:
        self.teacher.observe(obs, reward, terminated, truncated, info)
        self.obs = obs
        self.reused.append(bool(info["reused_unroll"]))
        if terminated or truncated:  # a diverged student (not expected): start a new episode
            self.obs, _ = self.env.reset(seed=self.seed)
            self.teacher.reset(self.env)

    def iterate(self) -> None:
        """The real thing: ``act`` + ``step`` (+ ``observe``)."""
        u = self.teacher.act(self.obs)
        self._after_step(*self.env.step(u))

    def iterate_instrumented(self, timer: C.StageTimer) -> None:
        """``act`` + ``step`` re-written from the same public pieces, each piece timed."""
        teacher, core = self.teacher, self.env.unwrapped
        cfg = teacher.config
        assert cfg.memory_truncation == 1 and not cfg.student_state_inputs and teacher.learning
        with timer("stage2"):
            g = core.loss_grad
            x = preprocess_gradient(g, cfg.preprocess_p)
            u, new_state = teacher.lstm(x, teacher.state)
        if cfg.first_order:
            grad_u = -core.action_scale * g
        else:
            with timer("stage3_unroll"):
                u_leaf = u.detach().requires_grad_(True)
                val_loss = core.unrolled_val_loss(core.phi_after(u_leaf))
            with timer("stage3_backward"):
                (grad_u,) = torch.autograd.grad(val_loss, u_leaf)
        with timer("stage3_teacher_update"):
            teacher.optimizer.zero_grad(set_to_none=True)
            torch.autograd.backward([u], [grad_u])
            teacher.optimizer.step()
            teacher.state = [(h.detach(), c.detach()) for h, c in new_state]
            teacher.iterations += 1
        with timer("env_step"):
            out = self.env.step(u.detach())
        self._after_step(*out)
        with timer("stage1"):
            core.loss_gradient()  # the step's own stage 1, again: same phi, student and batches
        with timer("evaluate"):
            evaluate(core.student, core.params, core.buffers, core._x_fixed, core._y_fixed)


def bench_times(task_name: str, args: argparse.Namespace) -> dict:
    dev = args.device
    runs = {key: TeacherRun(task_name, dev, args.seed, args.task_overrides, **kw) for key, kw in TEACHER_VARIANTS.items()}
    shadows = {} if args.no_breakdown else {
        key: TeacherRun(task_name, dev, args.seed, args.task_overrides, **TEACHER_VARIANTS[key])
        for key in ("faithful", "first_order")}
    core = runs["faithful"].env.unwrapped
    plain = PlainLoop(core.student.module, core.config.lr)
    times: dict[str, list[float]] = {key: [] for key, _ in VARIANTS}
    stage_times: dict[str, list[dict]] = {key: [] for key in shadows}
    for r in range(args.warmup + args.repeats):
        b = core._next
        jobs = [("plain", lambda: plain.run(b.x, b.y))] + [(key, run.iterate) for key, run in runs.items()]
        jobs += [(f"shadow:{key}", run) for key, run in shadows.items()]
        for key, fn in C.rotate(jobs, r):
            if key.startswith("shadow:"):
                timer = C.StageTimer(dev)
                fn.iterate_instrumented(timer)
                if r >= args.warmup:
                    stage_times[key.split(":", 1)[1]].append(timer.times)
            else:
                seconds, _ = C.timed(fn, dev)
                if r >= args.warmup:
                    times[key].append(seconds)
    med = {key: C.median(v) for key, v in times.items()}
    stages: dict[str, dict[str, float]] = {}
    replica_check: dict[str, float] = {}
    for key, samples in stage_times.items():
        for s in samples:
            s["commit"] = s["env_step"] - s["stage1"] - s["evaluate"]
        stages[key] = {name: C.median([s.get(name, 0.0) for s in samples]) for name in (*dict(STAGES), "env_step")}
        stages[key]["instrumented_total"] = C.median(
            [sum(s.get(name, 0.0) for name in dict(STAGES)) for s in samples])
        # an exact replica ends at the same phi as the real act + step (bit-identical on CPU)
        replica_check[key] = (runs[key].env.unwrapped.phi - shadows[key].env.unwrapped.phi).abs().max().item()
    flops = count_flops(plain, runs)
    cfg = core.config
    return {
        "task": task_name,
        "flops": flops,
        "flop_ratio_to_plain": {key: flops[key] / flops["plain"] for key in flops},
        "student": cfg.student if isinstance(cfg.student, str) else repr(cfg.student),
        "config": cfg.to_dict(),
        "K": cfg.unroll_steps,
        "student_params": sum(p.numel() for p in core.student.module.parameters()),
        "teacher_params": runs["faithful"].teacher.numel(),
        "times_s": times,
        "median_s": med,
        "ratio_to_plain": {key: med[key] / med["plain"] for key in med},
        "stage_times_s": stage_times,
        "stage_median_s": stages,
        "replica_max_abs_phi_diff": replica_check,
        "reused_unroll_fraction": {key: sum(run.reused) / max(1, len(run.reused)) for key, run in runs.items()},
    }


def count_flops(plain: PlainLoop, runs: dict[str, TeacherRun]) -> dict[str, int]:
    """Matmul/conv FLOPs of one iteration per variant and of the plain loop on the same batches."""
    def flops_of(fn) -> int:
        with FlopCounterMode(display=False) as counter:
            fn()
        return int(counter.get_total_flops())

    b = runs["faithful"].env.unwrapped._next
    out = {"plain": flops_of(lambda: plain.run(b.x, b.y))}
    for key, run in runs.items():
        out[key] = flops_of(run.iterate)
    return out


# ---------------------------------------------------------------------------------- memory (child process)
def memory_worker(spec: dict) -> dict:
    """Runs in a fresh interpreter: build one variant, warm it up, measure its peak memory."""
    if spec.get("threads"):
        torch.set_num_threads(spec["threads"])
    dev = spec["device"]
    variant = spec["variant"]
    if variant == "plain":
        import gymnasium as gym

        task, extra = C.task_spec(spec["task"])
        env = gym.make("L2T-v0", task=task, lookahead="off", device=dev,
                       **{**extra, **C.NO_TRUNCATION, **spec["overrides"]})
        env.reset(seed=spec["seed"])
        core = env.unwrapped
        plain = PlainLoop(core.student.module, core.config.lr)
        b = core._next

        def fn() -> None:
            plain.run(b.x, b.y)
    else:
        run = TeacherRun(spec["task"], dev, spec["seed"], spec["overrides"], **TEACHER_VARIANTS[variant])
        fn = run.iterate
    for _ in range(spec["warmup"]):
        fn()
    return C.measure_peak(fn, spec["iterations"], dev)


def measure_memory(task_name: str, variant: str, args: argparse.Namespace) -> dict:
    spec = {"task": task_name, "variant": variant, "device": args.device, "threads": args.threads, "seed": args.seed,
            "overrides": args.task_overrides, "warmup": max(1, args.warmup), "iterations": args.mem_iters}
    cmd = [sys.executable, str(Path(__file__).resolve()), "--_memory-worker", json.dumps(spec)]
    proc = subprocess.run(cmd, capture_output=True, text=True, env=C.memory_env(), timeout=args.mem_timeout)
    for line in proc.stdout.splitlines():
        if line.startswith("MEMORY_RESULT "):
            return json.loads(line[len("MEMORY_RESULT "):])
    raise RuntimeError(f"memory worker for {task_name}/{variant} failed (rc {proc.returncode}):\n"
                       f"{proc.stdout[-2000:]}\n{proc.stderr[-4000:]}")


# ---------------------------------------------------------------------------------- report
def report(res: dict, args: argparse.Namespace) -> None:
    print(f"\n-- {res['task']}: student {res['student']} ({res['student_params']:,} params), K={res['K']}, "
          f"teacher LSTM {res['teacher_params']:,} params")
    ref = REFERENCE_MEMORY_RATIO.get(res["student"])
    mem = res.get("memory")
    rows = []
    for key, label in VARIANTS:
        ratio = res["ratio_to_plain"][key]
        target = TIME_TARGETS.get(key)
        flop_ratio = res["flop_ratio_to_plain"][key]
        row = [label, C.fmt_ms(res["median_s"][key]), C.fmt_ms(min(res["times_s"][key])), C.fmt_x(ratio),
               f"<= {target:g}x" if target else "-",
               ("yes" if ratio <= target else "NO") if target else "-",
               f"{res['flops'][key] / 1e9:,.2f}", C.fmt_x(flop_ratio), f"{flop_ratio / ratio:.2f}"]
        if mem is not None:
            m = mem[key]
            mratio = m["delta"] / mem["plain"]["delta"] if mem["plain"]["delta"] > 0 else float("nan")
            mtarget = ref / 2 if (ref and key.startswith("faithful")) else None
            row += [C.fmt_mib(m["delta"]), C.fmt_x(mratio), f"<= {mtarget:g}x" if mtarget else "-",
                    ("yes" if mratio <= mtarget else "NO") if mtarget else "-"]
        rows.append(row)
    headers = ["variant", "median ms", "min ms", "x plain", "time target", "met", "GFLOP", "FLOPs x plain", "efficiency"]
    if mem is not None:
        headers += ["peak mem MiB", "x plain", "mem target", "met"]
    C.print_table(headers, rows)
    if mem is not None:
        kind = mem["plain"]["kind"]
        print(f"memory: {kind}, peak minus the memory held just before {args.mem_iters} measured iteration(s), "
              f"fresh subprocess per variant; held before (MiB): "
              + ", ".join(f"{k} {C.fmt_mib(mem[k]['before'])}" for k, _ in VARIANTS))
        if mem["plain"]["peak"] > 0:
            basis = ("the process's peak RSS, ~0.4 GiB of it libraries" if kind.startswith("cpu")
                     else "peak allocated, including data, weights and optimiser state")
            print(f"whole-process basis, ratio of absolute peaks ({basis}; the issue does not say which basis it "
                  "measured): " + ", ".join(f"{k} {C.fmt_x(mem[k]['peak'] / mem['plain']['peak'])}" for k, _ in VARIANTS[1:]))
        if ref:
            print(f"reference (from issue #5, not measured here): peak-memory ratio ~{ref:g}x for {res['student']}; "
                  f"target: at most half, <= {ref / 2:g}x")
        else:
            print("reference (from issue #5): no figure for this student; no memory target")
    ru = res["reused_unroll_fraction"]
    print(f"commit reused the stage-3 unroll (info['reused_unroll']) in {100 * ru['faithful']:.0f}% of the faithful "
          f"steps, {100 * ru['faithful_ckpt']:.0f}% of the checkpointed ones and {100 * ru['first_order']:.0f}% of the "
          "first-order ones (expected: 100%, 100% and 0%)")
    if res["stage_median_s"]:
        st = res["stage_median_s"]
        rows = []
        for name, label in STAGES:
            f = st["faithful"].get(name, 0.0)
            o = st["first_order"].get(name, 0.0)
            rows.append([label, C.fmt_ms(f), f"{100 * f / st['faithful']['instrumented_total']:.0f}%",
                         C.fmt_ms(o) if (name not in ("stage3_unroll", "stage3_backward")) else "-",
                         f"{100 * o / st['first_order']['instrumented_total']:.0f}%"
                         if name not in ("stage3_unroll", "stage3_backward") else "-"])
        rows.append(["sum of stages (instrumented iteration)", C.fmt_ms(st["faithful"]["instrumented_total"]), "100%",
                     C.fmt_ms(st["first_order"]["instrumented_total"]), "100%"])
        rows.append(["real act + step (above)", C.fmt_ms(res["median_s"]["faithful"]), "",
                     C.fmt_ms(res["median_s"]["first_order"]), ""])
        rows.append(["plain loop (above)", C.fmt_ms(res["median_s"]["plain"]), "", C.fmt_ms(res["median_s"]["plain"]), ""])
        print("per-stage breakdown (medians; stage 1 and evaluate re-run after env.step on identical inputs, "
              "commit = env.step - stage 1 - evaluate):")
        C.print_table(["stage", "faithful ms", "share", "first-order ms", "share"], rows)
        rc = res["replica_max_abs_phi_diff"]
        print("instrumented copy == act + step (max |phi difference| after all iterations): "
              + ", ".join(f"{k} {v:.3g}" for k, v in rc.items()))


def print_summary(results: list[dict], args: argparse.Namespace) -> None:
    rows = []
    for res in results:
        row = [res["task"], res["K"], C.fmt_ms(res["median_s"]["plain"])]
        row += [f"{C.fmt_x(res['ratio_to_plain'][key])} ({C.fmt_x(res['flop_ratio_to_plain'][key])})" for key, _ in VARIANTS[1:]]
        if "memory" in res:
            mem = res["memory"]
            base = mem["plain"]["delta"]
            row += [C.fmt_x(mem[key]["delta"] / base if base > 0 else float("nan")) for key, _ in VARIANTS[1:]]
            ref = REFERENCE_MEMORY_RATIO.get(res["student"])
            row += [f"{ref:g}x" if ref else "-"]
        rows.append(row)
    print("\n-- summary (time targets: faithful <= 6x, first-order <= 4.5x; memory: <= half the reference's)")
    headers = ["task", "K", "plain ms", "faithful / plain: time (FLOPs)", "checkpointed / plain", "first-order / plain"]
    if all("memory" in res for res in results):
        headers += ["mem faithful / plain", "mem checkpointed / plain", "mem first-order / plain",
                    "reference mem ratio (issue #5, not measured)"]
    C.print_table(headers, rows)


def main(argv=None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0], formatter_class=argparse.RawDescriptionHelpFormatter,
                                     epilog=__doc__.split("\n\n", 1)[1])
    C.add_common_args(parser, DEFAULT_TASKS, repeats=10, warmup=2)
    parser.add_argument("--mem-iters", type=int, default=None, help="measured iterations per memory subprocess (default 3; --quick 1)")
    parser.add_argument("--mem-timeout", type=float, default=3600.0, help="seconds per memory subprocess")
    parser.add_argument("--no-memory", action="store_true", help="skip the peak-memory subprocesses")
    parser.add_argument("--no-breakdown", action="store_true", help="skip the instrumented per-stage breakdown")
    parser.add_argument("--report", type=Path, default=None, help="re-print the tables of a saved --json run, run nothing")
    parser.add_argument("--_memory-worker", dest="memory_worker", default=None, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.memory_worker is not None:
        result = memory_worker(json.loads(args.memory_worker))
        print("MEMORY_RESULT " + json.dumps(result), flush=True)
        return result
    if args.report is not None:
        payload = json.loads(args.report.read_text())
        saved = argparse.Namespace(**payload["args"])
        print(f"== {args.report} (saved run): {payload['environment']}")
        for res in payload["results"]:
            report(res, saved)
        print_summary(payload["results"], saved)
        return payload
    C.finish_common_args(args, DEFAULT_TASKS, repeats=10, warmup=2, quick_tasks=QUICK_TASKS)
    if args.mem_iters is None:
        args.mem_iters = 1 if args.quick else 3
    info = C.print_header("L2T-DLN teacher iteration vs plain training (issue #5)", args)
    print(f"time targets: faithful <= {TIME_TARGETS['faithful']:g}x, first-order <= {TIME_TARGETS['first_order']:g}x "
          "the plain loop; memory: at most half of the reference's ratio")
    results = []
    for task_name in args.tasks:
        res = bench_times(task_name, args)
        if not args.no_memory:
            res["memory"] = {key: measure_memory(task_name, key, args) for key, _ in VARIANTS}
        results.append(res)
        report(res, args)
    print_summary(results, args)
    payload = {"benchmark": "teacher_iteration", "environment": info,
               "args": {k: v for k, v in vars(args).items() if k not in ("json", "memory_worker")}, "results": results}
    C.write_json(args.json, payload)
    return payload


if __name__ == "__main__":
    main()
