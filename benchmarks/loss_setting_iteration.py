"""Issue 10's evidence: one L2T-DFM (and L2T-DLF) teaching iteration against one L2T-DLN iteration.

L2T-DFM's abstract motivates it by the compute cost of loss networks; the aim here is an
``l2t-dfm`` iteration of at most half an ``l2t-dln`` iteration. Per task, medians over repeats
after a warm-up, all variants interleaved in one process (each repeat runs every variant once, the
order rotated from repeat to repeat), every env with the same seed:

- ``plain loop``: K cross-entropy SGD steps on a ``copy.deepcopy`` of the student module
  (``torch.optim.SGD``), on the batches of the L2T-DLN env's step of the same repeat.
- ``l2t-dln``: the real ``teacher.act(obs)`` + ``env.step(u)`` + ``teacher.observe`` of the
  faithful ``L2TDLNTeacher()`` on its env (``make_env``): stages 2 and 3 (a second unroll and its
  backward, the LSTM update), the commit (reusing the stage-3 unroll), the reward's evaluation and
  the next observation's stage-1 look-ahead.
- ``l2t-dlf`` / ``l2t-dfm``: the same loop with ``L2TDLFTeacher()`` / ``L2TDFMTeacher()``: one
  look-ahead under the teacher's phi and its backward to the teacher, one Adam step, the commit
  (reusing that unroll), the reward's evaluation; DFM also one forward pass for its statistics.
  One full-K look-ahead plus the same evaluation can never cost at most half of two look-ahead
  iterations (``(U + E) / (2U + E) > 1/2``); ``l2t-dfm h=5`` (``horizon=5``) learns through the
  first 5 of the K steps and commits with a plain K-step run.

Three measures per variant, because a shared host's load swings wall times several-fold between
repeats: wall time (median; and the median over repeats of the per-repeat ratio to the l2t-dln
iteration of the same repeat, which cancels slow drift), the process's CPU time (``time.process_time``;
with ``--threads 1`` the compute itself, nearly blind to other processes), and FLOPs (one more
iteration under ``torch.utils.flop_counter.FlopCounterMode``: matmul and convolution FLOPs of
every op, backward and double backward included; exact and load-free).

CPU:    python benchmarks/loss_setting_iteration.py --threads 1 --json runs/bench/loss_setting_iteration.json
Smoke:  python benchmarks/loss_setting_iteration.py --quick --threads 1
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))

import _common as C  # noqa: E402
from torch.utils.flop_counter import FlopCounterMode  # noqa: E402

from l2t_agents import make_teacher  # noqa: E402
from l2t_agents.evaluation import make_env  # noqa: E402
from teacher_iteration import PlainLoop  # noqa: E402

DEFAULT_TASKS = ("digits-mlp", "random-cifar10-resnet8")
#: label -> (teacher, kwargs)
TEACHERS = {"l2t-dln": ("l2t-dln", {}), "l2t-dlf": ("l2t-dlf", {}), "l2t-dfm": ("l2t-dfm", {}),
            "l2t-dfm h=5": ("l2t-dfm", {"horizon": 5})}
AIM = {"l2t-dfm": 0.5, "l2t-dfm h=5": 0.5}  # at most this fraction of an l2t-dln iteration


class Run:
    """A teacher on its own env, advanced one iteration at a time."""

    def __init__(self, name: str, kwargs: dict, task_name: str, args: argparse.Namespace) -> None:
        self.teacher = make_teacher(name, **kwargs)
        task, extra = C.task_spec(task_name)
        self.env = make_env(self.teacher, task, device=args.device, **{**extra, **C.NO_TRUNCATION, **args.task_overrides})
        self.seed = args.seed
        self.obs, _ = self.env.reset(seed=self.seed)
        self.teacher.reset(self.env)

    def iterate(self) -> None:
        obs, reward, terminated, truncated, info = self.env.step(self.teacher.act(self.obs))
        self.teacher.observe(obs, reward, terminated, truncated, info)
        self.obs = obs
        if terminated or truncated:  # a diverged student: start again, as teacher_iteration.py does
            self.obs, _ = self.env.reset(seed=self.seed)
            self.teacher.reset(self.env)


def bench(task_name: str, args: argparse.Namespace) -> dict:
    runs = {label: Run(name, kwargs, task_name, args) for label, (name, kwargs) in TEACHERS.items()}
    core = runs["l2t-dln"].env.unwrapped
    plain = PlainLoop(core.student.module, core.config.lr)
    keys = ("plain", *TEACHERS)
    times: dict[str, list[float]] = {key: [] for key in keys}
    cpu: dict[str, list[float]] = {key: [] for key in keys}
    for r in range(args.warmup + args.repeats):
        b = core._next
        jobs: list[tuple[str, Any]] = [("plain", lambda: plain.run(b.x, b.y))] + [(k, run.iterate) for k, run in runs.items()]
        for key, fn in C.rotate(jobs, r):
            cpu0 = time.process_time()
            seconds, _ = C.timed(fn, args.device)
            if r >= args.warmup:
                times[key].append(seconds)
                cpu[key].append(time.process_time() - cpu0)
    med = {key: C.median(v) for key, v in times.items()}
    b = core._next
    flops = {"plain": _flops(lambda: plain.run(b.x, b.y))}
    flops.update({key: _flops(run.iterate) for key, run in runs.items()})
    return {
        "cpu_s": cpu,
        "median_cpu_s": {key: C.median(v) for key, v in cpu.items()},
        "cpu_ratio_to_dln": {key: C.median(cpu[key]) / C.median(cpu["l2t-dln"]) for key in keys},
        "paired_ratio_to_dln": {key: C.median([a / d for a, d in zip(times[key], times["l2t-dln"])]) for key in keys},
        "flops": flops,
        "flop_ratio_to_dln": {key: flops[key] / flops["l2t-dln"] for key in keys},
        "task": task_name,
        "K": core.config.unroll_steps,
        "student_params": sum(p.numel() for p in core.student.module.parameters()),
        "teacher_params": {name: run.teacher.numel() for name, run in runs.items()},
        "times_s": times,
        "median_s": med,
        "ratio_to_dln": {key: med[key] / med["l2t-dln"] for key in med},
        "ratio_to_plain": {key: med[key] / med["plain"] for key in med},
    }


def _flops(fn) -> int:
    with FlopCounterMode(display=False) as counter:
        fn()
    return int(counter.get_total_flops())


def report(results: list[dict]) -> None:
    rows = []
    for res in results:
        for key in ("plain", *TEACHERS):
            aim = AIM.get(key)
            ratios = (res["paired_ratio_to_dln"][key], res["cpu_ratio_to_dln"][key], res["flop_ratio_to_dln"][key])
            rows.append([res["task"], key, f"{res['teacher_params'].get(key, 0):,}" if key != "plain" else "-",
                         C.fmt_ms(res["median_s"][key]), C.fmt_x(ratios[0]), C.fmt_ms(res["median_cpu_s"][key]), C.fmt_x(ratios[1]),
                         f"{res['flops'][key] / 1e9:,.2f}", C.fmt_x(ratios[2]), f"<= {aim:g}x" if aim else "-",
                         "/".join("yes" if x <= aim else "NO" for x in ratios) if aim else "-"])
    C.print_table(["task", "variant", "teacher params", "wall ms", "wall x dln (paired)", "CPU ms", "CPU x dln",
                   "GFLOP", "FLOPs x dln", "aim", "met (wall/CPU/FLOPs)"], rows)


def main(argv=None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0], formatter_class=argparse.RawDescriptionHelpFormatter,
                                     epilog=__doc__.split("\n\n", 1)[1])
    C.add_common_args(parser, DEFAULT_TASKS, repeats=10, warmup=2)
    args = parser.parse_args(argv)
    C.finish_common_args(args, DEFAULT_TASKS, repeats=10, warmup=2)
    info = C.print_header("L2T-DFM / L2T-DLF teacher iteration vs L2T-DLN (issue 10)", args)
    results = [bench(task, args) for task in args.tasks]
    report(results)
    payload = {"benchmark": "loss_setting_iteration", "environment": info,
               "args": {k: v for k, v in vars(args).items() if k != "json"}, "results": results}
    C.write_json(args.json, payload)
    return payload


if __name__ == "__main__":
    main()
