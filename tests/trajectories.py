"""Digests of short single-env trajectories, to check that a refactor changes no bit of them.

``python tests/trajectories.py --write`` records ``tests/data/single_env_trajectories.json`` (done
once, before the episode rules moved to ``l2t_env/rules.py``); ``test_rules.py`` recomputes and
compares. Each scenario exercises one rule: action modes, rewards, reward cadence, divergence,
the monitor, loss families.
"""

from __future__ import annotations

import hashlib
import json
import sys
from pathlib import Path

import gymnasium as gym
import numpy as np

import l2t_env  # noqa: F401

FILE = Path(__file__).parent / "data" / "single_env_trajectories.json"
SCENARIOS = {
    "dln-full-lookahead": dict(kwargs={}, actions="uniform"),
    "dln-layer-acc": dict(kwargs={"action_mode": "layer", "reward": "val_acc_increase"}, actions="uniform"),
    "dln-global-neg-every2": dict(kwargs={"action_mode": "global", "reward": "neg_val_loss", "reward_every": 2}, actions="uniform"),
    "dlf-set": dict(kwargs={"loss": "dlf", "action_mode": "set", "lookahead": "off"}, actions="set"),
    "ce-monitor": dict(kwargs={"loss": "ce", "lookahead": "off", "monitor_every": 2}, actions="uniform"),
    "gce-full-lookahead1": dict(kwargs={"loss": "gce", "lookahead": 1}, actions="uniform"),
    "dln-diverges": dict(kwargs={"action_scale": 1e4, "lookahead": "off", "lr": 50.0}, actions="uniform"),
    "dln-flat-obs": dict(kwargs={"observation_mode": "flat", "lookahead": 1}, actions="uniform"),
}


def _digest(value) -> str:
    if isinstance(value, dict):
        return "{" + ",".join(f"{k}:{_digest(value[k])}" for k in sorted(value)) + "}"
    if isinstance(value, np.ndarray):
        return hashlib.sha256(value.tobytes()).hexdigest()[:16] + str(value.dtype) + str(value.shape)
    return repr(value)


def trajectory(name: str, steps: int = 4) -> list[str]:
    spec = SCENARIOS[name]
    env = gym.make("L2T-v0", task="digits-mlp", teaching_steps=steps, device="cpu", **spec["kwargs"])
    obs, info = env.reset(seed=7)
    out = [_digest(obs) + _digest(info)]
    rng = np.random.default_rng(0)
    for _ in range(steps):
        space = env.action_space
        if spec["actions"] == "set":
            action = env.unwrapped.phi.numpy() + rng.normal(0, 0.05, space.shape).astype(np.float32)
        else:
            action = rng.uniform(-1, 1, space.shape).astype(np.float32)
        obs, reward, terminated, truncated, info = env.step(action)
        out.append(_digest(obs) + repr(reward) + repr((terminated, truncated)) + _digest(info))
        if terminated or truncated:
            break
    return out


def all_trajectories() -> dict[str, list[str]]:
    return {name: trajectory(name) for name in SCENARIOS}


if __name__ == "__main__":
    if "--write" in sys.argv:
        FILE.write_text(json.dumps(all_trajectories(), indent=1) + "\n")
        print(f"wrote {FILE}")
