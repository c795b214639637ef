"""Env checkpoints: the state that decides the rest of an ``L2T-v0`` episode, as a plain dict.

``L2TEnv.state_dict()`` and ``L2TEnv.load_state_dict()`` (or ``reset(options={"state": sd})``)
delegate here. The dict holds CPU tensors, numbers, strings, lists and dicts only, so
``torch.save`` writes it and ``torch.load`` (``weights_only=True`` included) reads it back.

It keeps: the student's parameters and buffers (BatchNorm running statistics), phi, the teaching
step, the split (pool rows of train and val, a noisy task's drawn training labels; the fixed
validation subset is the first rows of val),
the batches already drawn for the next step, the batch samplers' permutations, positions and
generators (and the count of steps drawn, which decides when fine-tuning starts), the augmentation generator, the env's ``np_random``, the statistics the observation
shows, the latest ``loss_grad`` and look-ahead (so a commit of the same phi reuses it, as it
would have), and whether the episode is still running (it is not after a divergence or the end).

It does not keep the data (re-read from the task; the split is checked against the pool's size),
anything of the teacher, or torch's process-wide RNG: the env draws nothing from it with the
built-in students (a student with dropout would); the harness's episode checkpoints keep it.
A state is tied to its task, loss family and the env settings that change the episode's numbers;
loading it into an env that differs raises and names both. The device may differ.
"""

from __future__ import annotations

import dataclasses
from typing import TYPE_CHECKING, Any, Optional

import numpy as np
import torch

from l2t_env.data import BatchStream, Batches, EpochSampler, splits_from_indices
from l2t_env.functional import FunctionalStudent, UnrollStats
from l2t_env.tasks import TaskConfig, build_student

if TYPE_CHECKING:  # pragma: no cover
    from l2t_env.env import L2TEnv

FORMAT = "l2t-env-state/1"
#: env settings that change the numbers of an episode (the device does not)
SETTINGS = ("action_mode", "lookahead_steps", "action_scale", "reward_name", "reward_every", "divergence_penalty", "dtype")
#: task fields at their defaults, for states saved before a field existed
_TASK_DEFAULTS = {
    f.name: f.default for f in dataclasses.fields(TaskConfig) if f.default is not dataclasses.MISSING and f.name in ("val_size", "label_noise", "train_split", "finetune_fraction")
}
_STATS = ("train_loss", "train_acc", "loss_value", "grad_norm", "finite")


def _cpu(t: torch.Tensor) -> torch.Tensor:
    """A CPU copy (never a view: the env updates its tensors in place after the snapshot)."""
    return t.detach().to("cpu", copy=True)


def identity(env: "L2TEnv") -> dict[str, Any]:
    """What a state must match to be loaded: task config, loss family and settings."""
    return {
        "task": env.config.to_dict(),
        "loss": env.loss_family.name,
        "n_phi": env.n_phi,
        "settings": {key: str(env.dtype) if key == "dtype" else getattr(env, key) for key in SETTINGS},
    }


def _sampler_state(sampler: EpochSampler) -> dict[str, Any]:
    return {"n": sampler.n, "order": _cpu(sampler._order), "pos": sampler._pos, "generator": sampler.generator.get_state()}


def _restore_sampler(sampler: EpochSampler, state: dict[str, Any], what: str) -> None:
    if state["n"] != sampler.n:
        raise ValueError(f"the state's {what} sampler draws from {state['n']} examples, this env's from {sampler.n}")
    sampler.generator.set_state(state["generator"])
    sampler._order = state["order"].clone()
    sampler._pos = int(state["pos"])


def env_state_dict(env: "L2TEnv") -> dict[str, Any]:
    """A snapshot of the episode; see the module docstring for what it holds."""
    if not hasattr(env, "student"):
        raise RuntimeError("call reset() first: there is no episode to save")
    splits, stream = env.splits, env.stream
    unroll = env._unroll
    return {
        "format": FORMAT,
        "identity": identity(env),
        "episode": {
            "t": env.t,
            "student_steps": env.student_steps,
            "running": env._ready,
            "val_loss": env.val_loss,
            "val_acc": env.val_acc,
            "last": dict(env._last),
        },
        "split": {
            "n_pool": len(env.raw.x_pool),
            "train_index": _cpu(splits.train_index),
            "val_index": _cpu(splits.val_index),
            "y_train": None if splits.y_train_clean is None else _cpu(splits.y_train),
            "n_fixed": len(env._x_fixed),
        },
        "student": {"params": [_cpu(p) for p in env.params], "buffers": [_cpu(b) for b in env.buffers]},
        "phi": _cpu(env._phi),
        "loss_grad": _cpu(env._loss_grad) if env.lookahead_steps else None,
        "next": {key: _cpu(getattr(env._next, key)) for key in ("x", "y", "x_val", "y_val")},
        "unroll": None
        if unroll is None
        else {
            "step": unroll.step,
            "phi": _cpu(unroll.phi),
            "params": [_cpu(p) for p in unroll.params],
            "buffers": [_cpu(b) for b in unroll.buffers],
            "stats": {key: _cpu(getattr(unroll.stats, key)) for key in _STATS},
        },
        "rng": {
            "train": _sampler_state(stream.train_sampler),
            "val": _sampler_state(stream.val_sampler),
            "augment": stream.augment_generator.get_state(),
            "finetune": None if stream.finetune_sampler is None else _sampler_state(stream.finetune_sampler),
            "drawn": stream.drawn,
            "np_random": env.np_random.bit_generator.state,
            "np_random_seed": env._np_random_seed,
        },
    }


