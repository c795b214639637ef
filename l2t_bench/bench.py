"""``l2t bench``: placeholder until the harness lands (being written)."""

from __future__ import annotations

from typing import Any


def add_parser(subparsers: Any) -> None:
    p = subparsers.add_parser("bench", help="benchmark teachers x tasks x seeds from a config")
    p.add_argument("--config", required=True)
    p.add_argument("--out", required=True)
    p.set_defaults(func=lambda args: (_ for _ in ()).throw(NotImplementedError("bench")))
