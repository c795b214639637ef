"""Teachers for ``L2T-v0``: the L2T-DLN LSTM teacher, the baselines, and SB3 agents.

Everything here builds on the env's public API (and the documented differentiable hooks on
``env.unwrapped``); nothing in ``l2t_env`` imports this package.

The folder is ``agents/`` in the repository but the package installs as ``l2t_agents``: the import
name ``agents`` is taken by other widely installed distributions (the OpenAI Agents SDK among
them), and two distributions installing one top-level name overwrite each other.
"""

from l2t_agents.base import BaseTeacher, Teacher, register_teacher
from l2t_agents.registry import available_teachers, make_teacher
from l2t_agents.evaluation import EpisodeRecord, make_env, make_vector_env, run_episode, run_episodes

__all__ = [
    "BaseTeacher",
    "EpisodeRecord",
    "Teacher",
    "available_teachers",
    "make_env",
    "make_teacher",
    "make_vector_env",
    "register_teacher",
    "run_episode",
    "run_episodes",
]
