"""The teacher registry's lookups: by name, with the built-in teachers imported on first use.

``l2t_agents.base`` holds the registry itself (``TEACHERS``, ``register_teacher``), which every
teacher module imports; this module stands above the teacher modules, importing them to fill it,
so no teacher module and the base import each other.
"""

from __future__ import annotations

from typing import Any

from l2t_agents.base import TEACHERS, Teacher

#: Built-in teachers that need an optional extra, by the extra's name; the missing ones are named,
#: not hidden, when the extra is not installed.
EXTRA_TEACHERS: dict[str, tuple[str, ...]] = {"sb3": ("a2c", "ppo", "sac", "td3")}
_MISSING_EXTRAS: dict[str, str] = {}  # extra -> why its import failed


def _ensure_builtin_teachers() -> None:
    import l2t_agents.baselines  # noqa: F401
    import l2t_agents.l2t_dfm  # noqa: F401
    import l2t_agents.l2t_dlf  # noqa: F401
    import l2t_agents.l2t_dln  # noqa: F401

    try:
        import l2t_agents.sb3_teachers  # noqa: F401
    except ImportError as err:  # stable-baselines3 not installed: its teachers need the extra
        _MISSING_EXTRAS["sb3"] = str(err)


def available_teachers() -> list[str]:
    """The registered teachers (those whose dependencies are installed), sorted."""
    _ensure_builtin_teachers()
    return sorted(TEACHERS)


def unavailable_teachers() -> dict[str, str]:
    """Built-in teachers whose extra is not installed: name -> the extra that adds them."""
    _ensure_builtin_teachers()
    return {name: extra for extra in _MISSING_EXTRAS for name in EXTRA_TEACHERS[extra] if name not in TEACHERS}


def make_teacher(name: str, **kwargs: Any) -> Teacher:
    """A teacher by registry name; unknown names raise with the list of valid ones."""
    _ensure_builtin_teachers()
    if name not in TEACHERS:
        extra = unavailable_teachers().get(name)
        if extra is not None:
            raise ImportError(
                f"teacher {name!r} needs the {extra!r} extra ({_MISSING_EXTRAS[extra]}): pip install 'l2t-env[{extra}]'"
            )
        raise ValueError(f"unknown teacher {name!r}; valid: {sorted(TEACHERS)}")
    return TEACHERS[name](**kwargs)
