"""The ``L2T-v0`` environment: a student's training, taught through its loss function."""

from __future__ import annotations

import dataclasses
from typing import Any, Optional, Union

import gymnasium as gym
import numpy as np
import torch
import torch.nn.functional as F
from gymnasium import spaces

from l2t_env import checkpoint
from l2t_env.data import BatchStream, Batches, check_batch_sizes, split_data
from l2t_env.functional import FunctionalStudent, MeasureFn, UnrollRecord, checkpointed_val_loss, evaluate, sgd_unroll, summarise
from l2t_env import rules
from l2t_env.losses import LossFamily, make_loss_family
from l2t_env.rules import (  # noqa: F401  (public names of this module since v0)
    ACTION_MODES,
    MONITOR_KEYS,
    MONITOR_SPLITS,
    REWARDS,
    STUDENT_FEATURES,
    VECTOR_BOUND,
)
from l2t_env.tasks import AUGMENTATIONS, RawData, TaskConfig, build_student, check_student, load_raw_data, load_task, resolve

_RAW_CACHE: dict[tuple, RawData] = {}


def resolve_device(device: Union[str, torch.device]) -> torch.device:
    """``"auto"`` -> CUDA when present, else the CPU; anything else as ``torch.device`` reads it.

    A device this machine lacks raises here, naming what is available, not deep inside torch.
    """
    if str(device) == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        resolved = torch.device(device)
    except (RuntimeError, TypeError) as err:
        raise ValueError(f"device={device!r} is not a device; expected 'auto', 'cpu', 'cuda' or 'cuda:N'") from err
    n_cuda = torch.cuda.device_count() if torch.cuda.is_available() else 0
    missing = (resolved.type == "cuda" and (resolved.index or 0) >= n_cuda) or (
        resolved.type == "mps" and not torch.backends.mps.is_available()
    )
    if missing:
        available = ["cpu", *(f"cuda:{i}" for i in range(n_cuda))] + (["mps"] if torch.backends.mps.is_available() else [])
        build = f"torch {torch.__version__}, " + (f"CUDA {torch.version.cuda}" if torch.version.cuda else "built without CUDA")
        raise ValueError(
            f"device={device!r} was asked for, but this machine has only {available} ({build}); "
            f"pass device='auto' to pick CUDA when present, else the CPU"
        )
    return resolved


def _cached_raw_data(config: TaskConfig) -> RawData:
    """Loading CIFAR takes seconds; keep one copy per data set and options in this process."""
    if isinstance(config.dataset, RawData):
        return config.dataset
    key = (config.dataset, repr(sorted(config.dataset_kwargs.items())), config.data_root)
    if key not in _RAW_CACHE:
        _RAW_CACHE[key] = load_raw_data(config)
    return _RAW_CACHE[key]



