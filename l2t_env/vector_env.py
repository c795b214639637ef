"""``L2T-v0`` as a native Gymnasium vector env: N students of one task trained as one batch.

``gym.make_vec("L2T-v0", num_envs=N, vectorization_mode="vector_entry_point", **kwargs)`` builds
:class:`L2TVectorEnv`. Each sub-env is the single env's episode with its own seed (split, student
init, phi init, batch order, augmentation); with ``batching="vmap"`` the N students, their taught
losses and the look-ahead hypergradient run as one ``torch.func.vmap`` computation over stacked
parameters, so the per-operation overhead that dominates small students is paid once, not N times.
``batching="loop"`` steps N single envs one after another (any module, every option), and
``"auto"`` picks vmap unless the student cannot be vmapped, an option needs the loop, or the
student is convolutional on the CPU (where vmapped convolutions gained nothing consistent).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Callable, Optional, Sequence, Union

import gymnasium as gym
import numpy as np
import torch
from gymnasium.utils import seeding
from gymnasium.vector import AutoresetMode, VectorEnv
from gymnasium.vector.utils import batch_space
from torch.func import vmap

from l2t_env import checkpoint, rules
from l2t_env.data import IndexStream, split_indices, split_sizes
from l2t_env.env import L2TEnv
from l2t_env.functional import (
    BatchedStudent,
    UnrollStats,
    batched_cross_entropy,
    evaluate_batched,
    sgd_unroll,
    summarise_batched,
)
from l2t_env.tasks import build_student

BATCHING_MODES = ("auto", "vmap", "loop")
_STATS = ("train_loss", "train_acc", "loss_value", "grad_norm")
#: samples (over all students) per evaluation forward pass
_EVAL_SAMPLES = 8192


@dataclass
class _BatchedUnroll:
    """The batched look-ahead kept so that committing the same phi needs no second run."""

    t: np.ndarray
    phi: torch.Tensor
    params: list[torch.Tensor]
    buffers: list[torch.Tensor]
    stats: UnrollStats


class L2TVectorEnv(VectorEnv):
    """N ``L2T-v0`` sub-envs of one task in one process; see ``L2TEnv``'s "Vectorized environment".

    Spaces are the single env's, batched (``Dict`` of ``[N, ...]`` Boxes; actions ``[N, n_action]``).
    Autoreset follows Gymnasium 1.x ``NEXT_STEP``: the step after a sub-env's episode ends resets
    it (its action is ignored, reward 0). ``info`` holds the single env's keys as arrays with
    ``_key`` masks. ``reset(seed=s)`` seeds sub-env ``i`` with ``s + i`` (or pass a list);
    ``options={"reset_mask": mask}`` resets only the masked sub-envs.

    Batched differentiable hooks (row ``i`` is sub-env ``i``): ``phi`` and ``loss_grad``
    (``[N, n_phi]``), ``phi_after(actions)``, ``unrolled_val_loss(phi)`` (``[N]`` with graph) and
    ``commit_phi(phi)``.
    """

    metadata = {"render_modes": [], "autoreset_mode": AutoresetMode.NEXT_STEP}

    def __init__(self, num_envs: int = 1, *, batching: str = "auto", **env_kwargs: Any) -> None:
        if isinstance(num_envs, bool) or not isinstance(num_envs, (int, np.integer)) or num_envs < 1:
            raise ValueError(f"num_envs={num_envs!r}, expected an integer >= 1")
        if batching not in BATCHING_MODES:
            raise ValueError(f"batching={batching!r}, expected one of {list(BATCHING_MODES)}")
        self.num_envs = int(num_envs)
        self.env_kwargs = dict(env_kwargs)
        # The first sub-env validates every argument and supplies config, spaces and loss family.
        self._template = L2TEnv(**env_kwargs)
        tpl = self._template
        self.config = tpl.config
        self.loss_family = tpl.loss_family
        self.n_phi = tpl.n_phi
        self.action_scale = tpl.action_scale
        self.action_mode = tpl.action_mode
        self.groups = tpl.groups
        self.control = tpl.control
        self.lookahead_steps = tpl.lookahead_steps
        self.device, self.dtype = tpl.device, tpl.dtype
        self.observation_mode = tpl.observation_mode
        self.single_observation_space = tpl.observation_space
        self.single_action_space = tpl.action_space
        self.observation_space = batch_space(self.single_observation_space, self.num_envs)
        self.action_space = batch_space(self.single_action_space, self.num_envs)
        if batching == "auto":
            batching = "loop" if tpl.checkpoint_unroll or _conv_on_cpu(tpl) or not _vmappable(tpl) else "vmap"
        elif batching == "vmap" and tpl.checkpoint_unroll:
            raise ValueError("checkpoint_unroll=True needs batching='loop' (its backward is per student)")
        self.batching = batching
        self._autoreset = np.zeros(self.num_envs, dtype=bool)
        self._ready = False
        if batching == "loop":
            self._core: Union[_LoopCore, _VmapCore] = _LoopCore(self, tpl)
        else:
            self._core = _VmapCore(self, tpl)

    # ------------------------------------------------------------------ gymnasium API
    def reset(self, *, seed: Union[int, Sequence[Optional[int]], None] = None, options: Optional[dict] = None):
        if seed is None:
            seeds: list[Optional[int]] = [None] * self.num_envs
        elif isinstance(seed, (int, np.integer)):
            seeds = [int(seed) + i for i in range(self.num_envs)]
        else:
            seeds = list(seed)
            if len(seeds) != self.num_envs:
                raise ValueError(f"seed is a list of {len(seeds)} seeds, expected num_envs={self.num_envs}")
        unknown = sorted(set(options or {}) - {"reset_mask", "state"})
        if unknown:
            raise ValueError(
                f"unknown reset option(s) {unknown}; valid: ['reset_mask'] (a bool array, one entry per sub-env), "
                "['state'] (a saved env.unwrapped.state_dict())"
            )
        if options and "state" in options:
            if seed is not None or "reset_mask" in options:
                raise ValueError("reset(options={'state': ...}) continues the saved episodes; pass no seed and no reset_mask")
            self.load_state_dict(options["state"])
            t = self._core.teaching_steps()
            return self.observation(), _rows_info(self.num_envs, np.arange(self.num_envs), {"resumed_at": t})
        mask = np.ones(self.num_envs, dtype=bool)
        if options and "reset_mask" in options:
            mask = np.asarray(options["reset_mask"])
            if mask.shape != (self.num_envs,) or mask.dtype != np.bool_:
                raise ValueError(f"options['reset_mask'] must be a bool array of shape ({self.num_envs},), got {mask.dtype} {mask.shape}")
            if not mask.any():
                raise ValueError("options['reset_mask'] has no True entry: nothing to reset")
            if not self._ready:
                raise RuntimeError("reset with a reset_mask needs a full reset() first")
        rows = np.flatnonzero(mask)
        info = self._core.reset_rows(rows, [seeds[i] for i in rows])
        self._autoreset[rows] = False
        self._ready = True
        return self._core.observe(np.zeros(self.num_envs, dtype=bool)), info

    def step(self, actions: Any):
        self._require_reset()
        a = self._validate_actions(actions)
        return self._advance(self.phi_after(a).detach())

    def commit_phi(self, phi: torch.Tensor):
        """A step that sets each sub-env's phi directly (``[N, n_phi]``); returns ``step``'s 5-tuple."""
        self._require_reset()
        return self._advance(rules.checked_phi(phi, (self.num_envs, self.n_phi), self.device, self.dtype))

    def _advance(self, phi: torch.Tensor):
        stepped = ~self._autoreset
        reward, terminated, truncated, info = self._core.advance(phi, np.flatnonzero(stepped))
        reset_rows = np.flatnonzero(self._autoreset)
        if len(reset_rows):
            info = _merge_infos(info, self._core.reset_rows(reset_rows, [None] * len(reset_rows)))
            reward[reset_rows] = 0.0
            terminated[reset_rows] = False
            truncated[reset_rows] = False
        done = terminated | truncated
        obs = self._core.observe(done)
        self._autoreset = done.copy()
        return obs, reward, terminated, truncated, info

    def close_extras(self, **kwargs: Any) -> None:
        self._ready = False

    @property
    def nondeterministic(self) -> bool:
        return self.device.type != "cpu"

    @property
    def np_random_seed(self) -> tuple[int, ...]:
        """The seed of each sub-env's latest seeded reset (as ``SyncVectorEnv`` reports them)."""
        return self._core.seeds()

    # ------------------------------------------------------------------ checkpoints
    def state_dict(self) -> dict:
        """Everything that decides the rest of the N episodes (each sub-env's student, phi, teaching
        step, split, drawn batches, samplers and RNGs, observed statistics, latest look-ahead; the
        autoreset mask), as CPU tensors and plain values: ``torch.save``-able, also with
        ``weights_only`` loading. See :func:`l2t_env.checkpoint.vector_state_dict`."""
        return checkpoint.vector_state_dict(self)

    def load_state_dict(self, state: dict) -> None:
        """Continue the N episodes of a :meth:`state_dict` in this or a freshly made vector env of the
        same task, loss family, settings, ``num_envs`` and batching; a state that does not fit raises
        naming both sides and leaves the env unchanged. ``reset(options={"state": state})`` also
        returns the observation (:meth:`observation`)."""
        checkpoint.load_vector_state_dict(self, state)

    def observation(self) -> Any:
        """The current batched observation, as the latest ``reset`` or ``step`` returned it (after
        loading a state: the saved run's), with no computation."""
        self._require_reset()
        return self._core.observation()

    # ------------------------------------------------------------------ hooks
    @property
    def phi(self) -> torch.Tensor:
        """The current loss parameters of every sub-env, ``[N, n_phi]`` (detached)."""
        self._require_reset()
        return self._core.phi.detach()

    @property
    def loss_grad(self) -> torch.Tensor:
        """The latest stage-1 hypergradients, ``[N, n_phi]`` (zero rows for sub-envs that just ended)."""
        self._require_reset()
        if not self.lookahead_steps:
            raise RuntimeError("loss_grad needs a look-ahead; this env was made with lookahead='off'")
        return self._core.loss_grad

    def gradient_direction(self) -> torch.Tensor:
        """Per sub-env and group ``loss_grad / rms(loss_grad)`` clipped to [-1, 1] (see ``L2TEnv``)."""
        return rules.gradient_direction(self.loss_grad, self.groups)

    def phi_after(self, action: torch.Tensor) -> torch.Tensor:
        """``phi - action_scale * action`` per sub-env, as :meth:`step` computes it (keeps the graph)."""
        self._require_reset()
        action = action.to(device=self.device, dtype=self.dtype)
        return rules.phi_after(
            self._core.phi, action, self.action_mode, self.action_scale, self.groups, self.gradient_direction, self.control
        )

    def unrolled_val_loss(self, phi: torch.Tensor, steps: Optional[int] = None) -> torch.Tensor:
        """Per sub-env validation CE (``[N]``, with graph to ``phi``) after a differentiable unroll of
        the next ``steps`` (default K) student steps under ``phi`` (``[N, n_phi]``)."""
        self._require_reset()
        steps = self.config.unroll_steps if steps is None else int(steps)
        if not 1 <= steps <= self.config.unroll_steps:
            raise ValueError(f"steps={steps}, expected 1..{self.config.unroll_steps}")
        if tuple(phi.shape) != (self.num_envs, self.n_phi):
            raise ValueError(f"phi has shape {tuple(phi.shape)}, expected ({self.num_envs}, {self.n_phi})")
        return self._core.lookahead(phi, steps)

    # ------------------------------------------------------------------ checks
    def _require_reset(self) -> None:
        if not self._ready:
            raise RuntimeError("call reset() before step()")

    def _validate_actions(self, actions: Any) -> torch.Tensor:
        a = rules.as_action_tensor(actions, self.action_space.shape, self.device, self.dtype, "actions have", "one row per sub-env")
        rules.check_action_values(a, rules.action_bound(self.action_mode), batched=True)
        return a


