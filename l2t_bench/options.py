"""Small helpers shared by the ``l2t`` sub-commands: ``key=value`` overrides and output records."""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any, Iterable

import yaml


def parse_overrides(pairs: Iterable[str], what: str) -> dict[str, Any]:
    """``["lr=0.05", "hidden=[64]"]`` -> ``{"lr": 0.05, "hidden": [64]}`` (values read as YAML)."""
    out: dict[str, Any] = {}
    for pair in pairs or ():
        key, sep, value = pair.partition("=")
        if not sep or not key:
            raise SystemExit(f"error: {what} override {pair!r} is not of the form key=value")
        out[key.strip()] = yaml.safe_load(value)
    return out


def jsonable(value: Any) -> Any:
    """Make floats JSON-safe (NaN/inf become null) and tuples lists, recursively."""
    if isinstance(value, float):
        return value if math.isfinite(value) else None
    if isinstance(value, dict):
        return {str(k): jsonable(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [jsonable(v) for v in value]
    return value


def write_json(path: Path, data: Any) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(path.suffix + ".tmp")
    tmp.write_text(json.dumps(jsonable(data), indent=1))
    tmp.replace(path)
