"""Small helpers shared by the ``l2t`` sub-commands: ``key=value`` overrides and output records."""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any, Iterable

import yaml


def parse_overrides(pairs: Iterable[str], what: str) -> dict[str, Any]:
    """``["lr=0.05", "hidden=[64]"]`` -> ``{"lr": 0.05, "hidden": [64]}`` (values read as YAML).

    A dotted key reaches into a mapping: ``loss_kwargs.init=ce`` -> ``{"loss_kwargs": {"init": "ce"}}``.
    """
    out: dict[str, Any] = {}
    for pair in pairs or ():
        key, sep, value = pair.partition("=")
        parts = [p.strip() for p in key.split(".")]
        if not sep or not all(parts):
            raise SystemExit(f"error: {what} override {pair!r} is not of the form key=value or key.subkey=value")
        nested: Any = yaml.safe_load(value)
        for part in reversed(parts[1:]):
            nested = {part: nested}
        out = merge_overrides(out, {parts[0]: nested})
    return out


def merge_overrides(base: dict[str, Any], overrides: dict[str, Any]) -> dict[str, Any]:
    """``base`` updated by ``overrides``, mappings merged key by key (neither input is changed)."""
    out = dict(base)
    for key, value in overrides.items():
        if isinstance(value, dict) and isinstance(out.get(key), dict):
            out[key] = merge_overrides(out[key], value)
        else:
            out[key] = value
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
