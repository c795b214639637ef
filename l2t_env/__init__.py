"""l2t-env: learning to teach with dynamic loss functions, as a Gymnasium environment.

``import l2t_env`` registers ``L2T-v0`` and nothing else: torch, the data and the students are
imported only when an environment is made. ``gym.make("l2t_env:L2T-v0")`` works without the import.
"""

from __future__ import annotations

from typing import Any

from gymnasium.envs.registration import register, registry

__version__ = "0.1.0"
ENV_ID = "L2T-v0"

if ENV_ID not in registry:
    register(id=ENV_ID, entry_point="l2t_env.env:L2TEnv", vector_entry_point="l2t_env.vector_env:L2TVectorEnv")

_LAZY = {
    "L2TEnv": "l2t_env.env",
    "L2TVectorEnv": "l2t_env.vector_env",
    "TaskConfig": "l2t_env.tasks",
    "RawData": "l2t_env.tasks",
    "load_task": "l2t_env.tasks",
    "available_tasks": "l2t_env.tasks",
    "LossFamily": "l2t_env.losses",
    "DynamicLossNetwork": "l2t_env.losses",
    "make_loss_family": "l2t_env.losses",
}

__all__ = ["ENV_ID", "__version__", *_LAZY]


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        import importlib

        return getattr(importlib.import_module(_LAZY[name]), name)
    raise AttributeError(f"module 'l2t_env' has no attribute {name!r}")
