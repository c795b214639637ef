"""Teachers with experience: meta-train a learning teacher over many episodes, then evaluate it.

The paper's L2T-DLN teacher learns online within one student run. Here it keeps learning across a
list of training episodes (seeds, and optionally tasks): every episode is a new student and a new
DLN, so :meth:`~l2t_agents.base.Teacher.reset` clears the teacher's memory (the LSTM's hidden and
cell states) while its weights and Adam state carry over. The result is saved and evaluated on
held-out seeds, frozen (``teacher.learning = False``) or still learning online.

Training seeds and evaluation seeds must be disjoint: :func:`check_disjoint_seeds` refuses any
overlap, so a pretrained teacher is never scored on a student it was trained on.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from itertools import cycle, islice, product
from typing import Any, Callable, Optional, Sequence

from l2t_agents.base import Teacher
from l2t_agents.evaluation import EpisodeRecord, make_env, run_episode


def check_disjoint_seeds(train_seeds: Sequence[int], eval_seeds: Sequence[int]) -> None:
    """Raise if a seed is both a training and an evaluation seed (naming the shared ones)."""
    shared = sorted(set(train_seeds) & set(eval_seeds))
    if shared:
        raise ValueError(
            f"pretraining seeds and evaluation seeds share {shared}: a teacher must not be evaluated on a seed "
            f"it was trained on; training seeds={list(train_seeds)}, evaluation seeds={list(eval_seeds)}"
        )


@dataclass
class PretrainPlan:
    """What a teacher is meta-trained on: ``episodes`` episodes cycling over ``tasks`` x ``seeds``.

    The episodes visit every (task, seed) pair in turn (tasks outer, seeds inner) and start over
    when ``episodes`` exceeds their number; ``episodes=None`` means one pass.
    """

    seeds: list[int]
    tasks: list[Any] = field(default_factory=lambda: ["digits-mlp"])
    episodes: Optional[int] = None

    def __post_init__(self) -> None:
        if not isinstance(self.seeds, (list, tuple)) or not self.seeds or not all(
            isinstance(s, int) and not isinstance(s, bool) and s >= 0 for s in self.seeds
        ):
            raise ValueError(f"pretrain seeds={self.seeds!r}: expected a non-empty list of integers >= 0")
        if len(set(self.seeds)) != len(self.seeds):
            raise ValueError(f"pretrain seeds={self.seeds!r} repeat a seed")
        if not isinstance(self.tasks, (list, tuple)) or not self.tasks:
            raise ValueError(f"pretrain tasks={self.tasks!r}: expected a non-empty list of tasks")
        if self.episodes is not None and not (
            isinstance(self.episodes, int) and not isinstance(self.episodes, bool) and self.episodes >= 1
        ):
            raise ValueError(f"pretrain episodes={self.episodes!r}: expected an integer >= 1")
        self.seeds, self.tasks = list(self.seeds), list(self.tasks)

    def schedule(self) -> list[tuple[Any, int]]:
        """The (task, seed) of every training episode, in order."""
        pairs = list(product(self.tasks, self.seeds))
        return list(islice(cycle(pairs), self.episodes if self.episodes is not None else len(pairs)))


def pretrain(
    teacher: Teacher,
    plan: PretrainPlan,
    *,
    env_kwargs: Optional[dict] = None,
    make_task_env: Optional[Callable[[Teacher, Any], Any]] = None,
    eval_seeds: Sequence[int] = (),
    on_episode: Optional[Callable[[int, EpisodeRecord], Any]] = None,
) -> list[EpisodeRecord]:
    """Teach ``plan.schedule()``'s episodes with one learning teacher; return their records.

    Each episode's env is ``make_env(teacher, task, **env_kwargs)``, or ``make_task_env(teacher, task)``
    when given (a harness whose tasks carry their own overrides).
    ``eval_seeds``, when given, are checked to be disjoint from the training seeds first.
    ``on_episode(i, record)`` is called after each episode (progress, logging).
    """
    check_disjoint_seeds(plan.seeds, eval_seeds)
    if not teacher.learning:
        raise ValueError(f"teacher {teacher.name!r} is frozen (learning=False): pretraining needs a learning teacher")
    return run_episodes(teacher, plan.schedule(), env_kwargs=env_kwargs, make_task_env=make_task_env, on_episode=on_episode)


def run_episodes(
    teacher: Teacher,
    schedule: Sequence[tuple[Any, int]],
    *,
    env_kwargs: Optional[dict] = None,
    make_task_env: Optional[Callable[[Teacher, Any], Any]] = None,
    on_episode: Optional[Callable[[int, EpisodeRecord], Any]] = None,
    on_step: Optional[Callable[[int, dict], Any]] = None,
) -> list[EpisodeRecord]:
    """One teacher, one episode per (task, seed) of ``schedule``, in order (learning or frozen, as
    the teacher is); see :func:`pretrain` for the arguments."""
    records = []
    for i, (task, seed) in enumerate(schedule):
        env = make_task_env(teacher, task) if make_task_env else make_env(teacher, task, **(env_kwargs or {}))
        try:
            record = run_episode(env, teacher, seed, on_step=on_step)  # teacher.reset(env) clears the memory
        finally:
            env.close()
        records.append(record)
        if on_episode is not None:
            on_episode(i, record)
    return records

def save_pretrained(teacher: Teacher, path: Any, records: Sequence[EpisodeRecord], wall_time: Optional[float] = None) -> None:
    """Save the teacher as :meth:`~l2t_agents.base.BaseTeacher.save` does, plus what it was trained on
    (``meta``: episodes, per-episode task/seed/test accuracy, wall time); written atomically, so an
    interrupted run never leaves a half-written teacher to be reused."""
    import torch
    from pathlib import Path

    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    meta = {
        "episodes": len(records),
        "train_time": wall_time,
        "history": [{"task": r.task, "seed": r.seed, "test_acc": r.final.get("test_acc")} for r in records],
    }
    tmp = path.with_name(path.name + ".tmp")
    torch.save({"teacher": teacher.name, "state": teacher.state_dict(), "meta": meta}, tmp)
    tmp.replace(path)


def pretrained_meta(path: Any) -> dict:
    """The ``meta`` that :func:`save_pretrained` stored with a teacher ({} for a plain save)."""
    import torch

    return torch.load(path, map_location="cpu", weights_only=False).get("meta", {})
