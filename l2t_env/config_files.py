"""Where the built-in YAML configs live, in a clone and in an installed wheel."""

from __future__ import annotations

from pathlib import Path

import yaml


def config_dir(kind: str) -> Path:
    """The folder of built-in configs of one kind (``tasks``, ``agents`` or ``bench``).

    A clone keeps them in ``configs/`` at the repository root; a wheel installs the same folder
    as the package ``l2t_env.configs``. The clone's copy wins so that edits show at once.
    """
    repo = Path(__file__).resolve().parent.parent / "configs" / kind
    if repo.is_dir():
        return repo
    import importlib.resources

    return Path(str(importlib.resources.files("l2t_env.configs") / kind))


def builtin_names(kind: str) -> list[str]:
    """Names (file stems) of the built-in configs of one kind, sorted."""
    return sorted(p.stem for p in config_dir(kind).glob("*.yaml"))


def read_yaml(path: str | Path) -> dict:
    """Read a YAML mapping, with an error that names the file when it is not one."""
    path = Path(path)
    with path.open() as fh:
        data = yaml.safe_load(fh) or {}
    if not isinstance(data, dict):
        raise ValueError(f"{path}: expected a YAML mapping at the top level, got {type(data).__name__}")
    return data
