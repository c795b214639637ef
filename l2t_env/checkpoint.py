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
from typing import TYPE_CHECKING, Any, Callable, Optional

import numpy as np
import torch

from l2t_env.data import BatchStream, Batches, EpochSampler, IndexStream, splits_from_indices
from l2t_env.functional import FunctionalStudent, UnrollRecord, UnrollStats
from l2t_env.tasks import TaskConfig, build_student

if TYPE_CHECKING:  # pragma: no cover
    from l2t_env.env import L2TEnv
    from l2t_env.vector_env import L2TVectorEnv

FORMAT = "l2t-env-state/1"
#: env settings that change the numbers of an episode (the device does not)
SETTINGS = ("action_mode", "lookahead_steps", "action_scale", "reward_name", "reward_every", "divergence_penalty", "dtype")
#: settings that change what an episode reports, not its numbers (a resumed record must monitor on
#: the same cadence), with the value a state saved before they existed had
REPORTING = ("monitor_every",)
_SETTING_DEFAULTS = {"monitor_every": 0}
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
        "settings": {key: str(env.dtype) if key == "dtype" else getattr(env, key) for key in (*SETTINGS, *REPORTING)},
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
    check_identity(env, state["identity"], state["split"]["n_pool"])


def check_identity(env: "L2TEnv", theirs: dict[str, Any], n_pool: int) -> None:
    """Raise, naming both sides, unless ``theirs`` (a state's :func:`identity`, saved on a pool of
    ``n_pool`` examples) is this env's task, loss family and settings."""
    mine = identity(env)
    # a task field added since the state was saved holds its default there (it did not exist)
    theirs = {**theirs, "task": {**_TASK_DEFAULTS, **theirs["task"]}, "settings": {**_SETTING_DEFAULTS, **theirs["settings"]}}
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
    if n_pool != len(env.raw.x_pool):
        raise ValueError(f"the state was saved on a pool of {n_pool} examples; this env's data has {len(env.raw.x_pool)}")


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
    prepare_env_state(env, state)()


def prepare_env_state(env: "L2TEnv", state: dict[str, Any]) -> Callable[[], None]:
    """Check and build everything of ``state`` for ``env`` without touching it; return the commit
    (which cannot fail). The vector env prepares all its sub-envs before it commits any."""
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
        unroll = UnrollRecord(u["step"], put(u["phi"]), [put(p) for p in u["params"]], [put(b) for b in u["buffers"]], stats)

    loss_grad = None if state["loss_grad"] is None else put(state["loss_grad"])
    episode, n_fixed = state["episode"], split["n_fixed"]

    def commit() -> None:  # everything fits
        env.splits, env.stream, env.student, env.params, env.buffers = splits, stream, student, params, buffers
        env._x_fixed, env._y_fixed = splits.x_val[:n_fixed], splits.y_val[:n_fixed]
        env._phi, env._next, env._unroll = phi, nxt, unroll
        if loss_grad is not None:
            env._loss_grad = loss_grad
        env.t, env.student_steps = int(episode["t"]), int(episode["student_steps"])
        env.val_loss, env.val_acc, env._last = episode["val_loss"], episode["val_acc"], dict(episode["last"])
        env._ready = bool(episode["running"])
        env._np_random, env._np_random_seed = np_random, rng["np_random_seed"]

    return commit


# ---------------------------------------------------------------------- the vector env
VECTOR_FORMAT = "l2t-vector-env-state/1"


def _np_rng_state(rng: np.random.Generator) -> dict[str, Any]:
    return rng.bit_generator.state


def _np_rng(state: dict[str, Any]) -> np.random.Generator:
    rng = np.random.Generator(getattr(np.random, state["bit_generator"])())
    rng.bit_generator.state = state
    return rng


