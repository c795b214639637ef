"""The one interface every teacher implements, and the registry that names them (filled by
the teacher modules; looked up through :mod:`l2t_agents.registry`).

A teacher acts on ``L2T-v0`` through the standard Gymnasium API. The loop that drives it is
:func:`l2t_agents.evaluation.run_episode`::

    obs, info = env.reset(seed=seed)
    teacher.reset(env)                       # a new episode (and a new student)
    while not done:
        action = teacher.act(obs)            # a gradient teacher may learn here through hooks
        obs, reward, terminated, truncated, info = env.step(action)
        teacher.observe(obs, reward, terminated, truncated, info)

``env_kwargs`` says what the teacher needs from the env (``loss="ce"``, a look-ahead, an action
mode); the harness makes every env with them. ``learning`` switches between online teaching
(learn while teaching, as the paper) and frozen acting (load a saved teacher and only act).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Callable, ClassVar, Protocol, Union, runtime_checkable

import gymnasium as gym
import numpy as np
import torch

Action = Union[np.ndarray, torch.Tensor]


@runtime_checkable
class Teacher(Protocol):
    """What the runner, the CLI and the benchmark need from a teacher."""

    name: str
    env_kwargs: dict
    learning: bool

    def reset(self, env: gym.Env) -> None:
        """Start an episode on ``env`` (already reset); clear per-episode state, keep what was learnt."""

    def act(self, obs: Any) -> Action:
        """The action for this observation (an element of ``env.action_space``)."""

    def observe(self, obs: Any, reward: float, terminated: bool, truncated: bool, info: dict) -> None:
        """The env's answer to the last action; a learning teacher may update itself here."""

    def state_dict(self) -> dict:
        """Everything needed to continue exactly: weights, optimiser, recurrent state, RNG."""

    def load_state_dict(self, state: dict) -> None:
        """Restore what :meth:`state_dict` returned."""

    def save(self, path: Union[str, Path]) -> None: ...

    def load(self, path: Union[str, Path]) -> None: ...


class BaseTeacher:
    """Defaults for the protocol: no per-episode state, nothing to learn, torch-file save/load."""

    name: ClassVar[str] = ""
    env_kwargs: ClassVar[dict] = {}
    #: acts on a native vector env (``gym.make_vec(..., vectorization_mode="vector_entry_point")``):
    #: batched observations in, one action row per sub-env out
    batched: ClassVar[bool] = False
    #: a simple method with no teacher (a fixed loss, or plain CE on chosen data): the benchmark
    #: compares every row with the best such baseline of its task
    baseline: ClassVar[bool] = False

    def __init__(self) -> None:
        self.learning = True
        self.env: gym.Env | None = None

    def reset(self, env: gym.Env) -> None:
        self.env = env

    def act(self, obs: Any) -> Action:  # pragma: no cover - abstract
        raise NotImplementedError

    def observe(self, obs: Any, reward: float, terminated: bool, truncated: bool, info: dict) -> None:
        return None

    def state_dict(self) -> dict:
        return {}

    def load_state_dict(self, state: dict) -> None:
        return None

    def checkpointable(self) -> bool:
        """Whether :meth:`state_dict` now holds all of the teacher's state, so that a mid-episode
        checkpoint resumes exactly (a teacher part-way through a multi-step update is not)."""
        return True

    def save(self, path: Union[str, Path]) -> None:
        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        torch.save({"teacher": self.name, "state": self.state_dict()}, path)

    def load(self, path: Union[str, Path]) -> None:
        blob = torch.load(Path(path), map_location="cpu", weights_only=False)
        self.check_saved_by_me(blob.get("teacher"), path)
        self.load_state_dict(blob["state"])

    def check_saved_by_me(self, saved_name: Any, source: Any) -> None:
        """Refuse state that another kind of teacher saved (``source``: where it came from)."""
        if saved_name != self.name:
            raise ValueError(f"{source} holds a {saved_name!r} teacher, not {self.name!r}")


def is_vector_env(env: Any) -> bool:
    """Whether ``env`` is a Gymnasium vector env (a teacher then acts on batches)."""
    return isinstance(getattr(env, "unwrapped", env), gym.vector.VectorEnv)


TEACHERS: dict[str, Callable[..., Teacher]] = {}


def register_teacher(name: str) -> Callable:
    """Class decorator: make a teacher available to ``make_teacher`` (:mod:`l2t_agents.registry`) and the CLI by name."""

    def wrap(cls):
        cls.name = name
        TEACHERS[name] = cls
        return cls

    return wrap
