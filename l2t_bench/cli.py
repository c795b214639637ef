"""``l2t``: the command line (``l2t teach``, ``l2t bench``, ``l2t train``, ``l2t list``)."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Optional, Sequence

from l2t_bench import bench, teach, train
from l2t_bench.allocator import keep_large_blocks
from l2t_bench.numerics import is_pinned, run_pinned


def list_things(args: argparse.Namespace) -> int:
    from l2t_agents.registry import available_teachers, unavailable_teachers
    from l2t_env.config_files import builtin_names

    print("tasks:    " + ", ".join(builtin_names("tasks")))
    print("teachers: " + ", ".join(available_teachers()))
    missing = unavailable_teachers()
    for extra in sorted(set(missing.values())):
        names = sorted(n for n, e in missing.items() if e == extra)
        print(f"          not installed: {', '.join(names)} (pip install 'l2t-env[{extra}]')")
    print("benches:  " + ", ".join(builtin_names("bench")))
    import l2t_agents

    trained = sorted(p.name for p in (Path(l2t_agents.__file__).resolve().parent / "trained").glob("*.zip"))
    if trained:
        print("trained agents (load: trained/NAME in a bench config): " + ", ".join(trained))
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="l2t", description="Learning to teach with dynamic loss functions.")
    sub = parser.add_subparsers(dest="command", required=True)
    teach.add_parser(sub)
    bench.add_parser(sub)
    train.add_parser(sub)
    p = sub.add_parser("list", help="list built-in tasks, teachers and benchmark configs")
    p.set_defaults(func=list_things)
    return parser


def main(argv: Optional[Sequence[str]] = None) -> int:
    args = build_parser().parse_args(argv)
    if getattr(args, "pin_numerics", False) and not is_pinned():  # the pins must be set before torch loads
        return run_pinned(list(sys.argv[1:] if argv is None else argv), replace=argv is None)
    keep_large_blocks()  # batched teachers allocate big tensors: keep them in the heap (l2t_bench/allocator.py)
    try:
        return args.func(args)
    except (ValueError, FileNotFoundError, ImportError) as err:
        print(f"error: {err}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