class L2TEnv(gym.Env):
    """
    ## Description

    A student network trains on a real task with plain SGD on a *taught* loss, here the Dynamic
    Loss Network (DLN) of L2T-DLN (Hai et al., NeurIPS 2023). Each step the teacher (the agent)
    changes the loss network's parameters phi; the student then takes K SGD steps on the new loss.
    The teacher sees the student's state and the loss network's state, including the loss state of
    L2T-DLN: the gradient of the validation cross-entropy with respect to phi through a
    differentiable look-ahead of the student's next K steps. See ``docs/method.md`` (section 2) for the equations.

    ## Action Space

    ``Box(-1, 1, (n_phi,), float32)``, with ``n_phi`` the number of loss-network parameters
    (5,000 for the default DLN). The step is ``phi <- phi - action_scale * action`` (default
    ``action_scale = 1e-3``, the reference value), so an action is a signed per-coordinate move, as
    the output of the L2T-DLN LSTM teacher. Float actions (numpy or torch) of exactly this shape,
    finite and within [-1, 1], are accepted; anything else raises and leaves the env unchanged.

    Low-dimensional modes for standard RL agents (``action_mode``), both needing the look-ahead:

    - ``"layer"``: ``Box(-1, 1, (n_layers,))``, one scale per loss-network layer (5 for the DLN).
      Layer l moves by ``action_scale * a_l * clip(g_l / rms(g_l), -1, 1)`` downhill, with ``g``
      the ``loss_grad`` observation; ``a_l = 1`` is a normalised hypergradient step.
    - ``"global"``: ``Box(-1, 1, (1,))``, one scale for all layers, the same rule.

    For teachers that output the loss parameters themselves (L2T-DLF, L2T-DFM):

    - ``"set"``: ``Box(-1e6, 1e6, (n_phi,))``, the action *is* the new phi (no step bound, no
      look-ahead needed); ``step(phi)`` is ``commit_phi(phi)``.

    For RL agents that control a loss's few hyper-parameters (in the spirit of Adaptive Loss
    Alignment, Huang et al., ICML 2019), with a robust loss (``loss="gce"``, ``"sce"``, ...) or
    the fused metric (``loss="dfm"``):

    - ``"control"``: ``Box(-1, 1, (n_phi,))``; each step sets phi outright, entry ``i`` to
      ``low_i + (a_i + 1) / 2 * (high_i - low_i)`` (no look-ahead needed: pass ``lookahead="off"``
      for speed). phi starts each episode at the family's start (e.g. GCE's ``q = 0.7``), which
      the first action replaces. The ranges:

      | loss      | phi (order)          | control range          | start      |
      |-----------|----------------------|------------------------|------------|
      | `gce`     | q                    | [0.01, 1]              | 0.7        |
      | `sce`     | alpha, beta          | [0, 1], [0, 2]         | 0.1, 1     |
      | `nce+rce` | alpha, beta          | [0, 10], [0, 10]       | 1, 1       |
      | `ls`      | eps                  | [0, 0.5]               | 0.1        |
      | `bootstrap`, `bootstrap-hard` | beta | [0, 1]            | 0.95, 0.8  |
      | `focal`   | gamma                | [0, 5]                 | 2          |
      | `dfm`     | one weight per metric| [0, 1] each            | one-hot ce |

      Other families (``dln``, ``dlf``) raise: their phi is not a few bounded hyper-parameters.

    ## Observation Space

    A ``Dict`` of float32 Boxes (or their concatenation with ``observation_mode="flat"``):

    | key           | shape       | meaning                                                      | min  | max |
    |---------------|-------------|--------------------------------------------------------------|------|-----|
    | `student`     | (8,)        | student state, table below                                   | below| below|
    | `loss_grad`   | (n_phi,)    | d(val CE)/d(phi) through a look-ahead of the next K steps    | -1e6 | 1e6 |
    | `loss_params` | (n_phi,)    | phi, the current loss-network parameters                     | -1e6 | 1e6 |

    ``loss_grad`` is absent with ``lookahead="off"``. With ``lookahead=1`` it unrolls one step
    instead of K. The look-ahead starts from the current student and uses exactly the K training
    batches and the validation batch (``val_batch_size``) that the next step will use, so it is
    stage 1 of the L2T-DLN iteration.

    | index | `student` entry | meaning                                                         | min  | max |
    |-------|-----------------|-----------------------------------------------------------------|------|-----|
    | 0     | progress        | teaching steps taken / teaching_steps                           | 0    | 1   |
    | 1     | train_loss      | mean CE on the last K training batches (at each step's input)   | 0    | 1e6 |
    | 2     | train_acc       | accuracy on the same batches                                    | 0    | 1   |
    | 3     | val_loss        | CE on the fixed validation subset (eval mode)                   | 0    | 1e6 |
    | 4     | val_acc         | accuracy on the fixed validation subset                         | 0    | 1   |
    | 5     | loss_value      | mean taught (DLN) loss over the last K steps                    | -1e6 | 1e6 |
    | 6     | grad_norm       | L2 norm of the student's gradient at the last of the K steps    | 0    | 1e6 |
    | 7     | lr              | the student's learning rate                                     | 0    | 1e6 |

    After ``reset`` entries 1, 2, 5 and 6 are measured at the initial student on the first K
    batches (no update). Non-finite values (a diverged student) are mapped to the bounds.

    ## Rewards

    ``reward="val_loss_decrease"`` (default): the decrease of the validation cross-entropy on the
    fixed validation subset over the step, ``val_loss(before) - val_loss(after)``. Alternatives:
    ``"val_acc_increase"`` (``val_acc(after) - val_acc(before)``) and ``"neg_val_loss"``
    (``-val_loss(after)``). The fixed subset is the first ``reward_val_size`` images of the
    seed's validation split (all of it when 0). The test split never enters reward or observation.
    A step whose student diverges gets ``divergence_penalty`` (default -10) instead.

    The evaluation of the fixed subset costs a forward pass over it every step (on a batch-25
    ResNet-8 with 100 images, about 7% of the step). ``reward_every=N`` runs it only on every N-th
    step and on the last one: those steps are rewarded for the change since the previous
    evaluation (``-val_loss`` for ``neg_val_loss``), the others get 0 and ``info["evaluated"] =
    False``, and the observation's ``val_loss``/``val_acc`` hold the latest evaluation. The
    episode's return is unchanged for the two difference rewards.

    ## Starting State

    ``reset(seed=s)`` draws, from ``s`` alone: the train/val split (and a noisy task's label
    noise), the student's initial weights, phi's initialisation (by default Kaiming-normal,
    fan_out; ``loss_kwargs={"init": ...}`` chooses another, see :mod:`l2t_env.dln_init`), the
    batch order, and the augmentation. On CPU equal seeds and equal actions give bit-identical
    observations and rewards on the same machine, torch build and thread count (the spec's
    ``nondeterministic=False``). Another CPU may pick other vector kernels (AVX2 / AVX-512) and
    round differently; for bit-equal results across machines run with pinned numerics
    (``l2t bench --pin-numerics``).

    ## Episode End

    1. Termination: the student diverges (a non-finite loss, gradient or parameter);
       ``info["diverged"] = True`` and the reward is ``divergence_penalty``.
    2. Truncation: after the task's ``teaching_steps`` steps.

    On the last step ``info`` also holds ``test_loss`` and ``test_acc`` of the final student, and
    ``info["final"]``: loss and accuracy on the whole train, val and test splits.

    With ``monitor_every=N`` (> 0), the ``info`` of ``reset`` and of every N-th step (and of the
    last) holds ``info["monitor"]``: loss and accuracy of the current student on the whole
    validation and test splits (``val_loss``, ``val_acc``, ``test_loss``, ``test_acc``). It is for
    reporting early stopping (the test accuracy at the step of best validation accuracy), not for
    teachers: the test split must not steer teaching, and nothing in observation or reward uses it.
    The env is usable again after ``reset``.

    ## Arguments

    | parameter            | type                   | default               | description                                              |
    |----------------------|------------------------|-----------------------|----------------------------------------------------------|
    | `task`               | str, path, TaskConfig  | `"digits-mlp"`        | built-in task name, a task YAML, or a config             |
    | `loss`               | str or LossFamily      | `"dln"`               | the taught loss family (`dln`, `dlf`, `dfm`, `ce`, or a  |
    |                      |                        |                       | robust loss: `gce`, `sce`, `nce+rce`, `ls`, ...)         |
    | `loss_kwargs`        | dict                   | `{}`                  | e.g. `{"hidden": [40, 40, 40, 40]}` for the DLN;         |
    |                      |                        |                       | `{"init": "ce"}` starts it fitted (see `dln_init`)       |
    | `action_scale`       | float                  | `1e-3`                | phi <- phi - action_scale * action                       |
    | `lookahead`          | `"K"`, int, `"off"`    | `"K"`                 | horizon of the `loss_grad` look-ahead                    |
    | `reward`             | str                    | `"val_loss_decrease"` | one of the rewards above                                 |
    | `divergence_penalty` | float                  | `-10.0`               | reward of a step whose student diverged                  |
    | `reward_every`       | int                    | `1`                   | evaluate the fixed val subset every N steps (see Rewards)|
    | `monitor_every`      | int                    | `0`                   | report whole val/test metrics every N steps in           |
    |                      |                        |                       | `info["monitor"]` (0: never; see Episode End)            |
    | `observation_mode`   | `"dict"` or `"flat"`   | `"dict"`              | flat = one Box, the Dict flattened                       |
    | `action_mode`        | str                    | `"full"`              | `full`, `layer`, `global`, `set` or `control`            |
    |                      |                        |                       | (see Action Space)                                       |
    | `checkpoint_unroll`  | bool                   | `False`               | recompute the look-ahead step by step in its backward:   |
    |                      |                        |                       | one step's graph in memory instead of K, ~1 more pass    |
    | `device`             | str                    | `"auto"`              | `"auto"` picks CUDA when present; a device this machine  |
    |                      |                        |                       | lacks raises, naming the available ones                  |
    | `dtype`              | str or torch.dtype     | `"float32"`           | `"float64"` for finite-difference checks                 |
    | `**task_overrides`   |                        |                       | any `TaskConfig` field, e.g. `lr=0.05, teaching_steps=50`|

    The task is checked when the env is made, before any training: ``batch_size`` larger than the
    training split (or than the validation split, when ``train_split="val"`` or ``finetune_fraction``
    trains on it) raises, naming the split's size; ``val_batch_size`` and ``reward_val_size``
    larger than the validation split are clipped to it (all of the split is used). The student gets
    a dry forward on two examples: it must accept the data's example shape and return one logit
    per class; user data must be finite with labels in ``0..num_classes-1``. Each failure raises a
    ``ValueError`` naming the tensor or field, the bad value and what was expected.

    ## Differentiable hooks (on ``env.unwrapped``)

    - ``phi``: the current loss parameters (a detached tensor on the student's device).
    - ``loss_grad``: the latest look-ahead hypergradient (the observation's, unclipped, on device).
    - ``phi_after(action)``: ``phi - action_scale * action`` (or the action mode's rule) as the
      env computes it (keeps the action's graph), so a teacher's phi' and the env's agree bit for bit.
    - ``unrolled_val_loss(phi, measure=None)``: the validation CE (or ``measure(logits, y)``, e.g.
      L2T-DLF's smoothed 0-1 error) after a differentiable K-step unroll from the
      current student under ``phi`` on the next step's batches: a scalar tensor with graph. With
      ``checkpoint_unroll=True`` the graph is one checkpointed node (first-order differentiable
      only: ``backward``/``autograd.grad`` once, no double backward through it).
    - ``commit_phi(phi)``: a full ``step`` that sets phi directly (no action bound).
    - ``batch_logits(batches=None)``: the current student's logits on (the first ``batches`` of)
      the next step's K training batches (no graph; train mode on copied buffers) and their
      labels, for teachers that summarise them.
    A ``step`` or ``commit_phi`` to the phi of the most recent unroll reuses that unroll's student
    instead of recomputing it (``info["reused_unroll"]``).

    ## Checkpoints

    ``env.unwrapped.state_dict()`` snapshots everything that decides the rest of the episode
    (student, phi, teaching step, split, batch stream and every RNG of the env, the observed
    statistics, the latest look-ahead) as CPU tensors and plain values; ``torch.save`` it.
    ``load_state_dict(sd)``, or ``env.reset(options={"state": sd})`` through wrappers, continues
    that episode in this or a freshly made env of the same task, loss family and settings: on CPU
    the rest of the episode is bit-identical to the uninterrupted run (in another process, with
    ``MKL_CBWR=COMPATIBLE`` or ``--pin-numerics``; without it MKL may round the last float32 bit
    differently there: docs/reproducibility.md). ``observation()`` returns the
    current observation. A state of another task or loss family raises, naming both.

    ## Where the rules live

    The rules above (spaces and bounds, action modes and checks, evaluation and monitor cadence,
    reward, divergence, ``info``) are written once in :mod:`l2t_env.rules`, over a batch axis, and
    used by this env (a batch of one) and by the vector env below alike.

    ## Vectorized environment

    ``gym.make_vec("L2T-v0", num_envs=N, vectorization_mode="vector_entry_point", **kwargs)`` gives
    the native ``L2TVectorEnv`` (``l2t_env.vector_env``): N students of one task in one process,
    sub-env ``i`` seeded ``seed + i`` and following the single env with that seed and the same
    actions (to float32 rounding). Spaces are batched (``[N, ...]``), autoreset is Gymnasium's
    ``NEXT_STEP`` (``metadata["autoreset_mode"]``), ``info`` has the keys above as arrays with
    ``_key`` masks, a diverging sub-env terminates alone, and ``options={"reset_mask": m}``
    resets only the masked sub-envs. The hooks above exist batched on ``env.unwrapped`` (``phi``
    and ``loss_grad`` ``[N, n_phi]``, ``unrolled_val_loss(phi)`` ``[N]``, ``commit_phi``).

    ``batching="vmap"`` stacks the N students' parameters (and BatchNorm running statistics) and
    runs the students, the loss family and the look-ahead hypergradient through ``torch.func.vmap``;
    ``batching="loop"`` steps N single envs in turn (any module, ``checkpoint_unroll``);
    ``"auto"`` (default) takes vmap unless the student fails a vmapped double-backward probe, an
    option needs the loop, or the student is convolutional on the CPU (vmapped convolutions gained
    nothing consistent there; ``batching="vmap"`` forces them). ``vectorization_mode="sync"`` still works as for any env.

    ``env.unwrapped.state_dict()`` of the vector env snapshots all N episodes (every sub-env's
    student, phi, split, drawn batches, samplers and RNGs, statistics and latest look-ahead, and the
    autoreset mask) as the single env's does; ``load_state_dict(sd)`` or
    ``reset(options={"state": sd})`` continues them in a vector env of the same task, settings,
    ``num_envs`` and batching, bit-identically on CPU. A state that does not fit raises naming both
    sides and leaves the env unchanged.

    ## Version History

    * v0: initial version.

    Example:
        >>> import gymnasium as gym, l2t_env
        >>> env = gym.make("L2T-v0", teaching_steps=2)
        >>> obs, info = env.reset(seed=0)
        >>> sorted(obs), obs["loss_params"].shape
        (['loss_grad', 'loss_params', 'student'], (5000,))
    """

    metadata = {"render_modes": []}

    def __init__(
        self,
        task: Union[str, TaskConfig, None] = None,
        *,
        loss: Union[str, LossFamily] = "dln",
        loss_kwargs: Optional[dict] = None,
        action_scale: float = 1e-3,
        lookahead: Union[str, int, None] = "K",
        reward: str = "val_loss_decrease",
        divergence_penalty: float = -10.0,
        observation_mode: str = "dict",
        action_mode: str = "full",
        reward_every: int = 1,
        monitor_every: int = 0,
        checkpoint_unroll: bool = False,
        device: Union[str, torch.device] = "auto",
        dtype: Union[str, torch.dtype] = "float32",
        **task_overrides: Any,
    ) -> None:
        super().__init__()
        self.config = load_task(task, **task_overrides)
        rules.check_reward(reward)
        if observation_mode not in ("dict", "flat"):
            raise ValueError(f"observation_mode={observation_mode!r}, expected 'dict' or 'flat'")
        if not (np.isfinite(action_scale) and action_scale > 0):
            raise ValueError(f"action_scale={action_scale!r}, expected a finite number > 0")
        self.reward_name = reward
        self.divergence_penalty = float(divergence_penalty)
        self.action_scale = float(action_scale)
        self.observation_mode = observation_mode
        self.device = resolve_device(device)
        self.dtype = getattr(torch, dtype) if isinstance(dtype, str) else dtype
        if self.dtype not in (torch.float32, torch.float64):
            raise ValueError(f"dtype={dtype!r}, expected 'float32' or 'float64'")
        self.lookahead_steps = self._parse_lookahead(lookahead)
        if action_mode not in ACTION_MODES:
            raise ValueError(f"unknown action_mode {action_mode!r}; valid: {list(ACTION_MODES)}")
        if action_mode in ("layer", "global") and not self.lookahead_steps:
            raise ValueError(f"action_mode={action_mode!r} steps along loss_grad and needs a look-ahead; got lookahead='off'")
        self.action_mode = action_mode
        if not isinstance(checkpoint_unroll, bool):
            raise TypeError(f"checkpoint_unroll={checkpoint_unroll!r}, expected True or False")
        self.checkpoint_unroll = checkpoint_unroll
        if isinstance(reward_every, bool) or not isinstance(reward_every, (int, np.integer)) or reward_every < 1:
            raise ValueError(f"reward_every={reward_every!r}, expected an integer >= 1")
        self.reward_every = int(reward_every)
        if isinstance(monitor_every, bool) or not isinstance(monitor_every, (int, np.integer)) or monitor_every < 0:
            raise ValueError(f"monitor_every={monitor_every!r}, expected an integer >= 0 (0: no monitoring)")
        self.monitor_every = int(monitor_every)

        self.raw = _cached_raw_data(self.config)
        check_batch_sizes(self.config, self.raw)
        check_student(self.config, self.raw)
        self.loss_family = make_loss_family(loss, self.raw.num_classes, **(loss_kwargs or {}))
        self.n_phi = self.loss_family.n_params
        self.augment = resolve(AUGMENTATIONS[self.config.augment]) if self.config.augment else None

        self.groups = self.loss_family.layer_slices()
        self.control = rules.control_range(self.loss_family, action_mode, self.device, self.dtype)
        bound = rules.action_bound(action_mode)
        self.action_space = spaces.Box(-bound, bound, (rules.action_size(action_mode, self.n_phi, self.groups),), np.float32)
        obs_spaces = {"student": spaces.Box(rules.STUDENT_LOW, rules.STUDENT_HIGH, dtype=np.float32)}
        if self.lookahead_steps:
            obs_spaces["loss_grad"] = spaces.Box(-VECTOR_BOUND, VECTOR_BOUND, (self.n_phi,), np.float32)
        obs_spaces["loss_params"] = spaces.Box(-VECTOR_BOUND, VECTOR_BOUND, (self.n_phi,), np.float32)
        self.dict_observation_space = spaces.Dict(obs_spaces)
        self.observation_space = (
            spaces.flatten_space(self.dict_observation_space) if observation_mode == "flat" else self.dict_observation_space
        )
        self._ready = False

    # ------------------------------------------------------------------ set-up
    def _parse_lookahead(self, lookahead: Union[str, int, None]) -> int:
        k = self.config.unroll_steps
        if lookahead in (None, "off", False, 0):
            return 0
        if lookahead == "K":
            return k
        if isinstance(lookahead, (int, np.integer)) and not isinstance(lookahead, bool) and 1 <= lookahead <= k:
            return int(lookahead)
        raise ValueError(f"lookahead={lookahead!r}, expected 'K', 'off' or an integer in 1..{k} (K = unroll_steps)")

    @property
    def spec(self):  # noqa: D401 - gymnasium attribute
        return self._spec

    @spec.setter
    def spec(self, value) -> None:
        # A CUDA run is not bit-reproducible; say so in the spec that gym.make attaches.
        if value is not None and self.device.type != "cpu" and not value.nondeterministic:
            value = dataclasses.replace(value, nondeterministic=True)
        self._spec = value

    _spec = None

    @property
    def nondeterministic(self) -> bool:
        """True off the CPU, where GPU kernels may reorder floating-point sums between runs.

        False promises run-to-run bit equality on one machine and setup, not across CPUs.
        """
        return self.device.type != "cpu"

    def reset(self, *, seed: Optional[int] = None, options: Optional[dict] = None):
        unknown = sorted(set(options or {}) - {"state"})
        if unknown:
            raise ValueError(f"unknown reset option(s) {unknown}; valid: ['state'] (a saved env.unwrapped.state_dict())")
        if options and "state" in options:
            if seed is not None:
                raise ValueError(f"reset(seed={seed!r}, options={{'state': ...}}): a saved state continues its own episode; pass no seed")
            self.load_state_dict(options["state"])
            info = {"val_loss": self.val_loss, "val_acc": self.val_acc, "resumed_at": self.t}
            return self.observation(), info
        super().reset(seed=seed)
        seeds = self.np_random.integers(0, 2**62, size=4).tolist()
        split_seed, student_seed, phi_seed, stream_seed = seeds
        cfg = self.config
        self.splits = split_data(
            self.raw, cfg.val_fraction, split_seed, self.device, self.dtype, val_size=cfg.val_size, label_noise=cfg.label_noise
        )
        module = build_student(cfg, self.raw.input_shape, self.raw.num_classes, student_seed)
        self.student = FunctionalStudent(module.to(device=self.device, dtype=self.dtype))
        self.params, self.buffers = self.student.own_state()
        self.student.module.train(True)
        self._phi = self.loss_family.init_params(phi_seed, self.device, self.dtype)
        self.stream = BatchStream(
            self.splits, cfg.batch_size, cfg.unroll_steps, cfg.val_batch_size, stream_seed, self.augment, cfg.finetune_start
        )
        n_fixed = cfg.reward_val_size or len(self.splits.x_val)
        self._x_fixed, self._y_fixed = self.splits.x_val[:n_fixed], self.splits.y_val[:n_fixed]
        self.t = 0
        self.student_steps = 0
        self._unroll: Optional[UnrollRecord] = None
        self._next = self.stream.next()
        self.val_loss, self.val_acc = (v.item() for v in evaluate(self.student, self.params, self.buffers, self._x_fixed, self._y_fixed))
        self._last = self._initial_stats(self._next)
        self._ready = True
        obs = self._observation()
        info = {"val_loss": self.val_loss, "val_acc": self.val_acc, "diverged": False}
        if self.monitor_every:
            info["monitor"] = self.final_metrics(MONITOR_SPLITS)
        return obs, info

    def _initial_stats(self, batches: Batches) -> dict[str, float]:
        """Student state at reset: the first K batches scored at the initial student, no update."""
        buffers = [b.clone() for b in self.buffers]
        x = batches.x.flatten(0, 1)
        y = batches.y.flatten()
        logits = self.student(self.params, buffers, x)
        loss = self.loss_family(self._phi, logits, y)
        grads = torch.autograd.grad(loss, self.params)
        with torch.no_grad():
            stats = summarise([logits.detach()], y, [loss.detach()], grads, self.params)
        return {key: getattr(stats, key).item() for key in ("train_loss", "train_acc", "loss_value", "grad_norm")}

    def _require_reset(self) -> None:
        if not self._ready:
            raise RuntimeError("call reset() before step(); the episode has not started or has ended")

    # ------------------------------------------------------------------ hooks
    @property
    def phi(self) -> torch.Tensor:
        """The current loss parameters (detached, flat, on the student's device)."""
        if not hasattr(self, "_phi"):
            raise RuntimeError("call reset() first: phi is drawn from the episode seed")
        return self._phi.detach()

    def phi_after(self, action: torch.Tensor) -> torch.Tensor:
        """``phi - action_scale * action``, exactly as :meth:`step` computes it (keeps the graph).

        In the ``layer``/``global`` action modes the action is first expanded to a per-coordinate
        move: each group's scale times the normalised loss gradient (:meth:`gradient_direction`).
        """
        self._require_reset()
        action = action.to(device=self.device, dtype=self.dtype)
        direction = lambda: self.gradient_direction()[None]  # noqa: E731
        return rules.phi_after(
            self._phi[None], action[None], self.action_mode, self.action_scale, self.groups, direction, self.control
        )[0]

    @property
    def loss_grad(self) -> torch.Tensor:
        """The latest stage-1 hypergradient, the ``loss_grad`` observation before clipping (on device);
        after the last step of an episode, zeros (as the final observation's)."""
        if not self.lookahead_steps:
            raise RuntimeError("loss_grad needs a look-ahead; this env was made with lookahead='off'")
        if not hasattr(self, "_loss_grad"):
            raise RuntimeError("call reset() first: there is no loss state before an episode starts")
        return self._loss_grad

    def gradient_direction(self) -> torch.Tensor:
        """The low-dimensional modes' step direction: per group, ``loss_grad / rms(loss_grad)``
        clipped to [-1, 1], so a scale of +1 moves phi down the hypergradient by up to
        ``action_scale`` per coordinate, whatever the gradient's raw magnitude."""
        return rules.gradient_direction(self._loss_grad[None], self.groups)[0]

    def unrolled_val_loss(
        self, phi: torch.Tensor, steps: Optional[int] = None, measure: Optional[MeasureFn] = None
    ) -> torch.Tensor:
        """Validation CE after a differentiable unroll of the next ``steps`` (default K) student steps
        from the current student under loss parameters ``phi``, on the next step's batches.

        ``measure(logits, y) -> scalar`` replaces the CE on the validation batch (a teacher's own
        dev measure); it must be differentiable in the logits.

        The result carries the graph back to ``phi`` (and to whatever ``phi`` was computed from).
        A full-K unroll is kept, so that committing the same phi next reuses it.
        """
        self._require_reset()
        steps = self.config.unroll_steps if steps is None else int(steps)
        if not 1 <= steps <= self.config.unroll_steps:
            raise ValueError(f"steps={steps}, expected 1..{self.config.unroll_steps}")
        if phi.shape != (self.n_phi,):
            raise ValueError(f"phi has shape {tuple(phi.shape)}, expected ({self.n_phi},)")
        return self._lookahead(phi, steps, measure or F.cross_entropy)

    def batch_logits(self, batches: Optional[int] = None) -> tuple[torch.Tensor, torch.Tensor]:
        """The current student's logits on the first ``batches`` (default all K) of the next step's
        training batches, and their labels.

        Flattened to ``[batches*B, C]`` and ``[batches*B]``, detached; BatchNorm runs in train mode
        (the mode the taught loss sees) on copies of the buffers, so the student is not touched.
        """
        self._require_reset()
        k = self.config.unroll_steps
        n = k if batches is None else int(batches)
        if not 1 <= n <= k:
            raise ValueError(f"batches={batches!r}, expected 1..{k} (K = unroll_steps)")
        b = self._next
        with torch.no_grad():
            logits = self.student(self.params, [buf.clone() for buf in self.buffers], b.x[:n].flatten(0, 1))
        return logits, b.y[:n].flatten()

    def _lookahead(self, phi: torch.Tensor, steps: int, measure: MeasureFn = F.cross_entropy) -> torch.Tensor:
        """The differentiable unroll behind both hooks; a full-K one is kept for reuse by the commit."""
        b = self._next
        # Copies, so that a later in-place commit cannot invalidate a graph the teacher still holds.
        buffers = [buf.clone() for buf in self.buffers]
        if self.checkpoint_unroll:
            val_loss, params, stats = checkpointed_val_loss(  # copies the parameters it keeps
                self.student, self.params, buffers, b.x, b.y, self.loss_family, phi, self.config.lr, b.x_val, b.y_val, steps=steps,
                measure=measure,
            )
        else:
            params0 = [p.detach().clone().requires_grad_(True) for p in self.params]
            params, stats = sgd_unroll(
                self.student,
                params0,
                buffers,
                b.x,
                b.y,
                lambda z, y: self.loss_family(phi, z, y),
                self.config.lr,
                create_graph=True,
                steps=steps,
            )
            val_buffers = [buf.clone() for buf in buffers]  # the val forward must not move the kept stats
            val_loss = measure(self.student(params, val_buffers, b.x_val), b.y_val)
        if steps == self.config.unroll_steps:
            self._unroll = UnrollRecord(self.t, phi.detach().clone(), [p.detach() for p in params], buffers, stats)
        return val_loss

    def loss_gradient(self) -> torch.Tensor:
        """Stage 1: d(val CE after the look-ahead)/d(phi) at the current phi (the ``loss_grad`` obs)."""
        if self._phi.numel() == 0:  # a family without parameters (``ce``): nothing to differentiate
            return torch.zeros_like(self._phi)
        phi = self._phi.detach().requires_grad_(True)
        steps = self.lookahead_steps or self.config.unroll_steps
        (grad,) = torch.autograd.grad(self._lookahead(phi, steps), phi)
        return grad

    # ------------------------------------------------------------------ stepping
    def step(self, action: Any):
        self._require_reset()
        meaning = rules.action_meaning(self.action_mode, self.groups)
        a = rules.as_action_tensor(action, self.action_space.shape, self.device, self.dtype, "action has", meaning)
        rules.check_action_values(a, rules.action_bound(self.action_mode), batched=False)
        return self._advance(self.phi_after(a).detach())

    def commit_phi(self, phi: torch.Tensor):
        """A step that sets phi directly (for gradient-based teachers); returns ``step``'s 5-tuple."""
        phi = rules.checked_phi(phi, (self.n_phi,), self.device, self.dtype)
        self._require_reset()
        return self._advance(phi)

    def _advance(self, phi: torch.Tensor):
        cfg = self.config
        cached = self._unroll
        reused = cached is not None and cached.step == self.t and torch.equal(cached.phi, phi)
        if reused:
            with torch.no_grad():
                for own, new in zip(self.params + self.buffers, cached.params + cached.buffers):
                    own.copy_(new)
            stats = cached.stats
        else:
            _, stats = sgd_unroll(
                self.student,
                self.params,
                self.buffers,
                self._next.x,
                self._next.y,
                lambda z, y: self.loss_family(phi, z, y),
                cfg.lr,
                create_graph=False,
            )
        self._unroll = None
        self._phi = phi
        self.t += 1
        self.student_steps += cfg.unroll_steps
        t = np.array([self.t])
        was_evaluated = rules.evaluated(t, self.reward_every, cfg.teaching_steps)
        values = [stats.train_loss, stats.train_acc, stats.loss_value, stats.grad_norm, stats.finite.to(stats.train_loss.dtype)]
        if was_evaluated[0]:
            val = evaluate(self.student, self.params, self.buffers, self._x_fixed, self._y_fixed)
            values += [v.to(stats.train_loss.dtype) for v in val]
        numbers = torch.stack(values).tolist()  # one sync
        last, finite, val_values = numbers[:4], numbers[4], numbers[5:]
        prev = np.array([[self.val_loss, self.val_acc]])
        if was_evaluated[0]:
            self.val_loss, self.val_acc = val_values
        self._last = dict(zip(rules.LAST_KEYS, last))
        val_now = np.array([[self.val_loss, self.val_acc]])
        reward, terminated, truncated, diverged = rules.outcome(
            self.reward_name, self.divergence_penalty, prev, val_now, was_evaluated, np.array([bool(finite)]), t, cfg.teaching_steps
        )
        step = rules.step_info(val_now, np.array([last]), t, np.array([self.student_steps]), diverged, was_evaluated, np.array([reused]))
        info: dict[str, Any] = {key: value[0].item() for key, value in step.items()}
        done = bool(terminated[0] or truncated[0])
        if done:
            info.update(rules.end_info(self.final_metrics()))
        if rules.monitored(t, self.monitor_every, np.array([done]))[0]:
            info.update(rules.monitor_info(info.get("final") or self.final_metrics(MONITOR_SPLITS)))
        if done:
            self._ready = False
            obs = self._observation(final=True)
        else:
            self._next = self.stream.next()
            obs = self._observation()
        return obs, float(reward[0]), bool(terminated[0]), bool(truncated[0]), info

    def final_metrics(self, splits: tuple[str, ...] = ("train", "val", "test")) -> dict[str, float]:
        """Loss and accuracy of the current student on the whole ``splits`` (train, val and test)."""
        s = self.splits
        data = {"train": (s.x_train, s.y_train), "val": (s.x_val, s.y_val), "test": (s.x_test, s.y_test)}
        out = {}
        for split in splits:
            x, y = data[split]
            loss, acc = evaluate(self.student, self.params, self.buffers, x, y)
            out[f"{split}_loss"], out[f"{split}_acc"] = loss.item(), acc.item()
        return out

    # ------------------------------------------------------------------ checkpoints
    def state_dict(self) -> dict:
        """Everything that decides the rest of the episode, as CPU tensors and plain values
        (``torch.save``-able; see :mod:`l2t_env.checkpoint` for what it holds)."""
        return checkpoint.env_state_dict(self)

    def load_state_dict(self, state: dict) -> None:
        """Continue the episode of a :meth:`state_dict`, in this env or a freshly made one of the same
        task, loss family and settings (else it raises naming both; the env is then unchanged).
        Through wrappers: ``env.reset(options={"state": state})``, which also returns the observation."""
        checkpoint.load_env_state_dict(self, state)

    # ------------------------------------------------------------------ observation
    def _observation(self, final: bool = False):
        if self.lookahead_steps:
            # After the last step there is no next step to look ahead to: the loss state is zero.
            self._loss_grad = torch.zeros_like(self._phi) if final else self.loss_gradient()
        return self.observation()

    def observation(self):
        """The current observation, as the latest ``reset`` or ``step`` returned it (after loading a
        state: the saved run's), with no computation."""
        if not hasattr(self, "_last"):
            raise RuntimeError("call reset() first: there is no observation before an episode starts")
        last = np.array([[self._last[key] for key in rules.LAST_KEYS]])
        val = np.array([[self.val_loss, self.val_acc]])
        student = rules.student_observation(np.array([self.t]), self.config.teaching_steps, last, val, self.config.lr)[0]
        obs = {"student": student}
        if self.lookahead_steps:
            obs["loss_grad"] = rules.to_box(self._loss_grad)
        obs["loss_params"] = rules.to_box(self._phi)
        if self.observation_mode == "flat":
            return spaces.flatten(self.dict_observation_space, obs)
        return obs
