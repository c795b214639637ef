"""An ``L2TVectorEnv`` (N students in one process) presented as a Stable-Baselines3 ``VecEnv``.

Why an adapter and not ``DummyVecEnv``: ``DummyVecEnv`` steps N separate single envs one after
another; the native vector env steps the N students as one batched computation. The two APIs
differ in autoreset: Gymnasium's ``NEXT_STEP`` (the step after an episode end is a reset step)
against SB3's same-step autoreset. :class:`SB3VecEnv` resets the finished sub-envs inside
``step_wait`` (``reset(options={"reset_mask": done})``), returns their fresh observation and keeps
the last one as ``infos[i]["terminal_observation"]`` with ``infos[i]["TimeLimit.truncated"]``, as
SB3's own ``DummyVecEnv`` does.
"""

from __future__ import annotations

from typing import Any, Callable, Optional, Sequence, Union

import gymnasium as gym
import numpy as np
from gymnasium import spaces
from stable_baselines3.common.vec_env import VecEnv
from stable_baselines3.common.vec_env.base_vec_env import VecEnvIndices, VecEnvObs, VecEnvStepReturn


class SB3VecEnv(VecEnv):
    """SB3's ``VecEnv`` over a Gymnasium vector env with ``NEXT_STEP`` autoreset and ``reset_mask``.

    Args:
        venv: the vector env, e.g. ``gym.make_vec("L2T-v0", num_envs=N, vectorization_mode="vector_entry_point")``.
        seeds: when given, every reset of sub-env ``i`` takes the next seed of ``seeds[i::N]`` in
            turn (cycling through the list, as ``SeedSchedule`` does for ``DummyVecEnv``),
            ignoring ``seed()``; otherwise ``seed(s)`` seeds sub-env ``i`` with ``s + i`` at the next reset.
        observation: maps one sub-env's observation (a Dict of unbatched arrays) to the agent's;
            ``observation_space`` is then its single-env space. None passes the batch through.

    The sub-envs are rows of one object, not separate envs: ``get_attr``, ``set_attr`` and
    ``env_method`` act on the vector env and return its one answer per requested index.
    """

    def __init__(
        self,
        venv: gym.vector.VectorEnv,
        seeds: Optional[Sequence[int]] = None,
        observation: Optional[Callable[[dict], dict]] = None,
        observation_space: Optional[spaces.Space] = None,
    ) -> None:
        if getattr(venv, "metadata", {}).get("autoreset_mode") != gym.vector.AutoresetMode.NEXT_STEP:
            raise ValueError(f"SB3VecEnv needs a vector env with NEXT_STEP autoreset, got {venv.metadata.get('autoreset_mode')!r}")
        if (observation is None) != (observation_space is None):
            raise ValueError("give observation and observation_space together (or neither)")
        if seeds is not None and len(seeds) == 0:
            raise ValueError("seeds is empty; expected at least one seed (or None)")
        self.venv = venv
        self.seeds = None if seeds is None else [int(s) for s in seeds]
        self._obs_fn = observation
        n = venv.num_envs
        self._next = np.arange(n)  # index into self.seeds of each sub-env's next reset
        self._actions: Optional[np.ndarray] = None
        super().__init__(n, observation_space or venv.single_observation_space, venv.single_action_space)

    # ------------------------------------------------------------------ observations and seeds
    def _transform(self, obs: Any) -> Any:
        return obs if self._obs_fn is None else map_rows(self._obs_fn, obs)

    def _reset_seed_list(self, rows: np.ndarray) -> list[Optional[int]]:
        """The seed of each sub-env for a reset of ``rows`` (entries outside ``rows`` are unused)."""
        out: list[Optional[int]] = list(self._seeds)
        if self.seeds is not None:
            for i in rows:
                out[i] = self.seeds[int(self._next[i]) % len(self.seeds)]
                self._next[i] += self.num_envs
        return out

    # ------------------------------------------------------------------ VecEnv API
    def reset(self) -> VecEnvObs:
        rows = np.arange(self.num_envs)
        options = self._options[0] if all(o == self._options[0] for o in self._options) else None
        if options is None:
            raise ValueError(f"per-sub-env reset options differ ({self._options}); this vector env takes one options dict")
        obs, info = self.venv.reset(seed=self._reset_seed_list(rows), options=options or None)
        self.reset_infos = _split_info(info, self.num_envs)
        self._reset_seeds()
        self._reset_options()
        return self._transform(obs)

    def step_async(self, actions: np.ndarray) -> None:
        self._actions = np.asarray(actions)

    def step_wait(self) -> VecEnvStepReturn:
        if self._actions is None:
            raise RuntimeError("step_wait() without a pending step_async(actions)")
        obs, reward, terminated, truncated, info = self.venv.step(self._actions)
        self._actions = None
        done = np.asarray(terminated) | np.asarray(truncated)
        infos = _split_info(info, self.num_envs)
        obs = self._transform(obs)
        if done.any():
            rows = np.flatnonzero(done)
            for i in rows:
                infos[i]["terminal_observation"] = _row(obs, i)
                infos[i]["TimeLimit.truncated"] = bool(truncated[i] and not terminated[i])
            fresh, reset_info = self.venv.reset(seed=self._reset_seed_list(rows), options={"reset_mask": done})
            fresh = self._transform(fresh)
            reset_infos = _split_info(reset_info, self.num_envs)
            for i in rows:
                self.reset_infos[i] = reset_infos[i]
            obs = _set_rows(obs, fresh, rows)
            self._reset_seeds()
        return obs, np.asarray(reward, dtype=np.float32), done, infos

    def close(self) -> None:
        self.venv.close()

    def _count(self, indices: VecEnvIndices) -> int:
        return len(self._get_indices(indices))

    def get_attr(self, attr_name: str, indices: VecEnvIndices = None) -> list[Any]:
        return [getattr(self.venv, attr_name)] * self._count(indices)

    def set_attr(self, attr_name: str, value: Any, indices: VecEnvIndices = None) -> None:
        setattr(self.venv, attr_name, value)

    def env_method(self, method_name: str, *method_args: Any, indices: VecEnvIndices = None, **method_kwargs: Any) -> list[Any]:
        result = getattr(self.venv, method_name)(*method_args, **method_kwargs)
        return [result] * self._count(indices)

    def env_is_wrapped(self, wrapper_class: type, indices: VecEnvIndices = None) -> list[bool]:
        wrapped = False
        env: Any = self.venv
        while isinstance(env, gym.vector.VectorWrapper):
            wrapped = wrapped or isinstance(env, wrapper_class)
            env = env.env
        return [wrapped] * self._count(indices)


