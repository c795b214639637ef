"""A small on-disk cache for things that are slow to make and fixed by a seed (fitted inits, data).

Files live under ``$L2T_CACHE_DIR`` (default ``~/.cache/l2t-env``). Writes are atomic (a temp
file renamed into place) so that parallel workers never read half a file; a file that cannot be
read is treated as missing, and a cache that cannot be written is skipped.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any, Callable

import torch


def cache_root() -> Path:
    return Path(os.environ.get("L2T_CACHE_DIR", Path.home() / ".cache" / "l2t-env"))


def cached(path: Path, make: Callable[[], Any], valid: Callable[[Any], bool]) -> Any:
    """``torch.load(path)`` when it holds a valid object, else ``make()``, saved there for next time."""
    if path.is_file():
        try:
            obj = torch.load(path, map_location="cpu", weights_only=True)
        except Exception:  # a torn or foreign file: make it again
            obj = None
        if obj is not None and valid(obj):
            return obj
    obj = make()
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_name(f"{path.name}.tmp{os.getpid()}")
        torch.save(obj, tmp)
        tmp.replace(path)
    except OSError:
        pass  # a read-only home: the caller's memory cache still serves this process
    return obj
