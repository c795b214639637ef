"""What an SB3 teacher's policy sees, and on which seeds it trains: env wrappers that need no SB3.

:func:`layer_summary` (the ``summary`` observation: the student state and three numbers per DLN
layer instead of the 10,008-number Dict; see :mod:`l2t_agents.sb3_teachers` for why) and
:class:`SeedSchedule` (training resets walk through the training seeds, whatever seed the
vectorised env passes).
"""

from __future__ import annotations

from typing import Any, Optional, Sequence, Union

import gymnasium as gym
import numpy as np
from gymnasium import spaces

_SUMMARY_BOUND = 1e6
_SUMMARY_FEATURES = ("log10_rms_loss_grad", "rms_phi", "mean_phi")


def layer_summary(obs: dict, groups: Sequence[Sequence]) -> dict[str, np.ndarray]:
    """The ``summary`` observation: the student state and, per DLN layer ``(name, start, stop)``,
    ``log10 rms(loss_grad)``, ``rms(phi)`` and ``mean(phi)``.

    The hypergradient's scale spans orders of magnitude over an episode, hence its logarithm.
    """
    grad = np.asarray(obs["loss_grad"], dtype=np.float64)
    phi = np.asarray(obs["loss_params"], dtype=np.float64)
    feats = []
    for _, start, stop in groups:
        g, p = grad[start:stop], phi[start:stop]
        feats += [np.log10(np.sqrt(np.mean(g**2)) + 1e-12), np.sqrt(np.mean(p**2)), np.mean(p)]
    layers = np.clip(np.asarray(feats), -_SUMMARY_BOUND, _SUMMARY_BOUND).astype(np.float32)
    return {"student": np.asarray(obs["student"], dtype=np.float32), "layers": layers}


def summary_space(student_space: spaces.Box, n_layers: int) -> spaces.Dict:
    """The observation space of :func:`layer_summary`."""
    n = len(_SUMMARY_FEATURES) * n_layers
    return spaces.Dict(
        {"student": student_space, "layers": spaces.Box(-_SUMMARY_BOUND, _SUMMARY_BOUND, (n,), np.float32)}
    )


def summary_space_of(observation_space: spaces.Space, groups: Sequence[Sequence]) -> spaces.Dict:
    """:func:`summary_space` for an ``L2T-v0`` observation space; raises unless it has ``loss_grad``."""
    if not isinstance(observation_space, spaces.Dict) or "loss_grad" not in observation_space.spaces:
        raise ValueError("the summary observation needs L2T-v0's Dict observation with loss_grad (a look-ahead)")
    return summary_space(observation_space["student"], len(groups))


def env_groups(env: Union[gym.Env, gym.vector.VectorEnv]) -> list[list]:
    """The env's (or vector env's) action groups (one per DLN layer) as JSON-able ``[name, start, stop]``."""
    return [[name, s.start, s.stop] for name, s in env.unwrapped.groups]


class LayerSummary(gym.ObservationWrapper):
    """Replaces ``L2T-v0``'s Dict observation with :func:`layer_summary`'s compact Dict."""

    def __init__(self, env: gym.Env) -> None:
        super().__init__(env)
        self.groups = env_groups(env)
        self.observation_space = summary_space_of(env.observation_space, self.groups)

    def observation(self, observation: dict) -> dict:
        return layer_summary(observation, self.groups)


class SeedSchedule(gym.Wrapper):
    """Resets with the next seed of a fixed list, ignoring the seed it is given.

    So training sees exactly the training seeds, in turn (env ``i`` of ``n`` starts at the
    ``i``-th seed and strides by ``n``), whatever the vectorised env passes to ``reset``.
    """

    def __init__(self, env: gym.Env, seeds: Sequence[int], start: int = 0, stride: int = 1) -> None:
        super().__init__(env)
        if len(seeds) == 0:
            raise ValueError("SeedSchedule needs at least one seed")
        self.seeds = [int(s) for s in seeds]
        self._next = int(start)
        self.stride = int(stride)

    def reset(self, *, seed: Optional[int] = None, options: Optional[dict] = None) -> tuple[Any, dict]:
        chosen = self.seeds[self._next % len(self.seeds)]
        self._next += self.stride
        return self.env.reset(seed=chosen, options=options)
