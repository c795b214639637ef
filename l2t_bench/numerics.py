"""Pinned numerics: the CPU settings that decide a float result bit for bit, set before torch loads.

Two CPUs that run the same code on the same data may still round differently: torch's ATen picks
vector kernels by CPU (AVX2, AVX-512: a sum over 8 or 16 lanes adds in another order), MKL picks
its matrix-multiply code path by CPU and cache, oneDNN its convolution kernels by ISA, and the
number of intra-op threads splits reductions. ``pin_numerics`` fixes all of these to one portable
choice, so that a run depends on the torch build, not on the machine:

- ``ATEN_CPU_CAPABILITY=default``: ATen's plain kernels (no AVX2/AVX-512 dispatch).
- ``MKL_CBWR=COMPATIBLE``: MKL's conditional numerical reproducibility, one SSE2 code path.
- ``ONEDNN_MAX_CPU_ISA=SSE41`` and ``torch.backends.mkldnn`` off: convolutions go through ATen's
  own im2col and MKL instead of oneDNN kernels chosen by ISA and cache size; NNPACK off as well.
- ``NPY_DISABLE_CPU_FEATURES``: numpy's ufuncs (the SB3 teachers' observation normalisation) on
  their baseline loops, not the AVX2/AVX-512 ones picked at import.
- one thread (``OMP_NUM_THREADS=MKL_NUM_THREADS=1``, ``torch.set_num_threads(1)``).

The environment variables are read when torch (and MKL, oneDNN, OpenMP) first loads, so
:func:`pin_numerics` sets them before ``import torch``, or re-executes the process with them set
when torch is already loaded. The same variables can be exported by hand instead
(``pinned_environment()`` lists them). :func:`numerics_record` says what a process ran under;
``l2t bench`` writes it into every run record.
"""

from __future__ import annotations

import functools
import os
import platform
import subprocess
import sys
from typing import Any, Mapping, Optional, Sequence

#: the environment that pins the numerics (read by torch, MKL, oneDNN and OpenMP when they load)
PINNED_ENV: dict[str, str] = {
    "ATEN_CPU_CAPABILITY": "default",
    "MKL_CBWR": "COMPATIBLE",
    "ONEDNN_MAX_CPU_ISA": "SSE41",
    "OMP_NUM_THREADS": "1",
    "MKL_NUM_THREADS": "1",
    # numpy's SIMD dispatch above its baseline off (numpy 2.x and 1.x names; unknown names are ignored)
    "NPY_DISABLE_CPU_FEATURES": "X86_V3 X86_V4 AVX512_ICL AVX512_SPR AVX2 FMA3 AVX512F AVX512_SKX",
}
#: set in a pinned process, so that its children (and a re-executed self) apply the runtime pins too
PIN_FLAG = "L2T_PIN_NUMERICS"
#: the variables a record reports (pinned or not), so that two records can be compared
RECORDED_ENV = (*PINNED_ENV, "KMP_AFFINITY", "OMP_PROC_BIND", "PYTHONHASHSEED")


def pinned_environment() -> dict[str, str]:
    """The variables to export for pinned numerics (what ``pin_numerics`` sets), plus the flag."""
    return {**PINNED_ENV, PIN_FLAG: "1"}


def is_pinned(environ: Optional[Mapping[str, str]] = None) -> bool:
    """Whether ``environ`` (default: this process's) holds every pinned variable."""
    env = os.environ if environ is None else environ
    return all(env.get(k) == v for k, v in pinned_environment().items())


def pin_numerics(argv: Optional[list[str]] = None) -> dict[str, Any]:
    """Pin this process's numerics and return its :func:`numerics_record`.

    Before torch and numpy are imported the variables are set in place; afterwards they can no longer take
    effect, so the process re-executes itself (``argv``, default ``sys.orig_argv``) with them set,
    and the new process, finding them set, goes on here. Then the runtime switches follow.
    """
    if not is_pinned():
        if "torch" in sys.modules or "numpy" in sys.modules:
            args = list(argv if argv is not None else sys.orig_argv)
            sys.stdout.flush()
            sys.stderr.flush()
            os.execve(sys.executable, [sys.executable, *args[1:]], {**os.environ, **pinned_environment()})
        os.environ.update(pinned_environment())
    apply_runtime_pins()
    return numerics_record()


def run_pinned(cli_argv: list[str], replace: bool) -> int:
    """Run ``l2t CLI_ARGV`` in a process with pinned numerics (``l2t bench --pin-numerics``).

    ``replace=True`` (the command line) replaces this process; otherwise (a call from Python) a
    child runs it and its exit status is returned.
    """
    cmd = [sys.executable, "-m", "l2t_bench.cli", *cli_argv]
    env = {**os.environ, **pinned_environment()}
    if replace:
        sys.stdout.flush()
        sys.stderr.flush()
        os.execve(sys.executable, cmd, env)
    return subprocess.call(cmd, env=env)


def apply_runtime_pins() -> None:
    """The switches that live in torch rather than in the environment: one thread, no oneDNN/NNPACK."""
    import torch

    torch.set_num_threads(1)
    torch.backends.mkldnn.enabled = False
    torch.backends.nnpack.set_flags(False)


def apply_pins_if_flagged() -> bool:
    """In a child of a pinned process (a worker), apply the runtime switches; returns whether it did."""
    if os.environ.get(PIN_FLAG) == "1":
        apply_runtime_pins()
        return True
    return False


@functools.lru_cache(maxsize=1)
def cpu_model() -> str:
    """The CPU's model name (``/proc/cpuinfo`` on Linux, else what ``platform`` knows)."""
    try:
        with open("/proc/cpuinfo") as fh:
            for line in fh:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def numerics_record() -> dict[str, Any]:
    """What decides this process's floating-point results: versions, kernels, threads, CPU."""
    import numpy as np
    import torch

    return {
        "pinned": is_pinned() and torch.get_num_threads() == 1 and not torch.backends.mkldnn.enabled,
        "torch": torch.__version__,
        "numpy": np.__version__,
        "python": platform.python_version(),
        "libc": "-".join(platform.libc_ver()) or None,
        "cpu": cpu_model(),
        "machine": platform.machine(),
        "cpu_capability": torch.backends.cpu.get_cpu_capability(),
        "threads": torch.get_num_threads(),
        "mkldnn": bool(torch.backends.mkldnn.enabled),
        "nnpack": getattr(torch._C, "_get_nnpack_enabled", lambda: None)(),
        "env": {k: os.environ[k] for k in RECORDED_ENV if k in os.environ},
    }


def describe(records: Sequence[dict]) -> Optional[str]:
    """One line on what the runs ran under; names every distinct setting when they differ."""
    seen: dict[str, int] = {}
    for record in records:
        n = record.get("numerics")
        if n:
            label = (f"{n['cpu']}, torch {n['torch']}, {n['cpu_capability']} kernels, {n['threads']} thread(s), "
                     + ("pinned" if n["pinned"] else "not pinned"))
            seen[label] = seen.get(label, 0) + 1
    if not seen:
        return None
    if len(seen) == 1:
        return f"numerics: {next(iter(seen))}"
    parts = "; ".join(f"{count} run(s) on {label}" for label, count in seen.items())
    return f"numerics differ between runs, so bit-level comparisons across them do not hold: {parts}"
