"""Run a teacher on an env for an episode and record what happened: one plain function
(:func:`run_episode`), and its batched twin for a native vector env (:func:`run_episodes`)."""

from __future__ import annotations

import time
from dataclasses import asdict, dataclass, field
from typing import Any, Callable, Optional, Sequence, Union

import gymnasium as gym
import numpy as np

from l2t_agents.base import Teacher

CURVE_KEYS = ("val_loss", "val_acc", "train_loss", "train_acc", "loss_value", "grad_norm")
#: curves of the env's ``info["monitor"]`` (``monitor_every``): the teaching step and the whole
#: validation and test splits' accuracy there, for early stopping
MONITOR_CURVES = ("monitor_step", "monitor_val_acc", "monitor_test_acc")


@dataclass
class EpisodeRecord:
    """One teaching episode: per-step curves and the final student's metrics.

    ``curves["val_loss"]`` and ``curves["val_acc"]`` start with the value before teaching (one more
    entry than steps); the other curves hold one entry per teaching step. With the env's
    ``monitor_every``, ``curves["monitor_step"]``, ``["monitor_val_acc"]`` and
    ``["monitor_test_acc"]`` hold the monitored steps (0 = before teaching) and the whole splits'
    accuracies there; :meth:`early_stopped` reads them.
    """

    teacher: str
    task: str
    seed: int
    steps: int = 0
    student_steps: int = 0
    diverged: bool = False
    wall_time: float = 0.0
    final: dict = field(default_factory=dict)
    curves: dict = field(default_factory=lambda: {k: [] for k in (*CURVE_KEYS, "reward")})

    def to_dict(self) -> dict:
        return asdict(self)

    def monitor(self, step: int, monitor: dict) -> None:
        """Append the env's ``info["monitor"]`` of teaching step ``step``."""
        for key, value in (("monitor_step", step), ("monitor_val_acc", monitor["val_acc"]), ("monitor_test_acc", monitor["test_acc"])):
            self.curves.setdefault(key, []).append(value)

    def early_stopped(self) -> dict:
        """Early stopping read off the monitored steps: ``best_val_step`` (the first step of the best
        whole-validation accuracy; ties go to the earliest), ``best_whole_val_acc`` and
        ``test_acc_at_best_val`` (the test accuracy of the student at that step). Selection uses the
        validation split only. None each without monitored steps."""
        return early_stopped(self.curves)


def early_stopped(curves: dict) -> dict:
    """:meth:`EpisodeRecord.early_stopped` for a record's ``curves`` (also as read back from JSON)."""
    steps, val, test = (curves.get(key) or [] for key in MONITOR_CURVES)
    finite = [i for i, v in enumerate(val) if v is not None and np.isfinite(v)]
    if not finite:
        return {"best_val_step": None, "best_whole_val_acc": None, "test_acc_at_best_val": None}
    best = max(finite, key=lambda i: (val[i], -i))  # the highest accuracy, then the earliest step
    return {"best_val_step": int(steps[best]), "best_whole_val_acc": float(val[best]), "test_acc_at_best_val": float(test[best])}


def _monitored(info: dict, i: Optional[int] = None) -> Optional[dict]:
    """Sub-env ``i``'s (or the single env's) ``info["monitor"]``, if this step has one."""
    monitor = info.get("monitor")
    if monitor is None:
        return None
    if i is None:
        return monitor
    if not info["_monitor"][i]:
        return None
    return {key: float(monitor[key][i]) for key in ("val_acc", "test_acc")}


def start_episode(env: gym.Env, teacher: Teacher, seed: int) -> tuple[EpisodeRecord, Any]:
    """``reset(seed=seed)`` the env and start the teacher on it: the record so far and the observation."""
    task = getattr(env.unwrapped, "config", None)
    record = EpisodeRecord(teacher=teacher.name, task=getattr(task, "name", "?"), seed=int(seed))
    start = time.perf_counter()
    obs, info = env.reset(seed=int(seed))
    teacher.reset(env)
    record.curves["val_loss"].append(info["val_loss"])
    record.curves["val_acc"].append(info["val_acc"])
    if (monitor := _monitored(info)) is not None:
        record.monitor(0, monitor)
    record.wall_time = time.perf_counter() - start
    return record, obs


def run_episode(
    env: gym.Env,
    teacher: Teacher,
    seed: int,
    on_step: Optional[Callable[[int, dict], Any]] = None,
    *,
    resume: Optional[tuple[EpisodeRecord, Any]] = None,
) -> EpisodeRecord:
    """Teach one student from ``reset(seed=seed)`` to the episode's end.

    ``on_step(t, info)`` is called after each step (a progress bar, a logger, a checkpoint).
    ``resume``: ``(record, obs)`` of an episode that ``env`` and ``teacher`` already hold at the
    record's ``steps``-th step (from :func:`start_episode`, or restored from a checkpoint); it is
    continued, with no reset, and the record returned.
    """
    record, obs = start_episode(env, teacher, seed) if resume is None else resume
    start = time.perf_counter() - record.wall_time
    done = False
    while not done:
        action = teacher.act(obs)
        obs, reward, terminated, truncated, info = env.step(action)
        teacher.observe(obs, reward, terminated, truncated, info)
        done = terminated or truncated
        for key in CURVE_KEYS:
            record.curves[key].append(info[key])
        record.curves["reward"].append(reward)
        record.steps += 1
        if (monitor := _monitored(info)) is not None:
            record.monitor(record.steps, monitor)
        record.wall_time = time.perf_counter() - start
        if on_step is not None:
            on_step(record.steps, info)
    record.student_steps = info["student_steps"]
    record.diverged = bool(info["diverged"])
    record.final = dict(info["final"])
    return record


