"""The baseline teachers every comparison needs.

- ``ce``: no teacher; the same student, data, batches and budget trained with plain cross-entropy.
- ``ce-val``: plain cross-entropy trained on the clean validation split alone (same budget).
- ``ce-finetune``: plain cross-entropy on the training split, then on the validation split for
  the last ``fraction`` (default 0.2) of the teaching steps.
- ``fixed``: the DLN frozen at its initialisation (zero action).
- ``random``: uniform random actions, seeded.
- ``constant``: the same action every step (``action=[...]``). In ``action_mode="control"`` that
  is one fixed loss of the family (e.g. fixed weights of the fused metric): with a bench ``grid:``
  over ``action``, the best fixed loss of the family chosen per seed on the validation split, the
  ceiling a teacher that changes the loss over time has to beat.
- ``hypergrad``: memoryless gradient teacher, ``phi <- phi - lr * loss_grad`` (the paper's
  "without memory" ablation). The move is clipped to the env's action bound, so like the LSTM
  teacher it moves phi by at most ``action_scale`` per coordinate per step.
- ``gce``, ``sce``, ``nce+rce``, ``mae``, ``ls``, ``bootstrap``, ``bootstrap-hard``, ``focal``: the
  robust losses of the noisy-label literature, frozen (:class:`FrozenLossTeacher`); their
  hyper-parameters are the teacher's kwargs (``l2t teach --teacher gce --teacher-arg q=0.5``).
"""

from __future__ import annotations

from typing import Any

import numpy as np

from l2t_agents.base import BaseTeacher, is_vector_env, register_teacher
from l2t_env.robust_losses import ROBUST_LOSSES


def _zeros(env) -> np.ndarray:
    return np.zeros(env.action_space.shape, dtype=np.float32)


@register_teacher("ce")
class CrossEntropyTeacher(BaseTeacher):
    """Trains the student on plain cross-entropy (the env's ``ce`` loss family has no parameters)."""

    env_kwargs = {"loss": "ce", "lookahead": "off"}
    batched = True
    baseline = True

    def act(self, obs: Any) -> np.ndarray:
        return _zeros(self.env)


@register_teacher("ce-val")
class CleanSplitTeacher(BaseTeacher):
    """Plain cross-entropy on the clean validation split alone, with the same budget (teaching
    steps x K SGD steps, lr, batch size): what the clean data is worth without the noisy data.

    The env draws every training batch from the validation split (task setting
    ``train_split="val"``). The observed val loss/accuracy, the reward and any early stopping on
    the validation split then see the very data the student trains on: they are training
    statistics here, not held-out ones. Only the test split is held out.
    """

    env_kwargs = {"loss": "ce", "lookahead": "off", "train_split": "val"}
    batched = True
    baseline = True

    def act(self, obs: Any) -> np.ndarray:
        return _zeros(self.env)


@register_teacher("ce-finetune")
class FinetuneTeacher(BaseTeacher):
    """Plain cross-entropy on the (noisy) training split, then fine-tuned on the clean validation
    split for the last ``fraction`` of the teaching steps (``round(fraction * teaching_steps)``,
    at least 1), same budget, lr and batch size; the env does the switch (task setting
    ``finetune_fraction``). As with ``ce-val``, validation-based observation, reward and early
    stopping during the fine-tuning phase see data the student trains on.
    """

    batched = True
    baseline = True

    def __init__(self, fraction: float = 0.2) -> None:
        super().__init__()
        if isinstance(fraction, bool) or not isinstance(fraction, (int, float)) or not 0.0 < float(fraction) < 1.0:
            raise ValueError(f"ce-finetune: fraction={fraction!r}, expected a number in (0, 1)")
        self.fraction = float(fraction)
        self.env_kwargs = {"loss": "ce", "lookahead": "off", "finetune_fraction": self.fraction}

    def act(self, obs: Any) -> np.ndarray:
        return _zeros(self.env)

    def state_dict(self) -> dict:
        return {"fraction": self.fraction}

    def load_state_dict(self, state: dict) -> None:
        self.fraction = float(state["fraction"])
        self.env_kwargs = {"loss": "ce", "lookahead": "off", "finetune_fraction": self.fraction}


@register_teacher("fixed")
class FixedTeacher(BaseTeacher):
    """Leaves the DLN at its random initialisation: what the student learns from an untaught loss."""

    env_kwargs = {"lookahead": "off"}
    batched = True

    def act(self, obs: Any) -> np.ndarray:
        return _zeros(self.env)


