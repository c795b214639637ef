"""Episodes that survive being killed: checkpoint env and teacher every N teaching steps, resume.

:func:`run_checkpointed_episode` is :func:`l2t_agents.run_episode` plus a checkpoint file: every
``checkpoint_every`` teaching steps it writes the env's state (``env.unwrapped.state_dict()``),
the teacher's (``teacher.state_dict()``), the partial episode record and the process-wide RNGs
(torch, numpy, random), atomically (a temporary file, fsynced, then renamed over the old one). A
rerun finds the file and continues from it; on CPU the final record equals the uninterrupted run's
(all but the wall time). The file is removed when the episode ends.

:func:`run_checkpointed_episodes` is the same for the batched episodes of a native vector env
(:func:`l2t_agents.run_episodes`): the vector env's state (``L2TVectorEnv.state_dict()``, every
sub-env's), the teacher's (a stacked teacher's included), the N partial records and the process
RNGs, in one file; a resumed run's records equal the uninterrupted batched run's (on CPU).
"""

from __future__ import annotations

import os
import random
from pathlib import Path
from typing import Any, Callable, Optional, Sequence, Union

import gymnasium as gym
import numpy as np
import torch

from l2t_agents.base import Teacher
from l2t_agents.evaluation import EpisodeRecord, run_episode, run_episodes, start_episode, start_episodes

FORMAT = "l2t-episode-checkpoint/1"
BATCH_FORMAT = "l2t-batch-checkpoint/1"


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
    blob, obs = _restore(path, env, teacher, FORMAT, "seed", int(seed), "an episode checkpoint", "this run")
    return EpisodeRecord(**blob["record"]), obs


def _restore(path: Union[str, Path], env: gym.Env, teacher: Teacher, fmt: str, key: str, value: Any, what: str, this: str):
    """Load a checkpoint of ``fmt`` into ``env`` and ``teacher`` (and the process RNGs) after checking
    that it holds this teacher, task and ``key`` (seed or seeds); returns the blob and the observation."""
    blob = torch.load(Path(path), map_location="cpu", weights_only=False)
    core = env.unwrapped
    if not isinstance(blob, dict) or blob.get("format") != fmt:
        raise ValueError(f"{path} is not {what} (format {fmt!r}); remove it to start afresh")
    saved = (blob["teacher_name"], blob["task"], blob[key])
    mine = (teacher.name, core.config.name, value)
    if saved != mine:
        raise ValueError(
            f"{path} holds teacher {saved[0]!r} on task {saved[1]!r}, {key} {saved[2]}; {this} is teacher {mine[0]!r} "
            f"on task {mine[1]!r}, {key} {mine[2]}: remove the file to start afresh"
        )
    obs, _ = env.reset(options={"state": blob["env"]})
    teacher.reset(env)
    teacher.load_state_dict(blob["teacher"])
    attach = getattr(teacher, "attach", None)  # a teacher with device state binds to the env again
    if callable(attach):
        attach(env)
    _restore_process_rngs(blob["rng"], core.device)
    return blob, obs


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
    step = _checkpointing(
        on_step, teacher, every, record.steps, ended=lambda info: "final" in info,
        write=lambda: write_checkpoint(path, env, teacher, seed, record),
    )
    result = run_episode(env, teacher, seed, on_step=step, resume=(record, obs))
    _remove_checkpoint(path)
    return result


def _checkpointing(
    on_step: Optional[Callable[[int, dict], Any]],
    teacher: Teacher,
    every: int,
    last: int,
    ended: Callable[[dict], bool],
    write: Callable[[], Any],
) -> Callable[[int, dict], None]:
    """The ``on_step`` of a checkpointed run (one episode or a batch): pass the step on, then
    ``write()`` once ``every`` teaching steps have passed since ``last`` (the previous checkpoint or
    the resume point), the teacher can be saved, and the episodes have not ``ended(info)``."""

    def step(t: int, info: dict) -> None:
        nonlocal last
        if on_step is not None:
            on_step(t, info)
        ready = getattr(teacher, "checkpointable", lambda: True)()
        if t - last >= every and ready and not ended(info):
            write()
            last = t

    return step


def _remove_checkpoint(path: Path) -> None:
    """A finished run leaves no checkpoint (nor a half-written one) behind."""
    for leftover in (path, path.with_name(path.name + ".tmp")):
        leftover.unlink(missing_ok=True)


def write_batch_checkpoint(path: Union[str, Path], env: gym.vector.VectorEnv, teacher: Teacher, seeds: Sequence[int], records: list[EpisodeRecord]) -> None:
    """:func:`write_checkpoint` for the batched episodes of a vector env (one file for all seeds)."""
    core = env.unwrapped
    blob = {
        "format": BATCH_FORMAT,
        "teacher_name": teacher.name,
        "task": core.config.name,
        "seeds": [int(s) for s in seeds],
        "env": core.state_dict(),
        "teacher": teacher.state_dict(),
        "records": [record.to_dict() for record in records],
        "rng": _process_rngs(core.device),
    }
    save_atomic(blob, path)


def resume_batch_checkpoint(
    path: Union[str, Path], env: gym.vector.VectorEnv, teacher: Teacher, seeds: Sequence[int]
) -> tuple[list[EpisodeRecord], Any]:
    """Put the vector ``env`` and ``teacher`` in the state saved at ``path``; return the partial
    records and the observation. A checkpoint of another teacher, task or seeds raises, naming
    both, and changes nothing."""
    blob, obs = _restore(path, env, teacher, BATCH_FORMAT, "seeds", [int(s) for s in seeds], "a batched episode checkpoint", "this run")
    return [EpisodeRecord(**record) for record in blob["records"]], obs


def run_checkpointed_episodes(
    env: gym.vector.VectorEnv,
    teacher: Teacher,
    seeds: Sequence[int],
    *,
    checkpoint_every: Optional[int],
    path: Optional[Union[str, Path]],
    on_step: Optional[Callable[[int, dict], Any]] = None,
    on_resume: Optional[Callable[[int], Any]] = None,
) -> list[EpisodeRecord]:
    """:func:`~l2t_agents.evaluation.run_episodes` on the vector ``env`` (sub-env ``i`` seeded
    ``seeds[i]``), checkpointed to ``path`` every ``checkpoint_every`` teaching steps and resumed
    from ``path`` when it exists (``on_resume(step)`` is told where); as
    :func:`run_checkpointed_episode`, the file is removed at the end."""
    every = check_checkpoint_every(checkpoint_every)
    seeds = [int(s) for s in seeds]
    if every is None:
        return run_episodes(env, teacher, seeds, on_step=on_step)
    if path is None:
        raise ValueError(f"checkpoint_every={every} needs a checkpoint path")
    path = Path(path)
    if path.is_file():
        records, obs = resume_batch_checkpoint(path, env, teacher, seeds)
        if on_resume is not None:
            on_resume(max(record.steps for record in records))
    else:
        records, obs = start_episodes(env, teacher, seeds)
    step = _checkpointing(
        on_step, teacher, every, max(record.steps for record in records), ended=lambda info: all(record.final for record in records),
        write=lambda: write_batch_checkpoint(path, env, teacher, seeds, records),
    )
    result = run_episodes(env, teacher, seeds, on_step=step, resume=(records, obs))
    _remove_checkpoint(path)
    return result