def vector_state_dict(venv: "L2TVectorEnv") -> dict[str, Any]:
    """A snapshot of the N episodes of an ``L2TVectorEnv`` (``venv.state_dict()``): the single env's
    contents per sub-env (the loop's sub-envs' own states; the vmap core's stacked rows), the
    autoreset mask and the vector env's seeds."""
    if not venv._ready:
        raise RuntimeError("call reset() first: there is no episode to save")
    core = venv._core
    tpl = venv._template
    if venv.batching == "loop":  # the sub-envs' own states
        body: dict[str, Any] = {"envs": [env_state_dict(env) for env in core.envs]}
    else:
        unroll = core._unroll
        body = {
            "student": {"params": [_cpu(p) for p in core.params], "buffers": [_cpu(b) for b in core.buffers]},
            "phi": _cpu(core.phi),
            "loss_grad": _cpu(core.loss_grad) if venv.lookahead_steps else None,
            "split": {"train_map": _cpu(core.train_map), "val_map": _cpu(core.val_map), "y_train": _cpu(core.y_train)},
            "episode": {
                "t": torch.from_numpy(core.t.copy()),
                "student_steps": torch.from_numpy(core.student_steps.copy()),
                "val": torch.from_numpy(core.val.copy()),
                "last": torch.from_numpy(core.last.copy()),
            },
            "next": {"x": _cpu(core.nx), "y": _cpu(core.ny), "x_val": _cpu(core.nxv), "y_val": _cpu(core.nyv)},
            "unroll": None
            if unroll is None
            else {
                "t": torch.from_numpy(unroll.t.copy()),
                "phi": _cpu(unroll.phi),
                "params": [_cpu(p) for p in unroll.params],
                "buffers": [_cpu(b) for b in unroll.buffers],
                "stats": {key: _cpu(getattr(unroll.stats, key)) for key in _STATS},
            },
            "rng": {
                "np_random": [_np_rng_state(rng) for rng in core.rngs],
                "seeds": [int(s) for s in core.seed_values],
                "streams": [
                    {
                        "train": _sampler_state(s.train_sampler),
                        "val": _sampler_state(s.val_sampler),
                        "augment": s.augment_generator.get_state(),
                        "finetune": None if s.finetune_sampler is None else _sampler_state(s.finetune_sampler),
                        "drawn": s.drawn,
                        "from_val": s.from_val,
                    }
                    for s in core.streams  # type: ignore[union-attr]
                ],
            },
        }
    return {
        "format": VECTOR_FORMAT,
        "identity": identity(tpl),
        "n_pool": len(tpl.raw.x_pool),
        "num_envs": venv.num_envs,
        "batching": venv.batching,
        "autoreset": torch.from_numpy(venv._autoreset.copy()),
        "core": body,
    }