def _teacher_env_kwargs(teacher: Teacher, env_kwargs: dict) -> dict:
    for key, value in teacher.env_kwargs.items():
        if key in env_kwargs and env_kwargs[key] != value:
            raise ValueError(f"teacher {teacher.name!r} needs {key}={value!r}, got {key}={env_kwargs[key]!r}")
    return {**env_kwargs, **teacher.env_kwargs}


def make_env(teacher: Teacher, task: Any = "digits-mlp", **env_kwargs: Any) -> gym.Env:
    """``gym.make("L2T-v0")`` with what the teacher needs (``teacher.env_kwargs``) under the caller's.

    A caller's keyword that contradicts the teacher's requirement raises rather than run a
    different experiment than asked for.
    """
    return gym.make("L2T-v0", task=task, **_teacher_env_kwargs(teacher, env_kwargs))


def make_vector_env(teacher: Teacher, num_envs: int, task: Any = "digits-mlp", **env_kwargs: Any) -> gym.vector.VectorEnv:
    """:func:`make_env`'s native vector env: ``num_envs`` students batched (``L2TVectorEnv``)."""
    if not getattr(teacher, "batched", False):
        raise ValueError(f"teacher {teacher.name!r} does not act on batches (its class has batched = False)")
    kwargs = _teacher_env_kwargs(teacher, env_kwargs)
    return gym.make_vec("L2T-v0", num_envs=num_envs, vectorization_mode="vector_entry_point", task=task, **kwargs)


def run_episodes(
    env: gym.vector.VectorEnv,
    teacher: Teacher,
    seed: Union[int, Sequence[int]],
    on_step: Optional[Callable[[int, dict], Any]] = None,
    *,
    resume: Optional[tuple[list[EpisodeRecord], Any]] = None,
) -> list[EpisodeRecord]:
    """Teach the N students of a vector env, one episode each, from ``reset(seed=seed)``
    (sub-env ``i`` gets ``seed + i``, or ``seed[i]`` for a list): one record per sub-env, as
    :func:`run_episode` would write it for that seed. The teacher acts on the batch.

    Each sub-env is recorded until its own episode ends (a diverged one early; the steps the
    vector env then takes for it belong to its next episode and are not recorded). A record's
    ``wall_time`` is the batched run's wall time divided by N (the per-seed share).
    ``on_step(t, info)`` is called after each step with the vector info (a logger, a checkpoint).
    ``resume``: ``(records, obs)`` of episodes that ``env`` and ``teacher`` already hold at step
    ``max(record.steps)`` (from :func:`start_episodes`, or restored from a checkpoint); they are
    continued, with no reset (a record with a ``final`` is finished), and returned.
    """
    records, obs = start_episodes(env, teacher, seed) if resume is None else resume
    n = env.num_envs
    if len(records) != n:
        raise ValueError(f"run_episodes: resume holds {len(records)} records for a vector env of num_envs={n}")
    start = time.perf_counter() - records[0].wall_time * n
    active = np.array([not record.final for record in records], dtype=bool)
    t = max(record.steps for record in records)
    while active.any():
        action = teacher.act(obs)
        obs, reward, terminated, truncated, info = env.step(action)
        teacher.observe(obs, reward, terminated, truncated, info)
        t += 1
        done = terminated | truncated
        for i in np.flatnonzero(active):
            record = records[i]
            for key in CURVE_KEYS:
                record.curves[key].append(float(info[key][i]))
            record.curves["reward"].append(float(reward[i]))
            record.steps += 1
            if (monitor := _monitored(info, i)) is not None:
                record.monitor(record.steps, monitor)
            if done[i]:
                record.student_steps = int(info["student_steps"][i])
                record.diverged = bool(info["diverged"][i])
                record.final = {key: float(value[i]) for key, value in info["final"].items() if not key.startswith("_")}
        active &= ~done
        wall = (time.perf_counter() - start) / n
        for record in records:
            record.wall_time = wall
        if on_step is not None:
            on_step(t, info)
    return records


def start_episodes(env: gym.vector.VectorEnv, teacher: Teacher, seed: Union[int, Sequence[int]]) -> tuple[list[EpisodeRecord], Any]:
    """:func:`start_episode` for a vector env: ``reset(seed=seeds)`` (sub-env ``i`` gets ``seed + i``,
    or ``seed[i]`` for a list), the teacher started on it; the records so far and the observation."""
    n = env.num_envs
    seeds = [int(seed) + i for i in range(n)] if isinstance(seed, (int, np.integer)) else [int(s) for s in seed]
    if len(seeds) != n:
        raise ValueError(f"run_episodes: {len(seeds)} seeds for a vector env of num_envs={n}")
    task = getattr(env.unwrapped, "config", None)
    records = [EpisodeRecord(teacher=teacher.name, task=getattr(task, "name", "?"), seed=s) for s in seeds]
    start = time.perf_counter()
    obs, info = env.reset(seed=seeds)
    teacher.reset(env)
    for i, record in enumerate(records):
        record.curves["val_loss"].append(float(info["val_loss"][i]))
        record.curves["val_acc"].append(float(info["val_acc"][i]))
        if (monitor := _monitored(info, i)) is not None:
            record.monitor(0, monitor)
    wall = (time.perf_counter() - start) / n
    for record in records:
        record.wall_time = wall
    return records, obs

