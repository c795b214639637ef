"""Shared helpers of the benchmark scripts: arguments, devices, timers, memory probes, tables.

Not a test module and not part of the package: the scripts import it by file location
(``benchmarks/`` is on ``sys.path`` when a script there runs).
"""

from __future__ import annotations

import argparse
import ctypes
import gc
import json
import os
import platform
import re
import statistics
import sys
import threading
import time
from pathlib import Path
from typing import Any, Callable, Iterable, Optional, Sequence

REPO = Path(__file__).resolve().parents[1]
if str(REPO) not in sys.path:  # so that `python benchmarks/x.py` finds the repo's packages uninstalled
    sys.path.insert(0, str(REPO))

import torch  # noqa: E402

import l2t_env  # noqa: E402,F401  (registers L2T-v0)
from l2t_bench.allocator import keep_large_blocks  # noqa: E402
from l2t_bench.numerics import cpu_model  # noqa: E402
from l2t_bench.options import parse_overrides  # noqa: E402
from l2t_env.env import resolve_device  # noqa: E402
from l2t_env.tasks import STUDENTS, available_tasks  # noqa: E402

#: overrides --quick applies when no --set is given (shorter K: each unroll 3x cheaper)
QUICK_OVERRIDES = {"unroll_steps": 5}
#: so that the envs never truncate (a truncating step would also run the final whole-split evaluation)
NO_TRUNCATION = {"teaching_steps": 10**9}


# ---------------------------------------------------------------------------------- arguments
def add_common_args(parser: argparse.ArgumentParser, default_tasks: Sequence[str], repeats: int, warmup: int) -> None:
    parser.add_argument("--tasks", nargs="+", default=None, metavar="TASK",
                        help=f"tasks (default: {' '.join(default_tasks)}). A built-in task name, a task YAML, or "
                             "'random-cifar10-STUDENT' / 'random-cifar100-STUDENT' for any student of the registry "
                             "(built from random-cifar10-resnet8 with student=STUDENT), e.g. random-cifar10-resnet20")
    parser.add_argument("--repeats", type=int, default=None, help=f"measured repeats (default {repeats}; --quick: 2)")
    parser.add_argument("--warmup", type=int, default=None, help=f"warm-up repeats, not measured (default {warmup}; --quick: 1)")
    parser.add_argument("--device", default="auto", help="auto (CUDA when present), cpu, cuda, cuda:1, ...")
    parser.add_argument("--threads", type=int, default=None,
                        help="torch.set_num_threads (default: torch's default). On a loaded CPU host use 1: "
                             "OpenMP workers spin-wait on descheduled siblings and inflate every time")
    parser.add_argument("--seed", type=int, default=0, help="episode seed of the envs (default 0)")
    parser.add_argument("--set", nargs="+", default=None, metavar="KEY=VALUE", dest="overrides",
                        help="task overrides for every task, e.g. --set unroll_steps=5 batch_size=50 "
                             f"(--quick alone sets {' '.join(f'{k}={v}' for k, v in QUICK_OVERRIDES.items())})")
    parser.add_argument("--quick", action="store_true", help="smoke run: 2 repeats, 1 warm-up, shorter K")
    parser.add_argument("--json", type=Path, default=None, metavar="PATH", help="also write the results as JSON")
    parser.add_argument("--malloc-default", action="store_true",
                        help="keep glibc's default mmap threshold (the scripts otherwise apply l2t_bench.allocator.keep_large_blocks, as l2t does)")


def finish_common_args(args: argparse.Namespace, default_tasks: Sequence[str], repeats: int, warmup: int,
                       quick_tasks: Optional[Sequence[str]] = None, quick_overrides: Optional[dict] = None) -> None:
    """Fill the defaults that depend on --quick; parse --set into ``args.task_overrides``."""
    if args.tasks is None:
        args.tasks = list(quick_tasks if (args.quick and quick_tasks) else default_tasks)
    if args.repeats is None:
        args.repeats = 2 if args.quick else repeats
    if args.warmup is None:
        args.warmup = 1 if args.quick else warmup
    if args.repeats < 1 or args.warmup < 0:
        raise SystemExit("--repeats must be >= 1 and --warmup >= 0")
    if args.overrides is None:
        args.task_overrides = dict(QUICK_OVERRIDES if quick_overrides is None else quick_overrides) if args.quick else {}
    else:
        args.task_overrides = parse_overrides(args.overrides, "--set task")
    if args.threads is not None:
        torch.set_num_threads(args.threads)
    args.device = str(resolve_device(args.device))
    # as the l2t command does; --malloc-default measures glibc's own policy
    args.malloc_tuned = False if args.malloc_default else keep_large_blocks()