# ---------------------------------------------------------------------- helpers
def _conv_on_cpu(env: L2TEnv) -> bool:
    """A convolutional student on the CPU: vmapped (grouped) convolutions gained nothing consistent
    over N single students there (``benchmarks/vector_env.py``, ResNet-8: 0.65x-1.3x on an idle
    2-core host, 0.2x-0.3x on a loaded one), so ``"auto"`` loops; ``batching="vmap"`` batches them."""
    if env.device.type != "cpu":
        return False
    module = build_student(env.config, env.raw.input_shape, env.raw.num_classes, 0)
    return any(isinstance(m, torch.nn.modules.conv._ConvNd) for m in module.modules())


def _vmappable(env: L2TEnv) -> bool:
    """Whether the task's student and loss family survive a vmapped forward and the double backward
    of a look-ahead (``"auto"``); two students on two examples."""
    cfg, raw = env.config, env.raw
    try:
        module = build_student(cfg, raw.input_shape, raw.num_classes, 0).to(device=env.device, dtype=env.dtype)
        student = BatchedStudent(module)
        params = [p.detach().unsqueeze(0).repeat(2, *[1] * p.dim()).requires_grad_(True) for p in module.parameters()]
        buffers = [b.unsqueeze(0).repeat(2, *[1] * b.dim()) for b in module.buffers()]
        x = raw.x_pool[:2].to(device=env.device, dtype=env.dtype).unsqueeze(0).expand(2, *raw.x_pool[:2].shape)
        y = raw.y_pool[:2].to(env.device).unsqueeze(0).expand(2, 2)
        family = env.loss_family
        phi = family.init_params(0, env.device, env.dtype).unsqueeze(0).repeat(2, 1).requires_grad_(True)
        loss = vmap(lambda p, z, t: family(p, z, t))(phi, student(params, buffers, x), y)
        (g,) = torch.autograd.grad(loss.sum(), params[:1], create_graph=True)
        (g.sum() + phi.sum()).backward()
        return True
    except Exception:  # noqa: BLE001 - any failure means: fall back to the loop
        return False


