"""Keep large freed blocks in the process heap (glibc): what batched teachers need to be fast on CPU.

glibc serves an allocation above its mmap threshold (adaptive, at most 32 MiB by default) with a
fresh ``mmap`` and returns it to the system on ``free``; every such tensor then costs page faults
on first touch. N stacked ``l2t-dln`` teachers allocate tensors of N x 5,000 x 256 floats (41 MiB
at N = 32) for every LSTM gate, so without this they spend about half their time in page faults
(``benchmarks/vector_env.py --teacher``; docs/vector-env.md). The ``l2t`` command calls
:func:`keep_large_blocks` in its process and in its worker processes; a library user's own script
may call it too. It changes where memory comes from, never a result; the price is memory: freed
blocks are kept for reuse instead of returned to the system, and the heap fragments (a vmapped
ResNet-8 at N = 32: peak RSS 8.0 GB instead of 5.0 GB, and 1.9x faster). ``L2T_MALLOC_TUNING=0``
turns it off: do so for a run that is short of memory.
"""

from __future__ import annotations

import ctypes
import os
import sys

#: glibc's ``mallopt`` parameters (malloc.h)
_M_TRIM_THRESHOLD, _M_MMAP_THRESHOLD = -1, -3
_LIMIT = 1 << 30


def keep_large_blocks() -> bool:
    """Raise glibc's mmap and trim thresholds to 1 GiB; True when applied (Linux with glibc, not
    turned off with ``L2T_MALLOC_TUNING=0``), False elsewhere (nothing changes)."""
    if os.environ.get("L2T_MALLOC_TUNING", "1") == "0" or not sys.platform.startswith("linux"):
        return False
    try:
        libc = ctypes.CDLL("libc.so.6")
        mallopt = libc.mallopt
    except (OSError, AttributeError):  # musl and other C libraries: leave them alone
        return False
    return bool(mallopt(_M_MMAP_THRESHOLD, _LIMIT)) and bool(mallopt(_M_TRIM_THRESHOLD, _LIMIT))