def task_spec(name: str) -> tuple[Any, dict]:
    """``(task argument of gym.make, extra task overrides)`` for a task name of the scripts."""
    if name in available_tasks() or name.endswith((".yaml", ".yml")):
        return name, {}
    m = re.fullmatch(r"random-(cifar10|cifar100)-(.+)", name)
    if m and m.group(2) in STUDENTS:
        extra = {"student": m.group(2), "name": name}
        if m.group(1) == "cifar100":
            extra["dataset"] = "random-cifar100"
        return "random-cifar10-resnet8", extra
    raise SystemExit(f"unknown task {name!r}: built-in tasks are {available_tasks()}; or random-cifar10-STUDENT "
                     f"with STUDENT in {sorted(STUDENTS)}")


# ---------------------------------------------------------------------------------- devices and timing
def sync(device: Any) -> None:
    if torch.device(device).type == "cuda":
        torch.cuda.synchronize(device)


def timed(fn: Callable[[], Any], device: Any) -> tuple[float, Any]:
    """Wall seconds of ``fn()`` with the device drained before and after (CUDA kernels are async)."""
    sync(device)
    start = time.perf_counter()
    out = fn()
    sync(device)
    return time.perf_counter() - start, out


class StageTimer:
    """Accumulates synchronised wall times of named stages: ``with timer("stage"): ...``."""

    def __init__(self, device: Any) -> None:
        self.device = device
        self.times: dict[str, float] = {}

    def __call__(self, name: str) -> "StageTimer._Span":
        return StageTimer._Span(self, name)

    class _Span:
        def __init__(self, owner: "StageTimer", name: str) -> None:
            self.owner, self.name = owner, name

        def __enter__(self) -> None:
            sync(self.owner.device)
            self.start = time.perf_counter()

        def __exit__(self, *exc: Any) -> None:
            sync(self.owner.device)
            self.owner.times[self.name] = self.owner.times.get(self.name, 0.0) + time.perf_counter() - self.start


def median(xs: Sequence[float]) -> float:
    return statistics.median(xs) if xs else float("nan")


def rotate(items: Sequence[Any], r: int) -> list[Any]:
    """The r-th rotation: interleaved measurements take turns going first, cancelling drift."""
    r %= len(items)
    return list(items[r:]) + list(items[:r])


def environment_info(device: str) -> dict:
    dev = torch.device(device)
    info = {
        "torch": torch.__version__,
        "python": platform.python_version(),
        "device": str(dev),
        "device_name": torch.cuda.get_device_name(dev) if dev.type == "cuda" else cpu_model(),
        "cuda": torch.version.cuda,
        "threads": torch.get_num_threads(),
        "cpu_capability": torch.backends.cpu.get_cpu_capability(),
        "cpu_count": os.cpu_count(),
        "load_average": list(os.getloadavg()) if hasattr(os, "getloadavg") else None,
    }
    return info


def print_header(title: str, args: argparse.Namespace) -> dict:
    info = environment_info(args.device)
    print(f"== {title}")
    print(f"torch {info['torch']}" + (f" (CUDA {info['cuda']})" if info["cuda"] else "") + f" | python {info['python']} | device {info['device']} ({info['device_name']}) | "
          f"torch threads {info['threads']} | cpus {info['cpu_count']}"
          + (f" | load avg {info['load_average'][0]:.2f}" if info["load_average"] else ""))
    info["malloc_large_blocks_kept"] = getattr(args, "malloc_tuned", False)
    print(f"repeats {args.repeats} (median reported) after {args.warmup} warm-up | seed {args.seed} | "
          f"task overrides {args.task_overrides or '{}'}" + (" (--quick)" if args.quick else "")
          + f" | malloc: {'large blocks kept' if info['malloc_large_blocks_kept'] else 'glibc default'}")
    if info["device"] == "cpu" and info["load_average"] and info["threads"] > 1 and info["load_average"][0] > 0.5:
        print(f"note: host load average {info['load_average'][0]:.2f} on {info['cpu_count']} cpus with {info['threads']} "
              "torch threads; OpenMP spin-waits can inflate times many-fold on a shared host (try --threads 1)")
    return info


# ---------------------------------------------------------------------------------- memory
_PAGE = os.sysconf("SC_PAGE_SIZE") if hasattr(os, "sysconf") else 4096


def rss_bytes(fd: Optional[int] = None) -> int:
    """Resident set size of this process, from /proc/self/statm (second field, in pages)."""
    if fd is None:
        with open("/proc/self/statm", "rb") as fh:
            return int(fh.read().split()[1]) * _PAGE
    return int(os.pread(fd, 256, 0).split()[1]) * _PAGE