def map_rows(fn: Callable[[dict], dict], obs: dict) -> dict:
    """Apply a one-env observation map to each row of a batched Dict observation; stack the rows."""
    n = len(next(iter(obs.values())))
    rows = [fn({k: v[i] for k, v in obs.items()}) for i in range(n)]
    return {k: np.stack([r[k] for r in rows]) for k in rows[0]}


def _split_info(info: dict, n: int) -> list[dict]:
    """Gymnasium's vector info (arrays with ``_key`` masks) -> SB3's list of per-env dicts."""
    out: list[dict] = [{} for _ in range(n)]
    for key, value in info.items():
        if key.startswith("_"):
            continue
        mask = info.get("_" + key, np.ones(n, dtype=bool))
        for i in range(n):
            if mask[i]:
                out[i][key] = _split_info(value, n)[i] if isinstance(value, dict) else value[i]
    return out


def _row(obs: Union[dict, np.ndarray], i: int) -> Any:
    if isinstance(obs, dict):
        return {k: np.array(v[i]) for k, v in obs.items()}
    return np.array(obs[i])


def _set_rows(obs: Union[dict, np.ndarray], fresh: Union[dict, np.ndarray], rows: np.ndarray) -> Any:
    if isinstance(obs, dict):
        for k in obs:
            obs[k] = np.array(obs[k])
            obs[k][rows] = fresh[k][rows]
        return obs
    obs = np.array(obs)
    obs[rows] = fresh[rows]
    return obs