def _merge_infos(a: dict, b: dict) -> dict:
    """Gymnasium-style vector infos ``a`` overlaid with ``b`` where ``b``'s masks are set."""
    out = dict(a)
    for key, value in b.items():
        if key.startswith("_"):
            continue
        mask = b[f"_{key}"]
        if key not in out:
            out[key], out[f"_{key}"] = value, mask.copy()
        elif isinstance(value, dict):
            out[key] = _merge_infos(out[key], value)
            out[f"_{key}"] = out[f"_{key}"] | mask
        else:
            merged = out[key].copy()
            merged[mask] = value[mask]
            out[key], out[f"_{key}"] = merged, out[f"_{key}"] | mask
    return out


class _LoopCore:
    """``batching="loop"``: N single envs stepped one after another (any module, every option)."""

    def __init__(self, owner: L2TVectorEnv, template: L2TEnv) -> None:
        self.owner = owner
        self.envs = [template] + [L2TEnv(**owner.env_kwargs) for _ in range(owner.num_envs - 1)]
        self._obs: list[Any] = [None] * owner.num_envs

    @property
    def phi(self) -> torch.Tensor:
        return torch.stack([env.phi for env in self.envs])

    @property
    def loss_grad(self) -> torch.Tensor:
        return torch.stack([env.loss_grad for env in self.envs])

    def seeds(self) -> tuple[int, ...]:
        return tuple(int(env.np_random_seed) for env in self.envs)

    def lookahead(self, phi: torch.Tensor, steps: int) -> torch.Tensor:
        return torch.stack([env.unrolled_val_loss(p, steps) for env, p in zip(self.envs, phi.unbind(0))])

    def reset_rows(self, rows: np.ndarray, seeds: list[Optional[int]]) -> dict:
        info: dict = {}
        for i, seed in zip(rows, seeds):
            self._obs[i], env_info = self.envs[i].reset(seed=seed)
            info = self.owner._add_info(info, env_info, int(i))
        return info

    def advance(self, phi: torch.Tensor, rows: np.ndarray):
        n = self.owner.num_envs
        reward = np.zeros(n)
        terminated = np.zeros(n, dtype=bool)
        truncated = np.zeros(n, dtype=bool)
        info: dict = {}
        for i in rows:
            self._obs[i], reward[i], terminated[i], truncated[i], env_info = self.envs[i].commit_phi(phi[i])
            info = self.owner._add_info(info, env_info, int(i))
        return reward, terminated, truncated, info

    def teaching_steps(self) -> np.ndarray:
        return np.array([env.t for env in self.envs], dtype=np.int64)

    def observation(self) -> Any:
        return self.observe(np.zeros(self.owner.num_envs, dtype=bool))

    def observe(self, done: np.ndarray) -> Any:
        return gym.vector.utils.concatenate(
            self.owner.single_observation_space, self._obs, gym.vector.utils.create_empty_array(self.owner.single_observation_space, self.owner.num_envs)
        )