def release_free_memory() -> None:
    """Collect garbage and return glibc's free heap pages to the OS, so that RSS tracks live memory."""
    gc.collect()
    try:
        ctypes.CDLL("libc.so.6").malloc_trim(0)
    except (OSError, AttributeError):
        pass


class RSSSampler:
    """Peak RSS over a block, sampled from a background thread every ``interval`` seconds."""

    def __init__(self, interval: float = 1e-3) -> None:
        self.interval = interval
        self.peak = 0
        self.samples = 0

    def _run(self) -> None:
        fd = os.open("/proc/self/statm", os.O_RDONLY)
        try:
            while not self._stop.is_set():
                value = rss_bytes(fd)
                self.peak = max(self.peak, value)
                self.samples += 1
                time.sleep(self.interval)
        finally:
            os.close(fd)

    def __enter__(self) -> "RSSSampler":
        self.baseline = rss_bytes()
        self.peak = self.baseline
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()
        return self

    def __exit__(self, *exc: Any) -> None:
        self._stop.set()
        self._thread.join()
        self.peak = max(self.peak, rss_bytes())


def measure_peak(fn: Callable[[], Any], iterations: int, device: str) -> dict:
    """Peak memory of ``iterations`` calls of ``fn`` above the memory held just before them.

    CUDA: ``max_memory_allocated`` after ``reset_peak_memory_stats``, minus ``memory_allocated``
    before. CPU: peak RSS sampled every ~1 ms minus the RSS before, after a ``malloc_trim``.
    """
    dev = torch.device(device)
    if dev.type == "cuda":
        release_free_memory()
        torch.cuda.synchronize(dev)
        torch.cuda.reset_peak_memory_stats(dev)
        before = torch.cuda.memory_allocated(dev)
        for _ in range(iterations):
            fn()
        torch.cuda.synchronize(dev)
        peak = torch.cuda.max_memory_allocated(dev)
        return {"kind": "cuda max_memory_allocated", "before": before, "peak": peak, "delta": peak - before}
    release_free_memory()
    with RSSSampler() as sampler:
        for _ in range(iterations):
            fn()
    return {"kind": "cpu rss", "before": sampler.baseline, "peak": sampler.peak,
            "delta": sampler.peak - sampler.baseline, "samples": sampler.samples}


def memory_env() -> dict:
    """Environment of a memory-measuring child: a fixed mmap threshold disables glibc's dynamic one,
    so that large tensors are mmapped and their pages go back to the OS when freed."""
    env = dict(os.environ)
    env.setdefault("MALLOC_MMAP_THRESHOLD_", str(128 * 1024))
    return env


# ---------------------------------------------------------------------------------- output
def fmt_ms(seconds: float) -> str:
    ms = seconds * 1e3
    return f"{ms:.0f}" if ms >= 1000 else (f"{ms:.1f}" if ms >= 10 else f"{ms:.2f}")


def fmt_x(ratio: Optional[float]) -> str:
    return "-" if ratio is None or ratio != ratio else f"{ratio:.2f}x"


def fmt_mib(n: Optional[float]) -> str:
    return "-" if n is None else f"{n / 2**20:.1f}"


def print_table(headers: Sequence[str], rows: Sequence[Sequence[Any]], align: Optional[str] = None) -> None:
    """A plain-text table (markdown pipes, so that it pastes into an issue)."""
    cells = [[str(h) for h in headers]] + [[str(c) for c in row] for row in rows]
    widths = [max(len(r[i]) for r in cells) for i in range(len(headers))]
    align = align or ("l" + "r" * (len(headers) - 1))

    def line(row: Sequence[str]) -> str:
        return "| " + " | ".join(c.ljust(w) if a == "l" else c.rjust(w) for c, w, a in zip(row, widths, align)) + " |"

    print(line(cells[0]))
    print("|" + "|".join(("-" * (w + 1) + ":") if a == "r" else ("-" * (w + 2)) for w, a in zip(widths, align)) + "|")
    for row in cells[1:]:
        print(line(row))


def write_json(path: Optional[Path], payload: dict) -> None:
    if path is None:
        return
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("w") as fh:
        json.dump(payload, fh, indent=2, default=_jsonable)
        fh.write("\n")
    print(f"wrote {path}")


def _jsonable(x: Any) -> Any:
    if isinstance(x, (torch.Tensor,)):
        return x.tolist()
    if isinstance(x, Path):
        return str(x)
    if hasattr(x, "item"):
        return x.item()
    return repr(x)
