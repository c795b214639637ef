"""Teachers for ``L2T-v0``: the L2T-DLN LSTM teacher, the baselines, and SB3 agents.

Everything here builds on the env's public API (and the documented differentiable hooks on
``env.unwrapped``); nothing in ``l2t_env`` imports this package.
"""

from agents.base import BaseTeacher, Teacher, available_teachers, make_teacher, register_teacher
from agents.evaluation import EpisodeRecord, make_env, run_episode

__all__ = [
    "BaseTeacher",
    "EpisodeRecord",
    "Teacher",
    "available_teachers",
    "make_env",
    "make_teacher",
    "register_teacher",
    "run_episode",
]