@register_teacher("random")
class RandomTeacher(BaseTeacher):
    """Uniform actions in [-1, 1]; the stream is fixed by ``seed`` and the episode's seed."""

    env_kwargs = {"lookahead": "off"}

    batched = True

    def __init__(self, seed: int = 0) -> None:
        super().__init__()
        self.seed = int(seed)
        self.rng = np.random.default_rng(self.seed)
        self.rngs: list[np.random.Generator] = []

    def reset(self, env) -> None:
        super().reset(env)
        if is_vector_env(env):  # one stream per sub-env, each the one a single env's episode would get
            self.rngs = [np.random.default_rng([self.seed, max(int(s), 0)]) for s in env.unwrapped.np_random_seed]
            return
        self.rngs = []
        episode_seed = env.unwrapped.np_random_seed
        self.rng = np.random.default_rng([self.seed, max(int(episode_seed), 0)])

    def act(self, obs: Any) -> np.ndarray:
        if self.rngs:
            space = self.env.unwrapped.single_action_space
            return np.stack([rng.uniform(space.low, space.high) for rng in self.rngs]).astype(np.float32)
        space = self.env.action_space
        return self.rng.uniform(space.low, space.high).astype(np.float32)

    def state_dict(self) -> dict:
        return {"seed": self.seed, "rng": self.rng.bit_generator.state, "rngs": [r.bit_generator.state for r in self.rngs]}

    def load_state_dict(self, state: dict) -> None:
        self.seed = state["seed"]
        self.rng.bit_generator.state = state["rng"]
        self.rngs = []
        for rng_state in state.get("rngs", []):
            rng = np.random.default_rng()
            rng.bit_generator.state = rng_state
            self.rngs.append(rng)


@register_teacher("constant")
class ConstantTeacher(BaseTeacher):
    """The same action every teaching step: in ``action_mode="control"`` a fixed loss of the family."""

    env_kwargs = {"lookahead": "off"}
    batched = True
    baseline = True  # a fixed loss, no teacher: a simple method the teachers are compared with

    def __init__(self, action: Any = (0.0,)) -> None:
        super().__init__()
        a = np.asarray(action, dtype=np.float32).reshape(-1)
        if not (a.size and np.isfinite(a).all()):
            raise ValueError(f"constant: action={action!r}, expected a non-empty list of finite numbers")
        self.action = a

    def reset(self, env) -> None:
        super().reset(env)
        space = env.unwrapped.single_action_space if is_vector_env(env) else env.action_space
        if space.shape != self.action.shape:
            raise ValueError(f"constant: action has {self.action.size} entries, the env's action space is {space}")

    def act(self, obs: Any) -> np.ndarray:
        return np.broadcast_to(self.action, self.env.action_space.shape).astype(np.float32).copy()

    def state_dict(self) -> dict:
        return {"action": self.action.tolist()}

    def load_state_dict(self, state: dict) -> None:
        self.action = np.asarray(state["action"], dtype=np.float32)


@register_teacher("hypergrad")
class HypergradientTeacher(BaseTeacher):
    """Plain gradient descent on phi along the observed hypergradient, with no memory.

    ``action = clip(lr * loss_grad / action_scale, -1, 1)`` gives ``phi <- phi - lr * loss_grad``
    wherever the move is inside the env's per-coordinate bound of ``action_scale``.
    """

    env_kwargs = {"lookahead": "K"}
    batched = True  # elementwise in the observation: a batch of loss_grad rows gives a batch of actions

    def __init__(self, lr: float = 10.0) -> None:
        super().__init__()
        if not lr > 0:
            raise ValueError(f"hypergrad: lr={lr!r}, expected > 0")
        self.lr = float(lr)

    def act(self, obs: Any) -> np.ndarray:
        if "loss_grad" not in obs:
            raise ValueError("the hypergrad teacher needs the env's loss_grad observation (lookahead='K' or 1)")
        scale = self.env.unwrapped.action_scale
        return np.clip(self.lr * obs["loss_grad"] / scale, -1.0, 1.0).astype(np.float32)

    def state_dict(self) -> dict:
        return {"lr": self.lr}

    def load_state_dict(self, state: dict) -> None:
        self.lr = float(state["lr"])


class FrozenLossTeacher(BaseTeacher):
    """Trains the student on one robust loss with fixed hyper-parameters: a baseline, no teaching.

    The env's loss family of the same name has the hyper-parameters as phi; this teacher sets them
    from its kwargs (the authors' defaults otherwise) and never moves them. Each registered
    subclass's docstring gives the formula and the citation.
    """

    loss: str = ""
    batched = True
    baseline = True

    def __init__(self, **hyperparameters: Any) -> None:
        super().__init__()
        spec = ROBUST_LOSSES[self.loss]
        valid = sorted([*spec.params, *spec.constants])
        unknown = sorted(set(hyperparameters) - set(valid))
        if unknown:
            raise ValueError(f"{self.loss}: unknown teacher kwargs {unknown}; valid: {valid}")
        self.hyperparameters = dict(hyperparameters)
        # an instance attribute: the env's loss and its kwargs follow this teacher's hyper-parameters
        self.env_kwargs = {"loss": self.loss, "lookahead": "off", "loss_kwargs": dict(hyperparameters)}

    def act(self, obs: Any) -> np.ndarray:
        return _zeros(self.env)

    def state_dict(self) -> dict:
        return {"hyperparameters": self.hyperparameters}

    def load_state_dict(self, state: dict) -> None:
        if state["hyperparameters"] != self.hyperparameters:
            raise ValueError(f"{self.loss}: saved hyper-parameters {state['hyperparameters']} differ from {self.hyperparameters}")


def _register_frozen_losses() -> None:
    for name, spec in ROBUST_LOSSES.items():
        doc = f"``{name}`` frozen: {spec.citation}. The loss (:mod:`l2t_env.robust_losses`):\n\n{spec.fn.__doc__}"
        cls = type(f"Frozen_{name.replace('+', '_').replace('-', '_')}", (FrozenLossTeacher,), {"loss": name, "__doc__": doc})
        register_teacher(name)(cls)


_register_frozen_losses()