class _VmapCore:
    """``batching="vmap"``: the N students' state stacked row-wise and stepped as one computation.

    Data: one copy of the pool on the device and, per student, the pool indices of its train and
    validation splits; each step's K batches are drawn per student by its own seeded samplers
    (CPU indices, as the single env draws them) and gathered for all students at once.
    """

    #: the record of a kept look-ahead (:mod:`l2t_env.checkpoint` rebuilds one from a state)
    unroll_record = _BatchedUnroll

    def __init__(self, owner: L2TVectorEnv, template: L2TEnv) -> None:
        self.owner = owner
        self.env = template
        cfg, raw = template.config, template.raw
        self.n = n = owner.num_envs
        self.device, self.dtype = template.device, template.dtype
        self.x_pool = raw.x_pool.to(device=self.device, dtype=self.dtype)
        self.y_pool = raw.y_pool.to(device=self.device, dtype=torch.long)
        self.x_test = raw.x_test.to(device=self.device, dtype=self.dtype)
        self.y_test = raw.y_test.to(device=self.device, dtype=torch.long)
        self.n_train, self.n_val = split_sizes(len(raw.x_pool), cfg.val_fraction, cfg.val_size)
        self.n_fixed = min(cfg.reward_val_size or self.n_val, self.n_val)
        self.train_map = torch.zeros(n, self.n_train, dtype=torch.long, device=self.device)
        self.val_map = torch.zeros(n, self.n_val, dtype=torch.long, device=self.device)
        self.y_train = torch.zeros(n, self.n_train, dtype=torch.long, device=self.device)  # per student (label noise)
        module = build_student(cfg, raw.input_shape, raw.num_classes, 0).to(device=self.device, dtype=self.dtype)
        module.train(True)
        self.student = BatchedStudent(module)
        self.params = [p.detach().unsqueeze(0).repeat(n, *[1] * p.dim()).requires_grad_(True) for p in module.parameters()]
        self.buffers = [b.detach().unsqueeze(0).repeat(n, *[1] * b.dim()) for b in module.buffers()]
        self.phi = template.loss_family.init_params(0, self.device, self.dtype).unsqueeze(0).repeat(n, 1)
        self.rngs: list[np.random.Generator] = [np.random.default_rng(0)] * n
        self.seed_values = [-1] * n
        self.streams: list[Optional[IndexStream]] = [None] * n
        self.t = np.zeros(n, dtype=np.int64)
        self.student_steps = np.zeros(n, dtype=np.int64)
        self.val = np.zeros((n, 2))  # val_loss, val_acc of the fixed subset (latest evaluation)
        self.last = np.zeros((n, 4))  # train_loss, train_acc, loss_value, grad_norm
        k, b = cfg.unroll_steps, cfg.batch_size
        v = min(cfg.val_batch_size, self.n_val)
        shape = tuple(raw.x_pool.shape[1:])
        self.nx = torch.zeros(k, n, b, *shape, device=self.device, dtype=self.dtype)
        self.ny = torch.zeros(k, n, b, device=self.device, dtype=torch.long)
        self.nxv = torch.zeros(n, v, *shape, device=self.device, dtype=self.dtype)
        self.nyv = torch.zeros(n, v, device=self.device, dtype=torch.long)
        self.x_fixed = torch.zeros(n, self.n_fixed, *shape, device=self.device, dtype=self.dtype)
        self.y_fixed = torch.zeros(n, self.n_fixed, device=self.device, dtype=torch.long)
        self.loss_grad = torch.zeros_like(self.phi)
        self._unroll: Optional[_BatchedUnroll] = None
        family = template.loss_family
        self._loss = vmap(lambda phi, z, y: family(phi, z, y))

    def seeds(self) -> tuple[int, ...]:
        return tuple(int(v) for v in self.seed_values)

    # ------------------------------------------------------------------ rows
    def reset_rows(self, rows: np.ndarray, seeds: list[Optional[int]]) -> dict:
        cfg, raw = self.env.config, self.env.raw
        for i, seed in zip(rows, seeds):
            if seed is not None or self.streams[i] is None:
                self.rngs[i], self.seed_values[i] = seeding.np_random(seed)
            split_seed, student_seed, phi_seed, stream_seed = self.rngs[i].integers(0, 2**62, size=4).tolist()
            train_idx, val_idx, y_train = split_indices(raw, cfg.val_fraction, split_seed, val_size=cfg.val_size, label_noise=cfg.label_noise)
            self.train_map[i] = train_idx.to(self.device)
            self.y_train[i] = y_train.to(self.device)
            self.val_map[i] = val_idx.to(self.device)
            module = build_student(cfg, raw.input_shape, raw.num_classes, student_seed)
            with torch.no_grad():
                for own, new in zip(self.params + self.buffers, [*module.parameters(), *module.buffers()]):
                    own[i] = new.to(device=self.device, dtype=own.dtype)
                self.phi[i] = self.env.loss_family.init_params(phi_seed, self.device, self.dtype)
            self.streams[i] = IndexStream(
                self.n_train, self.n_val, cfg.batch_size, cfg.unroll_steps, cfg.val_batch_size, stream_seed, torch.device("cpu"), cfg.finetune_start
            )
            self.t[i] = 0
            self.student_steps[i] = 0
        rows_t = torch.as_tensor(rows, device=self.device)
        fixed = self.val_map[rows_t, : self.n_fixed]
        self.x_fixed[rows_t], self.y_fixed[rows_t] = self.x_pool[fixed], self.y_pool[fixed]
        self._draw(rows)
        self._unroll = None
        # initial statistics: the first K batches at the initial students, no update
        params = [p[rows_t].detach().requires_grad_(True) for p in self.params]
        buffers = [b[rows_t] for b in self.buffers]
        x, y = self.nx[:, rows_t].transpose(0, 1).flatten(1, 2), self.ny[:, rows_t].transpose(0, 1).flatten(1, 2)
        logits = self.student(params, buffers, x)
        loss = self._loss(self.phi[rows_t], logits, y)
        grads = torch.autograd.grad(loss.sum(), params)
        with torch.no_grad():
            stats = summarise_batched([logits.detach()], y.unsqueeze(0), [loss.detach()], grads, params)
        val = self._evaluate_fixed(params, [b[rows_t] for b in self.buffers], rows_t)  # the stats before that forward
        values = torch.stack([*(getattr(stats, k).to(torch.float64) for k in _STATS), *val], 1).cpu().numpy()
        self.last[rows] = values[:, :4]
        self.val[rows] = values[:, 4:]
        info = _rows_info(self.n, rows, {"val_loss": self.val[:, 0].copy(), "val_acc": self.val[:, 1].copy(), "diverged": np.zeros(self.n, dtype=bool)})
        if self.env.monitor_every:
            info = _merge_infos(info, self._monitor_info(rows, self.final_metrics(rows, rules.MONITOR_SPLITS)))
        return info

    def _monitor_info(self, rows: np.ndarray, metrics: dict[str, np.ndarray]) -> dict:
        """``info["monitor"]`` of ``rows`` (as the single env's), from metrics of those rows."""
        full = {key: np.zeros(self.n) for key in rules.MONITOR_KEYS}
        for key in rules.MONITOR_KEYS:
            full[key][rows] = metrics[key]
        return _rows_info(self.n, rows, {key: _rows_info(self.n, rows, value) for key, value in rules.monitor_info(full).items()})

    def _draw(self, rows: np.ndarray) -> None:
        """Draw the next step's batches of ``rows`` from their own streams into the batch tensors."""
        drawn = [self.streams[i].next_indices() for i in rows]  # type: ignore[union-attr]
        rows_t = torch.as_tensor(rows, device=self.device)
        idx = torch.stack([d[0] for d in drawn]).to(self.device)  # [R, K, B]
        vidx = torch.stack([d[1] for d in drawn]).to(self.device)  # [R, V]
        from_val = torch.tensor([self.streams[i].from_val for i in rows], device=self.device)  # type: ignore[union-attr]
        any_val = bool(from_val.any())  # train_split="val" or fine-tuning: these rows' training batches index val
        tidx = idx.clamp(max=self.n_train - 1) if any_val else idx  # (val rows are overwritten below)
        gidx = self.train_map[rows_t].gather(1, tidx.flatten(1)).view_as(idx)
        y = self.y_train[rows_t].gather(1, tidx.flatten(1)).view_as(idx)
        if any_val:
            rv = rows_t[from_val]
            gidx[from_val] = self.val_map[rv].gather(1, idx[from_val].flatten(1)).view_as(idx[from_val])
            y[from_val] = self.y_pool[gidx[from_val]]
        x = self.x_pool[gidx]
        augment = self.env.augment
        if augment is not None:
            x = torch.stack([augment(x[r].flatten(0, 1), self.streams[i].augment_generator).view_as(x[r]) for r, i in enumerate(rows)])  # type: ignore[union-attr]
        gv = self.val_map[rows_t].gather(1, vidx)
        self.nx[:, rows_t] = x.transpose(0, 1)
        self.ny[:, rows_t] = y.transpose(0, 1)
        self.nxv[rows_t] = self.x_pool[gv]
        self.nyv[rows_t] = self.y_pool[gv]

    def _chunk(self, rows: int) -> int:
        return max(1, min(1000, _EVAL_SAMPLES // max(rows, 1)))

    def _evaluate_fixed(self, params: list[torch.Tensor], buffers: list[torch.Tensor], rows_t: torch.Tensor):
        xf, yf = self.x_fixed[rows_t], self.y_fixed[rows_t]
        return evaluate_batched(self.student, params, buffers, lambda a, b: (xf[:, a:b], yf[:, a:b]), self.n_fixed, self._chunk(len(rows_t)))

    def final_metrics(self, rows: np.ndarray, splits: tuple[str, ...] = ("train", "val", "test")) -> dict[str, np.ndarray]:
        """Loss and accuracy of the students of ``rows`` on their whole ``splits`` (train, val and test)."""
        rows_t = torch.as_tensor(rows, device=self.device)
        params = [p[rows_t] for p in self.params]
        buffers = [b[rows_t] for b in self.buffers]
        chunk = self._chunk(len(rows))
        out = {}
        for split, index, labels in (
            ("train", self.train_map[rows_t], self.y_train[rows_t]),
            ("val", self.val_map[rows_t], self.y_pool[self.val_map[rows_t]]),
        ):
            if split not in splits:
                continue
            take = lambda a, b, index=index, labels=labels: (self.x_pool[index[:, a:b]], labels[:, a:b])  # noqa: E731
            loss, acc = evaluate_batched(self.student, params, buffers, take, index.shape[1], chunk)
            out[f"{split}_loss"], out[f"{split}_acc"] = loss, acc
        r = len(rows)
        take = lambda a, b: (self.x_test[a:b].expand(r, *self.x_test[a:b].shape), self.y_test[a:b].expand(r, b - a))  # noqa: E731
        if "test" in splits:
            out["test_loss"], out["test_acc"] = evaluate_batched(self.student, params, buffers, take, len(self.x_test), chunk)
        values = torch.stack(list(out.values()), 1).cpu().numpy()
        return {key: values[:, j] for j, key in enumerate(out)}

    # ------------------------------------------------------------------ stepping
    def _unroll_all(self, phi: torch.Tensor, params: list[torch.Tensor], buffers: list[torch.Tensor], steps: int, create_graph: bool):
        return sgd_unroll(
            self.student,
            params,
            buffers,
            self.nx,
            self.ny,
            lambda z, y: self._loss(phi, z, y),
            self.env.config.lr,
            create_graph=create_graph,
            steps=steps,
            summary=summarise_batched,
        )

    def lookahead(self, phi: torch.Tensor, steps: int) -> torch.Tensor:
        buffers = [b.clone() for b in self.buffers]
        params0 = [p.detach().clone().requires_grad_(True) for p in self.params]
        params, stats = self._unroll_all(phi, params0, buffers, steps, create_graph=True)
        val_buffers = [b.clone() for b in buffers]  # the val forward must not move the kept stats
        val_loss = batched_cross_entropy(self.student(params, val_buffers, self.nxv), self.nyv)
        if steps == self.env.config.unroll_steps:
            self._unroll = _BatchedUnroll(self.t.copy(), phi.detach().clone(), [p.detach() for p in params], buffers, stats)
        return val_loss

    def advance(self, phi: torch.Tensor, rows: np.ndarray):
        env, cfg = self.env, self.env.config
        n = self.n
        cached = self._unroll
        reused = cached is not None and np.array_equal(cached.t, self.t) and torch.equal(cached.phi, phi)
        if reused:
            with torch.no_grad():
                for own, new in zip(self.params + self.buffers, cached.params + cached.buffers):  # type: ignore[union-attr]
                    own.copy_(new)
            stats = cached.stats  # type: ignore[union-attr]
        else:
            _, stats = self._unroll_all(phi, self.params, self.buffers, cfg.unroll_steps, create_graph=False)
        self._unroll = None
        stepped = np.zeros(n, dtype=bool)
        stepped[rows] = True
        with torch.no_grad():
            self.phi[torch.as_tensor(rows, device=self.device)] = phi[torch.as_tensor(rows, device=self.device)]
        self.t[stepped] += 1
        self.student_steps[stepped] += cfg.unroll_steps
        was_evaluated = stepped & rules.evaluated(self.t, env.reward_every, cfg.teaching_steps)
        values = [getattr(stats, k).to(torch.float64) for k in _STATS] + [stats.finite.to(torch.float64)]
        if was_evaluated.any():
            values += list(self._evaluate_fixed(self.params, self.buffers, torch.arange(n, device=self.device)))
        values = torch.stack(values, 1).cpu().numpy()  # one sync
        prev = self.val.copy()
        if was_evaluated.any():
            self.val[was_evaluated] = values[was_evaluated, 5:7]
        self.last[stepped] = values[stepped, :4]
        reward, terminated, truncated, diverged = rules.outcome(
            env.reward_name, env.divergence_penalty, prev, self.val, was_evaluated, values[:, 4] > 0, self.t, cfg.teaching_steps
        )
        reward[~stepped] = 0.0
        terminated &= stepped
        truncated &= stepped
        diverged &= stepped
        keys = rules.step_info(self.val, self.last, self.t, self.student_steps, diverged, was_evaluated, np.full(n, reused))
        info = _rows_info(n, rows, keys)
        done_rows = np.flatnonzero(terminated | truncated)
        if len(done_rows):
            final = self.final_metrics(done_rows)
            full = {key: np.zeros(n) for key in final}
            for key, value in final.items():
                full[key][done_rows] = value
            end = rules.end_info(_rows_info(n, done_rows, full))
            info = _merge_infos(info, _rows_info(n, done_rows, {"final": end["final"], "test_loss": full["test_loss"], "test_acc": full["test_acc"]}))
        watched = np.flatnonzero(stepped & rules.monitored(self.t, env.monitor_every, terminated | truncated))
        if len(watched):
            done_watched = np.isin(watched, done_rows)
            metrics = self.final_metrics(watched[~done_watched], rules.MONITOR_SPLITS) if (~done_watched).any() else {}
            by_row = {key: np.zeros(len(watched)) for key in rules.MONITOR_KEYS}
            for key in rules.MONITOR_KEYS:
                if (~done_watched).any():
                    by_row[key][~done_watched] = metrics[key]
                if done_watched.any():
                    by_row[key][done_watched] = full[key][watched[done_watched]]
            info = _merge_infos(info, self._monitor_info(watched, by_row))
        going = np.flatnonzero(stepped & ~(terminated | truncated))
        if len(going):
            self._draw(going)
        return reward, terminated, truncated, info

    def observe(self, done: np.ndarray) -> Any:
        owner = self.owner
        if owner.lookahead_steps:
            if done.all() or not owner.n_phi:
                grad = torch.zeros_like(self.phi)
            else:
                phi = self.phi.detach().requires_grad_(True)
                (grad,) = torch.autograd.grad(self.lookahead(phi, owner.lookahead_steps).sum(), phi)
                if done.any():
                    grad = grad.masked_fill(torch.as_tensor(done, device=self.device)[:, None], 0.0)
            self.loss_grad = grad
        return self.observation()

    def teaching_steps(self) -> np.ndarray:
        return self.t.copy()

    def observation(self) -> Any:
        """The observation of the current state and the latest ``loss_grad``, with no computation."""
        owner = self.owner
        obs = {"student": rules.student_observation(self.t, self.env.config.teaching_steps, self.last, self.val, self.env.config.lr)}
        if owner.lookahead_steps:
            obs["loss_grad"] = rules.to_box(self.loss_grad)
        obs["loss_params"] = rules.to_box(self.phi)
        if owner.observation_mode == "flat":
            return np.concatenate([obs[key].reshape(self.n, -1) for key in self.env.dict_observation_space.spaces], axis=1)
        return obs


def _rows_info(n: int, rows: np.ndarray, values: dict[str, Any]) -> dict:
    """Gymnasium's vector info: each value with a ``_key`` mask that is True on ``rows`` (none if empty)."""
    mask = np.zeros(n, dtype=bool)
    mask[rows] = True
    info: dict = {}
    if not len(rows):
        return info
    for key, value in values.items():
        info[key] = value
        info[f"_{key}"] = mask.copy()
    return info
