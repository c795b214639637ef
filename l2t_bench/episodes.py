"""Episodes that survive being killed: checkpoint env and teacher every N teaching steps, resume.

:func:`run_checkpointed_episode` is :func:`l2t_agents.run_episode` plus a checkpoint file: every
``checkpoint_every`` teaching steps it writes the env's state (``env.unwrapped.state_dict()``),
the teacher's (``teacher.state_dict()``), the partial episode record and the process-wide RNGs
(torch, numpy, random), atomically (a temporary file, fsynced, then renamed over the old one). A
rerun finds the file and continues from it; on CPU the final record equals the uninterrupted run's
(all but the wall time). The file is removed when the episode ends.
"""

from __future__ import annotations

import os
import random
from pathlib import Path
from typing import Any, Callable, Optional, Union

import gymnasium as gym
import numpy as np
import torch

from l2t_agents.base import Teacher
from l2t_agents.evaluation import EpisodeRecord, run_episode, start_episode

FORMAT = "l2t-episode-checkpoint/1"


def check_checkpoint_every(value: Any, what: str = "checkpoint_every") -> Optional[int]:
    """``None`` (no checkpoints) or an integer >= 1; anything else raises naming the value."""
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < 1:
        raise ValueError(f"{what}={value!r}: expected an integer >= 1 (teaching steps between checkpoints) or none")
    return int(value)


def save_atomic(obj: Any, path: Union[str, Path]) -> None:
    """``torch.save`` that never leaves a half-written ``path``: write a temporary file, fsync it,
    rename it over ``path``, fsync the folder."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    with open(tmp, "wb") as fh:
        torch.save(obj, fh)
        fh.flush()
        os.fsync(fh.fileno())
    os.replace(tmp, path)
    if hasattr(os, "O_DIRECTORY"):  # POSIX: make the rename itself durable
        fd = os.open(path.parent, os.O_RDONLY | os.O_DIRECTORY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)


def _process_rngs(device: torch.device) -> dict:
    return {
        "torch": torch.get_rng_state(),
        "cuda": torch.cuda.get_rng_state(device) if device.type == "cuda" else None,
        "numpy": np.random.get_state(),
        "random": random.getstate(),
    }


def _restore_process_rngs(state: dict, device: torch.device) -> None:
    torch.set_rng_state(state["torch"])
    if state["cuda"] is not None and device.type == "cuda":
        torch.cuda.set_rng_state(state["cuda"], device)
    np.random.set_state(state["numpy"])
    random.setstate(state["random"])


def write_checkpoint(path: Union[str, Path], env: gym.Env, teacher: Teacher, seed: int, record: EpisodeRecord) -> None:
    """Everything a rerun needs to continue this episode exactly, written atomically to ``path``."""
    core = env.unwrapped
    blob = {
        "format": FORMAT,
        "teacher_name": teacher.name,
        "task": core.config.name,
        "seed": int(seed),
        "env": core.state_dict(),
        "teacher": teacher.state_dict(),
        "record": record.to_dict(),
        "rng": _process_rngs(core.device),
    }
    save_atomic(blob, path)


def resume_checkpoint(path: Union[str, Path], env: gym.Env, teacher: Teacher, seed: int) -> tuple[EpisodeRecord, Any]:
    """Put ``env`` and ``teacher`` in the state saved at ``path``; return the partial record and the
    observation (through ``env``'s wrappers).

    A checkpoint of another teacher, task or seed raises, naming both, and changes nothing."""
    blob = torch.load(Path(path), map_location="cpu", weights_only=False)
    core = env.unwrapped
    if not isinstance(blob, dict) or blob.get("format") != FORMAT:
        raise ValueError(f"{path} is not an episode checkpoint (format {FORMAT!r}); remove it to start the run afresh")
    saved = (blob["teacher_name"], blob["task"], blob["seed"])
    mine = (teacher.name, core.config.name, int(seed))
    if saved != mine:
        raise ValueError(
            f"{path} holds teacher {saved[0]!r} on task {saved[1]!r}, seed {saved[2]}; this run is teacher {mine[0]!r} "
            f"on task {mine[1]!r}, seed {mine[2]}: remove the file to start this run afresh"
        )
    obs, _ = env.reset(options={"state": blob["env"]})
    teacher.reset(env)
    teacher.load_state_dict(blob["teacher"])
    attach = getattr(teacher, "attach", None)  # a teacher with device state binds to the env again
    if callable(attach):
        attach(env)
    _restore_process_rngs(blob["rng"], core.device)
    return EpisodeRecord(**blob["record"]), obs


def run_checkpointed_episode(
    env: gym.Env,
    teacher: Teacher,
    seed: int,
    *,
    checkpoint_every: Optional[int],
    path: Union[str, Path],
    on_step: Optional[Callable[[int, dict], Any]] = None,
    on_resume: Optional[Callable[[int], Any]] = None,
) -> EpisodeRecord:
    """:func:`~l2t_agents.evaluation.run_episode`, checkpointed to ``path`` every ``checkpoint_every``
    teaching steps and resumed from ``path`` when it exists (``on_resume(step)`` is told where).

    A checkpoint is written at the first step, ``checkpoint_every`` or more steps after the last,
    at which the teacher is :meth:`~l2t_agents.base.BaseTeacher.checkpointable`. ``checkpoint_every=None``
    runs the plain episode and writes nothing.
    """
    every = check_checkpoint_every(checkpoint_every)
    if every is None:
        return run_episode(env, teacher, seed, on_step=on_step)
    path = Path(path)
    if path.is_file():
        record, obs = resume_checkpoint(path, env, teacher, seed)
        if on_resume is not None:
            on_resume(record.steps)
    else:
        record, obs = start_episode(env, teacher, seed)
    last = record.steps

    def step(t: int, info: dict) -> None:
        nonlocal last
        if on_step is not None:
            on_step(t, info)
        ready = getattr(teacher, "checkpointable", lambda: True)()
        if "final" not in info and t - last >= every and ready:
            write_checkpoint(path, env, teacher, seed, record)
            last = t

    result = run_episode(env, teacher, seed, on_step=step, resume=(record, obs))
    for leftover in (path, path.with_name(path.name + ".tmp")):
        leftover.unlink(missing_ok=True)
    return result
