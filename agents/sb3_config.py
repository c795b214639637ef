"""RL-Zoo-style agent YAML files (``configs/agents/{ppo,a2c,sac,td3}.yaml``) read and checked for
the SB3 teachers: the keys this package interprets itself, ``policy_kwargs`` strings evaluated
with only ``dict`` and torch's ``nn`` in scope, ``lin_<lr>`` schedules and ``normalize`` mappings.
"""

from __future__ import annotations

import ast
from pathlib import Path
from typing import Any, Optional, Union

import torch
from stable_baselines3.common.noise import NormalActionNoise, OrnsteinUhlenbeckActionNoise

from l2t_env.config_files import config_dir, read_yaml

ENV_ID = "L2T-v0"
OBSERVATIONS = ("summary", "full")
#: how an SB3 teacher acts: ``layer`` scales each DLN layer's hypergradient step (look-ahead K),
#: ``control`` sets a robust loss's hyper-parameters or the fused metric's weights (no look-ahead)
AGENT_ACTION_MODES = ("layer", "control")
#: YAML keys this module interprets itself; every other key goes to the algorithm's constructor.
ZOO_KEYS = ("n_timesteps", "policy", "n_envs", "vector_env", "normalize", "policy_kwargs", "observation", "noise_type", "noise_std",
            "action_mode")
NORMALIZE_KEYS = ("norm_obs", "norm_reward", "clip_obs", "clip_reward", "epsilon", "norm_obs_keys")
NOISES = {"normal": NormalActionNoise, "ornstein-uhlenbeck": OrnsteinUhlenbeckActionNoise}


def _check_expression(node: ast.AST, text: str) -> None:
    """Allow only literals, ``dict(...)`` calls and public attributes of ``nn``/``th``/``torch``."""
    allowed = (ast.Expression, ast.Call, ast.Name, ast.Attribute, ast.keyword, ast.List, ast.Tuple, ast.Dict,
               ast.Constant, ast.UnaryOp, ast.USub, ast.Load)
    for sub in ast.walk(node):
        if not isinstance(sub, allowed):
            raise ValueError(f"policy_kwargs {text!r}: {type(sub).__name__} is not allowed in a config expression")
        if isinstance(sub, ast.Call) and not (isinstance(sub.func, ast.Name) and sub.func.id == "dict"):
            raise ValueError(f"policy_kwargs {text!r}: only dict(...) may be called")
        if isinstance(sub, ast.Name) and sub.id not in ("dict", "nn", "th", "torch", "True", "False", "None"):
            raise ValueError(f"policy_kwargs {text!r}: unknown name {sub.id!r}; valid: dict, nn, th, torch")
        if isinstance(sub, ast.Attribute) and sub.attr.startswith("_"):
            raise ValueError(f"policy_kwargs {text!r}: private attribute {sub.attr!r}")


def _activation(value: Any) -> Any:
    """``"Tanh"``, ``"nn.Tanh"`` or ``torch.nn.Tanh`` -> ``torch.nn.Tanh``."""
    if not isinstance(value, str):
        return value
    name = value.split(".")[-1]
    cls = getattr(torch.nn, name, None)
    if not (isinstance(cls, type) and issubclass(cls, torch.nn.Module)):
        raise ValueError(f"activation_fn={value!r} is not a torch.nn module (e.g. 'Tanh', 'ReLU')")
    return cls


def parse_policy_kwargs(value: Union[str, dict, None]) -> dict:
    """RL-Zoo's ``policy_kwargs``: a mapping, or a string such as
    ``"dict(net_arch=[64, 64], activation_fn=nn.Tanh)"`` (evaluated with only ``dict`` and torch's
    ``nn`` in scope, after checking that it holds nothing else)."""
    if value is None:
        return {}
    if isinstance(value, str):
        tree = ast.parse(value, mode="eval")
        _check_expression(tree, value)
        scope = {"__builtins__": {}, "dict": dict, "nn": torch.nn, "th": torch, "torch": torch}
        value = eval(compile(tree, "<policy_kwargs>", "eval"), scope)  # noqa: S307 - checked above
    if not isinstance(value, dict):
        raise ValueError(f"policy_kwargs must be a mapping or a dict(...) string, got {value!r}")
    out = dict(value)
    if "activation_fn" in out:
        out["activation_fn"] = _activation(out["activation_fn"])
    return out


def learning_rate(value: Any) -> Any:
    """A float, or RL-Zoo's ``"lin_3e-4"``: linear decay from 3e-4 to 0 over training."""
    if isinstance(value, str) and value.startswith("lin_"):
        start = float(value[4:])
        try:
            from stable_baselines3.common.utils import LinearSchedule  # SB3 >= 2.6
        except ImportError:  # pragma: no cover - older SB3
            from stable_baselines3.common.utils import get_linear_fn

            return get_linear_fn(start, 0.0, 1.0)
        return LinearSchedule(start, 0.0, 1.0)
    return float(value)


def load_agent_config(config: Union[str, Path]) -> dict:
    """An agent YAML by built-in name (``ppo``) or path; RL-Zoo's ``{L2T-v0: {...}}`` nesting is accepted."""
    path = Path(config)
    if not path.suffix:
        path = config_dir("agents") / f"{config}.yaml"
    if not path.is_file():
        raise FileNotFoundError(f"agent config {str(config)!r} not found (looked for {path})")
    data = read_yaml(path)
    if set(data) == {ENV_ID}:
        data = data[ENV_ID]
    return dict(data)


def normalize_kwargs(value: Any, who: str) -> Optional[dict]:
    """``normalize: true`` or a mapping of ``VecNormalize`` arguments -> those arguments; false -> None
    (``who``: the teacher, for messages)."""
    if isinstance(value, str):  # RL-Zoo writes "{'norm_obs': True, 'norm_reward': False}"
        try:
            value = ast.literal_eval(value)
        except (ValueError, SyntaxError) as err:
            raise ValueError(f"{who}: normalize={value!r} is not a Python literal mapping") from err
    if value is False or value is None:
        return None
    if value is True:
        return {}
    if not isinstance(value, dict):
        raise ValueError(f"{who}: normalize={value!r}; expected true, false or a mapping of {list(NORMALIZE_KEYS)}")
    unknown = sorted(set(value) - set(NORMALIZE_KEYS))
    if unknown:
        raise ValueError(f"{who}: unknown normalize key(s) {unknown}; valid: {list(NORMALIZE_KEYS)}")
    return dict(value)