def _fit(what: str, source: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """``source`` on ``target``'s device and dtype, if it has ``target``'s shape (else raise naming both)."""
    if not torch.is_tensor(source) or tuple(source.shape) != tuple(target.shape):
        got = tuple(source.shape) if torch.is_tensor(source) else type(source).__name__
        raise ValueError(f"the state's {what} has shape {got}, this vector env's {tuple(target.shape)}")
    return source.to(device=target.device, dtype=target.dtype, copy=True)  # never shared with the state


def load_vector_state_dict(venv: "L2TVectorEnv", state: Any) -> None:
    """Make ``venv`` continue the saved N episodes. Everything is checked and built before the env
    is touched, so a state that does not fit raises, naming both sides, and leaves the env as it was."""
    if not isinstance(state, dict) or state.get("format") != VECTOR_FORMAT:
        got = state.get("format") if isinstance(state, dict) else type(state).__name__
        hint = " (a single env's state: load it into L2TEnv)" if got == FORMAT else ""
        raise ValueError(f"not an L2TVectorEnv state: format {got!r}, expected {VECTOR_FORMAT!r}{hint}")
    tpl = venv._template
    check_identity(tpl, state["identity"], state["n_pool"])
    if state["num_envs"] != venv.num_envs:
        raise ValueError(f"the state holds {state['num_envs']} sub-envs, this vector env has num_envs={venv.num_envs}")
    if state["batching"] != venv.batching:
        raise ValueError(f"the state was saved with batching={state['batching']!r}, this vector env runs batching={venv.batching!r}")
    autoreset = state["autoreset"].numpy().astype(bool).copy()
    if autoreset.shape != (venv.num_envs,):
        raise ValueError(f"the state's autoreset mask has shape {autoreset.shape}, expected ({venv.num_envs},)")
    core, body = venv._core, state["core"]
    if venv.batching == "loop":
        commits = [prepare_env_state(env, sub) for env, sub in zip(core.envs, body["envs"])]

        def commit() -> None:
            for i, each in enumerate(commits):
                each()
                core._obs[i] = core.envs[i].observation()

    else:
        cfg = tpl.config
        params = [_fit(f"student parameter {i}", s, t) for i, (s, t) in enumerate(zip(body["student"]["params"], core.params))]
        buffers = [_fit(f"student buffer {i}", s, t) for i, (s, t) in enumerate(zip(body["student"]["buffers"], core.buffers))]
        if (len(params), len(buffers)) != (len(core.params), len(core.buffers)):
            raise ValueError(
                f"the state's students have {len(body['student']['params'])} parameters and {len(body['student']['buffers'])} buffers, "
                f"this vector env's {len(core.params)} and {len(core.buffers)}"
            )
        phi = _fit("phi", body["phi"], core.phi)
        loss_grad = None if body["loss_grad"] is None else _fit("loss_grad", body["loss_grad"], core.loss_grad)
        split = {key: _fit(key, body["split"][key], getattr(core, key)) for key in ("train_map", "val_map", "y_train")}
        for key, index in (("train_map", split["train_map"]), ("val_map", split["val_map"])):
            if index.numel() and (int(index.min()) < 0 or int(index.max()) >= len(core.x_pool)):
                raise ValueError(f"the state's {key} indexes outside this env's pool of {len(core.x_pool)} examples")
        nxt = {key: _fit(f"next batch {key!r}", body["next"][key], getattr(core, attr)) for key, attr in (("x", "nx"), ("y", "ny"), ("x_val", "nxv"), ("y_val", "nyv"))}
        episode = {key: body["episode"][key].numpy().copy() for key in ("t", "student_steps", "val", "last")}
        for key in ("t", "student_steps", "val", "last"):
            if episode[key].shape != getattr(core, key).shape:
                raise ValueError(f"the state's {key} has shape {episode[key].shape}, this vector env's {getattr(core, key).shape}")
        rng = body["rng"]
        if not len(rng["np_random"]) == len(rng["streams"]) == len(rng["seeds"]) == venv.num_envs:
            raise ValueError(f"the state holds RNGs of {len(rng['np_random'])} sub-envs, this vector env has {venv.num_envs}")
        rngs = [_np_rng(s) for s in rng["np_random"]]
        streams = []
        for s in rng["streams"]:
            stream = IndexStream(
                core.n_train, core.n_val, cfg.batch_size, cfg.unroll_steps, cfg.val_batch_size, 0, torch.device("cpu"), cfg.finetune_start
            )
            _restore_sampler(stream.train_sampler, s["train"], "training batch")
            _restore_sampler(stream.val_sampler, s["val"], "validation batch")
            if stream.finetune_sampler is not None:
                _restore_sampler(stream.finetune_sampler, s["finetune"], "fine-tuning batch")
            stream.augment_generator.set_state(s["augment"])
            stream.drawn, stream.from_val = int(s["drawn"]), bool(s["from_val"])
            streams.append(stream)
        u = body["unroll"]
        unroll = None
        if u is not None:
            put = lambda t: t.to(device=core.device, dtype=core.dtype if t.is_floating_point() else t.dtype)  # noqa: E731
            unroll = core.unroll_record(
                u["t"].numpy().copy(),
                _fit("kept look-ahead's phi", u["phi"], core.phi),
                [_fit(f"kept look-ahead's parameter {i}", s, t) for i, (s, t) in enumerate(zip(u["params"], core.params))],
                [_fit(f"kept look-ahead's buffer {i}", s, t) for i, (s, t) in enumerate(zip(u["buffers"], core.buffers))],
                UnrollStats(**{key: put(value) for key, value in u["stats"].items()}),
            )

        def commit() -> None:
            with torch.no_grad():
                for own, new in zip(core.params + core.buffers, params + buffers):
                    own.copy_(new)
                core.phi = phi.clone()
            if loss_grad is not None:
                core.loss_grad = loss_grad
            for key, value in split.items():
                setattr(core, key, value)
            core.x_fixed, core.y_fixed = core.x_pool[core.val_map[:, : core.n_fixed]], core.y_pool[core.val_map[:, : core.n_fixed]]
            core.nx, core.ny, core.nxv, core.nyv = nxt["x"], nxt["y"], nxt["x_val"], nxt["y_val"]
            for key, value in episode.items():
                setattr(core, key, value)
            core.rngs, core.streams, core.seed_values = rngs, streams, list(rng["seeds"])
            core._unroll = unroll

    commit()
    venv._autoreset = autoreset
    venv._ready = True
