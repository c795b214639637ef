"""Loss families: the taught loss L(z, y; phi) with its parameters phi as ONE flat tensor.

Keeping phi flat makes the env's action (a step on phi), the loss state (d L_val / d phi) and a
teacher's coordinate-wise view the same vector, with no packing. Each family slices its own
weights out of phi on every call; slicing is a view, so gradients flow back to the flat tensor.

Families:
- ``dln``: the Dynamic Loss Network of L2T-DLN (docs/method.md section 2), 5,000 parameters by default.
- ``dlf``: the parametric loss of L2T-DLF (docs/method.md section 3), ``C*C + C`` parameters.
- ``dfm``: the fused metric of L2T-DFM (docs/method.md section 4, our reading), one weight per metric.
- ``ce``: plain cross-entropy, no parameters; the baseline every teacher is compared with.
- ``gce``, ``sce``, ``nce+rce``, ``mae``, ``ls``, ``bootstrap``, ``bootstrap-hard``, ``focal``: the
  robust losses of the noisy-label literature (:mod:`l2t_env.robust_losses`), phi = their
  hyper-parameters (:class:`HyperparameterLoss`).
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from typing import Any, Optional, Sequence, Union

import torch
import torch.nn.functional as F

from l2t_env import dln_init
from l2t_env.robust_losses import ROBUST_LOSSES, RobustLossSpec, check_value
from l2t_env.fused_metric import DEFAULT_METRICS, check_metric_options, metric_values


class LossFamily(ABC):
    """A loss ``L(logits, y; phi)`` with flat parameters ``phi``; the interface the env trains with."""

    #: registry name
    name: str = ""

    @property
    @abstractmethod
    def n_params(self) -> int:
        """Length of the flat parameter vector phi."""

    @abstractmethod
    def init_params(self, seed: int, device: torch.device, dtype: torch.dtype) -> torch.Tensor:
        """A freshly initialised phi (flat, on ``device``); the seed alone fixes it."""

    @abstractmethod
    def __call__(self, phi: torch.Tensor, logits: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
        """The scalar loss of a batch; differentiable in ``phi`` and ``logits``."""

    def layer_slices(self) -> list[tuple[str, slice]]:
        """Named contiguous groups of phi (one per layer/tensor), for per-layer action modes."""
        return [("all", slice(0, self.n_params))] if self.n_params else []

    def control_range(self) -> Optional[list[tuple[float, float]]]:
        """The finite ``(low, high)`` of each entry of phi that ``action_mode="control"`` maps [-1, 1]
        onto, or None where phi is not a few bounded hyper-parameters (the DLN's 5,000 weights)."""
        return None


def leaky_relu(h: torch.Tensor, slope: float, constant_mask: bool = True) -> torch.Tensor:
    """``F.leaky_relu(h, slope)``; with ``constant_mask``, as ``h * mask`` with the mask (1 or ``slope``) held constant.

    The same values and gradients, bit for bit. LeakyReLU is piecewise linear, so the derivative
    of its gradient with respect to ``h`` is zero almost everywhere; autograd's own rule still
    materialises that zero as a tensor and sends it back through every earlier layer whenever a
    gradient is differentiated again, which the look-ahead's hypergradient does at every unrolled
    step. With a constant mask that work is never scheduled; without a second differentiation
    the plain kernel is cheaper (one pass over ``h`` instead of two).
    """
    if not constant_mask:
        return F.leaky_relu(h, slope)
    mask = torch.ops.aten.leaky_relu_backward(h.new_ones(()).expand_as(h), h.detach(), slope, False)
    return h * mask


def _may_be_differentiated(t: torch.Tensor) -> bool:
    """Whether gradients may flow to ``t``, looking through ``vmap``'s batched wrappers
    (inside ``vmap`` a tensor reports ``requires_grad=False`` whatever the outer one is); True when unsure."""
    try:
        from torch._C._functorch import get_unwrapped, is_batchedtensor
    except ImportError:  # pragma: no cover - a torch without these: the always-correct choice
        return True
    while is_batchedtensor(t):
        t = get_unwrapped(t)
    return t.requires_grad


class DynamicLossNetwork(LossFamily):
    """The DLN of L2T-DLN: a bias-free MLP scored on the "1-vs-1" view of the student's outputs.

    For sample i and every class j != y_i, the row ``[s_iy, s_ij, 1, 0]`` with ``s = sigmoid(z)``
    goes through ``4 -> 40 -> 40 -> 40 -> 40 -> 1`` (LeakyReLU(0.01) after the first four layers,
    no biases, no output activation); rows with j = y_i are zero and, with no biases, score 0.
    The loss is the mean over all ``B*C`` rows. 4*40 + 3*40*40 + 40 = 5,000 parameters.

    ``init`` chooses phi's start (:mod:`l2t_env.dln_init`): ``"kaiming"`` (default, the reference
    code's Kaiming-normal, mode ``fan_out``), ``"ce"`` (fitted to the pairwise logistic loss's
    gradient), a robust loss's name such as ``"gce"`` or ``"sce"`` (fitted to that loss's logit
    gradient, with ``init_kwargs`` its hyper-parameters, e.g. ``{"q": 0.5}``), a tensor of
    ``n_params`` values, or a file saved with ``torch.save(phi)``.
    ``init_seed`` fixes the random inits for every episode; by default each episode seed draws its own.
    ``fit`` overrides the fit's settings (:class:`l2t_env.dln_init.CEFit` for ``"ce"``,
    :class:`l2t_env.dln_init.TargetFit` for a robust loss). ``num_classes`` (passed by
    :func:`make_loss_family`) is needed only by a robust-loss fit, whose target depends on C.
    """

    name = "dln"

    def __init__(
        self,
        hidden: Sequence[int] = (40, 40, 40, 40),
        negative_slope: float = 0.01,
        init: dln_init.InitSpec = "kaiming",
        init_seed: Optional[int] = None,
        fit: Optional[dict] = None,
        init_kwargs: Optional[dict] = None,
        num_classes: Optional[int] = None,
    ) -> None:
        hidden = tuple(int(h) for h in hidden)
        if not hidden or any(h < 1 for h in hidden):
            raise ValueError(f"dln: hidden={hidden!r}, expected a non-empty sequence of positive widths")
        widths = (4, *hidden, 1)
        self.shapes = [(widths[i + 1], widths[i]) for i in range(len(widths) - 1)]  # (out, in)
        self.negative_slope = negative_slope
        self._slices: list[slice] = []
        start = 0
        for out_f, in_f in self.shapes:
            self._slices.append(slice(start, start + out_f * in_f))
            start += out_f * in_f
        self._n = start
        self.init: Union[str, torch.Tensor] = dln_init.parse_init(init, self._n)
        if init_seed is not None and (isinstance(init_seed, bool) or not isinstance(init_seed, int) or init_seed < 0):
            raise ValueError(f"dln: init_seed={init_seed!r}, expected None or an integer >= 0")
        self.init_seed = init_seed
        self.fit = dln_init.make_fit(fit, self.init)
        self.num_classes = num_classes
        self.target: Optional[HyperparameterLoss] = None
        if isinstance(self.init, str) and self.init in ROBUST_LOSSES:
            if isinstance(num_classes, bool) or not isinstance(num_classes, int) or num_classes < 2:
                raise ValueError(f"dln: init={self.init!r} needs num_classes (an integer >= 2), got {num_classes!r}")
            try:
                self.target = HyperparameterLoss(ROBUST_LOSSES[self.init], **dict(init_kwargs or {}))
            except ValueError as err:
                raise ValueError(f"dln init_kwargs of init={self.init!r}: {err}") from err
        elif init_kwargs:
            raise ValueError(f"dln: init_kwargs={init_kwargs!r} given for init={init!r}; they set a robust loss init's "
                             f"hyper-parameters, expected init in {sorted(ROBUST_LOSSES)}")

    @property
    def n_params(self) -> int:
        return self._n

    def layer_slices(self) -> list[tuple[str, slice]]:
        return [(f"layer{i}", s) for i, s in enumerate(self._slices)]

    def init_params(self, seed: int, device: torch.device, dtype: torch.dtype) -> torch.Tensor:
        seed = int(self.init_seed if self.init_seed is not None else seed)
        if isinstance(self.init, torch.Tensor):
            phi = self.init
        elif self.init == "ce":
            phi = dln_init.fit_ce(self.shapes, self.score_pairs, seed, self.fit)
        elif self.target is not None:
            target = self.target
            phi = dln_init.fit_target(
                self.shapes, self, seed, self.fit, self.num_classes, target.name, {**target.values, **target.constants},
                self.target_loss,
            )
        else:
            phi = dln_init.kaiming_init(self.shapes, seed)
        return phi.to(device=device, dtype=dtype).clone()

    def target_loss(self, logits: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
        """The per-example robust loss the init is fitted to (``init`` a robust loss's name), ``[B]``."""
        if self.target is None:
            raise ValueError(f"dln: init={self.init!r} has no robust-loss target")
        return self.target.spec.fn(logits, targets, **self.target.values, **self.target.constants)

    def weights(self, phi: torch.Tensor) -> list[torch.Tensor]:
        """The layer weight matrices as views of phi."""
        return [phi[s].view(shape) for s, shape in zip(self._slices, self.shapes)]

    def score_pairs(self, phi: torch.Tensor, s: torch.Tensor) -> torch.Tensor:
        """``g_phi`` of rows ``[s_y, s_j, 1, 0]`` given ``s = [s_y, s_j]`` of shape ``[N, 2]``; returns ``[N]``."""
        weights = self.weights(phi)
        h = F.linear(s, weights[0][:, :2], weights[0][:, 2])
        for w in weights[1:]:
            h = F.linear(leaky_relu(h, self.negative_slope, _may_be_differentiated(phi)), w)
        return h[..., 0]

    def one_vs_one(self, logits: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
        """The ``[B, C, 4]`` input rows ``[s_iy, s_ij, 1, 0]``; rows of the true class are zero."""
        s = torch.sigmoid(logits)
        s_true = s.gather(1, targets[:, None]).expand_as(s)
        other = torch.ones_like(s).scatter_(1, targets[:, None], 0.0)
        return torch.stack([s_true, s, torch.ones_like(s), torch.zeros_like(s)], dim=-1) * other[..., None]

    def __call__(self, phi: torch.Tensor, logits: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
        # Same function as running the rows of ``one_vs_one`` through the MLP, in fewer ops: the
        # constant inputs (1, 0) of the first layer become its third column as a bias, and the
        # true-class rows are zeroed after the first layer (LeakyReLU(0) = 0 with no biases after).
        weights = self.weights(phi)
        s = torch.sigmoid(logits)
        s_true = s.gather(1, targets[:, None]).expand_as(s)
        # 1 off the true class; a comparison rather than scatter_, which vmap has no batching rule for
        other = (targets[:, None] != torch.arange(s.shape[1], device=s.device)).to(s.dtype)
        w_in = weights[0]
        h = F.linear(torch.stack([s_true, s], dim=-1), w_in[:, :2], w_in[:, 2]) * other[..., None]
        second_order = _may_be_differentiated(phi)  # the look-ahead: its hypergradient differentiates the gradient
        for w in weights[1:]:
            h = F.linear(leaky_relu(h, self.negative_slope, second_order), w)
        return h.mean()


class DynamicLossFunction(LossFamily):
    """L2T-DLF's loss: ``-sigmoid((log p)^T W[:, y] + b_y)``, W = I and b = 0 at init.

    Starts as ``-sigmoid(log p_y)``, a bounded surrogate of cross-entropy (docs/method.md section 3).
    """

    name = "dlf"

    def __init__(self, num_classes: int) -> None:
        self.num_classes = int(num_classes)

    @property
    def n_params(self) -> int:
        return self.num_classes * self.num_classes + self.num_classes

    def layer_slices(self) -> list[tuple[str, slice]]:
        c2 = self.num_classes * self.num_classes
        return [("W", slice(0, c2)), ("b", slice(c2, self.n_params))]

    def init_params(self, seed: int, device: torch.device, dtype: torch.dtype) -> torch.Tensor:
        c = self.num_classes
        return torch.cat([torch.eye(c, dtype=dtype).flatten(), torch.zeros(c, dtype=dtype)]).to(device)

    def __call__(self, phi: torch.Tensor, logits: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
        c = self.num_classes
        w, b = phi[: c * c].view(c, c), phi[c * c :]
        log_p = F.log_softmax(logits, dim=1)
        score = (log_p * w[:, targets].T).sum(dim=1) + b[targets]
        return -torch.sigmoid(score).mean()


class FusedMetricLoss(LossFamily):
    """L2T-DFM's fused metric ``sum_m w_m * metric_m(z, y)``; phi = the weights ``w`` (one per metric).

    The metrics and their fixed parameters are in :mod:`l2t_env.fused_metric` (all choices ours:
    the paper's abstract names no metric). phi starts as the one-hot weight of ``ce`` (plain
    cross-entropy), the loss every other family is compared with; a one-hot weight is exactly that
    metric. Weights are used as given (no normalisation): a teacher decides their scale and sign.
    """

    name = "dfm"

    def __init__(
        self,
        metrics: Sequence[str] = DEFAULT_METRICS,
        focal_gamma: float = 2.0,
        hinge_margin: float = 1.0,
        smoothing: float = 0.1,
        gce_q: float = 0.7,
        rce_A: float = -4.0,
    ) -> None:
        self.metrics = tuple(metrics)
        check_metric_options(self.metrics, focal_gamma, hinge_margin, smoothing, gce_q, rce_A)
        self.options = {
            "focal_gamma": float(focal_gamma), "hinge_margin": float(hinge_margin), "smoothing": float(smoothing),
            "gce_q": float(gce_q), "rce_A": float(rce_A),
        }

    @property
    def n_params(self) -> int:
        return len(self.metrics)

    def layer_slices(self) -> list[tuple[str, slice]]:
        return [(m, slice(i, i + 1)) for i, m in enumerate(self.metrics)]

    def init_params(self, seed: int, device: torch.device, dtype: torch.dtype) -> torch.Tensor:
        phi = torch.zeros(self.n_params, device=device, dtype=dtype)
        if "ce" in self.metrics:
            phi[self.metrics.index("ce")] = 1.0
        else:
            phi += 1.0 / self.n_params
        return phi

    def control_range(self) -> list[tuple[float, float]]:
        """Each metric's weight in [0, 1]: one-hot corners are single metrics, the rest their mixtures."""
        return [(0.0, 1.0)] * self.n_params

    def values(self, logits: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
        """Each metric's batch mean, ``[n_params]``, in the order of phi."""
        return metric_values(logits, targets, self.metrics, **self.options)

    def __call__(self, phi: torch.Tensor, logits: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
        return (phi * self.values(logits, targets)).sum()


class CrossEntropy(LossFamily):
    """Plain cross-entropy; no parameters. The baseline loss."""

    name = "ce"

    @property
    def n_params(self) -> int:
        return 0

    def init_params(self, seed: int, device: torch.device, dtype: torch.dtype) -> torch.Tensor:
        return torch.zeros(0, device=device, dtype=dtype)

    def control_range(self) -> list[tuple[float, float]]:
        return []

    def __call__(self, phi: torch.Tensor, logits: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
        return F.cross_entropy(logits, targets)


class HyperparameterLoss(LossFamily):
    """A robust loss of :data:`l2t_env.robust_losses.ROBUST_LOSSES` whose phi is its hyper-parameters.

    ``loss_kwargs`` set phi's start (e.g. ``{"q": 0.5}`` for ``gce``; the authors' defaults
    otherwise) and the loss's fixed constants (e.g. RCE's ``A``). Left alone (a zero action, or
    the frozen-loss teachers of the same names) this is the baseline; a teacher that moves phi
    (``action_mode="set"`` sets it outright) tunes the loss during training, and the look-ahead's
    ``loss_grad`` is the hypergradient with respect to the hyper-parameters. phi is clamped to the
    valid range of each hyper-parameter when the loss is computed (``RobustLossSpec.bounds``).
    """

    def __init__(self, spec: RobustLossSpec, **kwargs: Any) -> None:
        self.spec = spec
        self.name = spec.name
        unknown = sorted(set(kwargs) - set(spec.params) - set(spec.constants))
        if unknown:
            valid = sorted([*spec.params, *spec.constants])
            raise ValueError(f"{spec.name}: unknown loss_kwargs {unknown}; valid: {valid}")
        self.values = {**spec.params, **{k: v for k, v in kwargs.items() if k in spec.params}}
        self.constants = {**spec.constants, **{k: v for k, v in kwargs.items() if k in spec.constants}}
        for key, value in self.values.items():
            check_value(spec.name, key, value, spec.bounds[key])
        for key, value in self.constants.items():
            check_value(spec.name, key, value, (None, None))
        self.keys = tuple(spec.params)

    @property
    def n_params(self) -> int:
        return len(self.keys)

    def layer_slices(self) -> list[tuple[str, slice]]:
        return [(key, slice(i, i + 1)) for i, key in enumerate(self.keys)]

    def init_params(self, seed: int, device: torch.device, dtype: torch.dtype) -> torch.Tensor:
        return torch.tensor([float(self.values[k]) for k in self.keys], device=device, dtype=dtype)

    def control_range(self) -> list[tuple[float, float]]:
        """Each hyper-parameter's ``RobustLossSpec.control`` range."""
        return [self.spec.control[key] for key in self.keys]

    def hyperparameters(self, phi: torch.Tensor) -> dict[str, torch.Tensor]:
        """phi as the loss's keyword arguments, each clamped to its valid range."""
        out = {}
        for i, key in enumerate(self.keys):
            lo, hi = self.spec.bounds[key]
            out[key] = phi[i].clamp(min=lo, max=hi)
        return out

    def __call__(self, phi: torch.Tensor, logits: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
        return self.spec.fn(logits, targets, **self.hyperparameters(phi), **self.constants).mean()


LOSS_FAMILIES = {"dln": DynamicLossNetwork, "dlf": DynamicLossFunction, "dfm": FusedMetricLoss, "ce": CrossEntropy}
LOSS_NAMES = (*LOSS_FAMILIES, *ROBUST_LOSSES)


def make_loss_family(name: str | LossFamily, num_classes: int, **kwargs: Any) -> LossFamily:
    """A loss family by registry name (or pass one through)."""
    if isinstance(name, LossFamily):
        return name
    if name in ROBUST_LOSSES:
        return HyperparameterLoss(ROBUST_LOSSES[name], **kwargs)
    if name not in LOSS_FAMILIES:
        raise ValueError(f"unknown loss family {name!r}; valid: {sorted(LOSS_NAMES)}")
    cls = LOSS_FAMILIES[name]
    if cls is DynamicLossFunction:
        return cls(num_classes, **kwargs)
    if cls is DynamicLossNetwork:
        return cls(num_classes=num_classes, **kwargs)
    return cls(**kwargs)