def check_compatible(env: "L2TEnv", state: Any) -> None:
    """Raise, naming both sides, unless ``state`` is an env state of this env's task, loss and settings."""
    if not isinstance(state, dict) or state.get("format") != FORMAT:
        got = state.get("format") if isinstance(state, dict) else type(state).__name__
        raise ValueError(f"not an L2T-v0 env state: format {got!r}, expected {FORMAT!r} (from env.unwrapped.state_dict())")
    mine, theirs = identity(env), state["identity"]
    # a task field added since the state was saved holds its default there (it did not exist)
    theirs = {**theirs, "task": {**_TASK_DEFAULTS, **theirs["task"]}}
    if (theirs["task"]["name"], theirs["loss"], theirs["n_phi"]) != (mine["task"]["name"], mine["loss"], mine["n_phi"]):
        raise ValueError(
            f"the state is of task {theirs['task']['name']!r} with loss family {theirs['loss']!r} ({theirs['n_phi']} loss "
            f"parameters); this env runs task {mine['task']['name']!r} with loss family {mine['loss']!r} ({mine['n_phi']})"
        )
    diffs = [
        f"{key}={theirs[part].get(key)!r} (state) vs {mine[part].get(key)!r} (env)"
        for part in ("task", "settings")
        for key in sorted(set(theirs[part]) | set(mine[part]))
        if theirs[part].get(key) != mine[part].get(key)
    ]
    if diffs:
        raise ValueError(f"the state of task {mine['task']['name']!r} was saved with other settings than this env's: {'; '.join(diffs)}")
    n_pool = len(env.raw.x_pool)
    if state["split"]["n_pool"] != n_pool:
        raise ValueError(f"the state was saved on a pool of {state['split']['n_pool']} examples; this env's data has {n_pool}")


def _copy_into(targets: list[torch.Tensor], sources: list[torch.Tensor], names: list[str], what: str) -> None:
    if len(sources) != len(targets):
        raise ValueError(f"the state holds {len(sources)} student {what}s, this env's student has {len(targets)}")
    for name, target, source in zip(names, targets, sources):
        if tuple(source.shape) != tuple(target.shape):
            raise ValueError(f"student {what} {name!r}: the state's has shape {tuple(source.shape)}, this student's {tuple(target.shape)}")
    with torch.no_grad():
        for target, source in zip(targets, sources):
            target.copy_(source)


def load_env_state_dict(env: "L2TEnv", state: dict[str, Any]) -> None:
    """Make ``env`` continue the saved episode. Everything is checked and built before the env is
    touched, so a state that does not fit raises and leaves the env as it was."""
    from l2t_env.env import _Unroll  # the env module imports this one

    check_compatible(env, state)
    cfg, device, dtype = env.config, env.device, env.dtype
    put = lambda t: t.to(device=device, dtype=dtype if t.is_floating_point() else t.dtype)  # noqa: E731
    split = state["split"]
    splits = splits_from_indices(env.raw, split["train_index"], split["val_index"], device, dtype, split.get("y_train"))
    student = FunctionalStudent(build_student(cfg, env.raw.input_shape, env.raw.num_classes, 0).to(device=device, dtype=dtype))
    params, buffers = student.own_state()
    _copy_into(params, state["student"]["params"], student.param_names, "parameter")
    _copy_into(buffers, state["student"]["buffers"], student.buffer_names, "buffer")
    phi = put(state["phi"])
    if tuple(phi.shape) != (env.n_phi,):
        raise ValueError(f"the state's phi has shape {tuple(phi.shape)}, expected ({env.n_phi},)")
    stream = BatchStream(splits, cfg.batch_size, cfg.unroll_steps, cfg.val_batch_size, 0, env.augment, cfg.finetune_start)
    rng = state["rng"]
    _restore_sampler(stream.train_sampler, rng["train"], "training batch")
    _restore_sampler(stream.val_sampler, rng["val"], "validation batch")
    if stream.finetune_sampler is not None:
        _restore_sampler(stream.finetune_sampler, rng["finetune"], "fine-tuning batch")
    stream.drawn = int(rng.get("drawn", int(state["episode"]["t"]) + 1))
    stream.from_val = cfg.finetune_start is not None and stream.drawn - 1 >= cfg.finetune_start
    stream.augment_generator.set_state(rng["augment"])
    np_state = rng["np_random"]
    np_random = np.random.Generator(getattr(np.random, np_state["bit_generator"])())
    np_random.bit_generator.state = np_state
    nxt = Batches(**{key: put(value) for key, value in state["next"].items()})
    u: Optional[dict] = state["unroll"]
    unroll = None
    if u is not None:
        stats = UnrollStats(**{key: put(value) for key, value in u["stats"].items()})
        unroll = _Unroll(u["step"], put(u["phi"]), [put(p) for p in u["params"]], [put(b) for b in u["buffers"]], stats)
    episode = state["episode"]
    n_fixed = split["n_fixed"]

    # everything fits: commit
    env.splits, env.stream, env.student, env.params, env.buffers = splits, stream, student, params, buffers
    env._x_fixed, env._y_fixed = splits.x_val[:n_fixed], splits.y_val[:n_fixed]
    env._phi, env._next, env._unroll = phi, nxt, unroll
    if state["loss_grad"] is not None:
        env._loss_grad = put(state["loss_grad"])
    env.t, env.student_steps = int(episode["t"]), int(episode["student_steps"])
    env.val_loss, env.val_acc, env._last = episode["val_loss"], episode["val_acc"], dict(episode["last"])
    env._ready = bool(episode["running"])
    env._np_random, env._np_random_seed = np_random, rng["np_random_seed"]
