"""Data on the student's device, split and batched by seeded generators (no DataLoader).

The per-seed train/val split, the batch order and the augmentation all come from generators
seeded by the episode seed, so one seed fixes every random choice of the data pipeline.
"""

from __future__ import annotations

import numbers
from dataclasses import dataclass
from typing import Callable, Optional

import torch

from l2t_env.tasks import RawData, TaskConfig


def load_digits(config: TaskConfig) -> RawData:
    """scikit-learn's bundled 8x8 digits (1,797 images, 10 classes); no download.

    The test split (20%) is fixed by ``dataset_kwargs.test_seed`` (default 0) so that every
    episode seed reports on the same images; inputs are scaled to [0, 1] (pixel values / 16).
    ``dataset_kwargs.image=True`` keeps the 1x8x8 image shape for convolutional students.
    """
    return _digits(config.dataset_kwargs, "digits")


def load_noisy_digits(config: TaskConfig) -> RawData:
    """Digits with symmetric label noise on the training split only (``digits-mlp-noisy``).

    ``dataset_kwargs.noise`` = p (default 0.4): after the per-seed train/val split, each training
    label is replaced with probability p by a class drawn uniformly from the 10 (possibly its own,
    so about 0.9 p of them change); validation and test labels stay clean. The episode's split
    seed fixes which labels flip. Other keys as for ``digits``.
    """
    kwargs = dict(config.dataset_kwargs)
    noise = kwargs.pop("noise", 0.4)
    if isinstance(noise, bool) or not isinstance(noise, (int, float)) or not 0.0 <= noise <= 1.0:
        raise ValueError(f"digits-noisy: dataset_kwargs noise={noise!r}, expected a number in [0, 1]")
    raw = _digits(kwargs, "digits-noisy", extra=("noise",))
    raw.train_label_noise = float(noise)
    return raw


def _digits(dataset_kwargs: dict, name: str, extra: tuple[str, ...] = ()) -> RawData:
    from sklearn.datasets import load_digits as sk_load_digits

    kwargs = dict(dataset_kwargs)
    test_seed = int(kwargs.pop("test_seed", 0))
    as_image = bool(kwargs.pop("image", False))
    if kwargs:
        raise ValueError(f"{name}: unknown dataset_kwargs {sorted(kwargs)}; valid: {sorted(['image', 'test_seed', *extra])}")
    bunch = sk_load_digits()
    x = torch.tensor(bunch.data, dtype=torch.float32) / 16.0
    y = torch.tensor(bunch.target, dtype=torch.long)
    if as_image:
        x = x.view(-1, 1, 8, 8)
    order = torch.randperm(len(x), generator=torch.Generator().manual_seed(test_seed))
    n_test = len(x) // 5
    test, pool = order[:n_test], order[n_test:]
    return RawData(x[pool], y[pool], x[test], y[test], num_classes=10)


@dataclass
class Splits:
    """Train / validation / test tensors on one device, and which pool rows went where."""

    x_train: torch.Tensor
    y_train: torch.Tensor
    x_val: torch.Tensor
    y_val: torch.Tensor
    x_test: torch.Tensor
    y_test: torch.Tensor
    num_classes: int
    #: rows of the pool in the train and val splits, in order (what a checkpoint keeps of the split)
    train_index: Optional[torch.Tensor] = None
    val_index: Optional[torch.Tensor] = None
    #: the training labels before label noise (None without noise), for measuring it
    y_train_clean: Optional[torch.Tensor] = None


def noisy_labels(
    y: torch.Tensor, rate: float, num_classes: int, generator: torch.Generator, kind: str = "symmetric"
) -> torch.Tensor:
    """Labels with noise drawn from ``generator``; ``rate`` means different things per ``kind``:

    - ``"symmetric"`` (MW-Net's and L2RW's "uniform" noise): each label is replaced with
      probability ``rate`` by a class drawn uniformly from all K, its own included, so about
      ``rate * (K - 1) / K`` of the labels change.
    - ``"pair"`` (class-dependent): each label k becomes ``(k + 1) mod K`` with probability
      ``rate``, so about ``rate`` of them change.
    """
    replace = torch.rand(len(y), generator=generator) < rate
    if kind == "symmetric":
        drawn = torch.randint(0, num_classes, (len(y),), generator=generator)
    elif kind == "pair":
        drawn = (y + 1) % num_classes
    else:
        raise ValueError(f"label noise kind={kind!r}, expected 'symmetric' or 'pair'")
    return torch.where(replace, drawn, y)


def split_sizes(n: int, val_fraction: float, val_size: Optional[int] = None) -> tuple[int, int]:
    """``(n_train, n_val)`` of a pool of ``n`` examples, as :func:`split_data` cuts it (same for every seed).

    ``val_size`` (a count) overrides ``val_fraction`` when given.
    """
    if val_size is not None:
        if isinstance(val_size, bool) or not isinstance(val_size, numbers.Integral) or val_size < 1:
            raise ValueError(f"val_size={val_size!r}, expected None or an integer >= 1")
        if n - val_size < 1:
            raise ValueError(f"val_size={val_size} leaves no training examples out of {n} in the pool; expected val_size <= {n - 1}")
        return n - val_size, val_size
    n_val = max(1, int(round(n * val_fraction)))
    if n - n_val < 1:
        raise ValueError(f"val_fraction={val_fraction} leaves no training examples out of {n}")
    return n - n_val, n_val


def check_batch_sizes(config: TaskConfig, raw: RawData) -> None:
    """A training batch must fit in the split it is drawn from (checked before any work is done).

    The validation batch and the fixed reward subset are clipped to the validation split instead
    (small user data sets keep the default ``val_batch_size=100``); see the env's Arguments table.
    Also refuses a task-level ``label_noise`` on data whose loader already adds noise.
    """
    n_train, n_val = split_sizes(len(raw.x_pool), config.val_fraction, config.val_size)
    held = f"val_size={config.val_size}" if config.val_size is not None else f"val_fraction={config.val_fraction}"
    if config.batch_size > n_train:
        raise ValueError(
            f"task {config.name!r}: batch_size={config.batch_size} is larger than the training split, "
            f"which has {n_train} examples ({len(raw.x_pool)} in the pool, {n_val} of them held out by "
            f"{held}); expected batch_size <= {n_train}"
        )
    if config.finetune_start is not None and config.batch_size > n_val:
        why = f"train_split={config.train_split!r}" if config.train_split == "val" else f"finetune_fraction={config.finetune_fraction}"
        raise ValueError(
            f"task {config.name!r}: batch_size={config.batch_size} is larger than the validation split ({n_val} examples, "
            f"held out by {held}) that {why} trains on; expected batch_size <= {n_val}"
        )
    if config.label_noise is not None and raw.train_label_noise > 0:
        raise ValueError(
            f"task {config.name!r}: label_noise={config.label_noise} on a dataset whose loader already adds "
            f"noise (train_label_noise={raw.train_label_noise}); set one of them (e.g. dataset_kwargs noise: 0)"
        )


def split_indices(
    raw: RawData,
    val_fraction: float,
    seed: int,
    *,
    val_size: Optional[int] = None,
    label_noise: Optional[dict] = None,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """What ``seed`` draws of a split: the pool rows of train and val, and the training labels
    (the pool's, or with label noise the noisy ones the same seed then draws).

    Noise comes from ``label_noise`` (a task's ``{rate, kind}``) or ``raw.train_label_noise``
    (symmetric, set by a noisy data set's loader); the two draw alike, so symmetric task noise
    of rate r on the digits equals ``digits-noisy`` with ``noise: r``.
    The vector env keeps one copy of the pool and these per student instead of N copies of the data.
    """
    n = len(raw.x_pool)
    _, n_val = split_sizes(n, val_fraction, val_size)
    generator = torch.Generator().manual_seed(seed)
    order = torch.randperm(n, generator=generator)
    train_index = order[n_val:]
    y_train = raw.y_pool[train_index]
    rate, kind = _noise_of(raw, label_noise)
    if rate > 0:
        y_train = noisy_labels(y_train, rate, raw.num_classes, generator, kind)
    return train_index, order[:n_val], y_train


def _noise_of(raw: RawData, label_noise: Optional[dict]) -> tuple[float, str]:
    if label_noise is not None:
        return float(label_noise["rate"]), str(label_noise.get("kind", "symmetric"))
    return float(raw.train_label_noise), "symmetric"


def split_data(
    raw: RawData,
    val_fraction: float,
    seed: int,
    device: torch.device,
    dtype: torch.dtype,
    *,
    val_size: Optional[int] = None,
    label_noise: Optional[dict] = None,
) -> Splits:
    """Split the pool into train/val by ``seed`` and move everything to ``device`` once.

    With label noise (see :func:`split_indices`) the same seed then draws the training labels' noise.
    """
    train_index, val_index, y_train = split_indices(raw, val_fraction, seed, val_size=val_size, label_noise=label_noise)
    noisy = _noise_of(raw, label_noise)[0] > 0
    return splits_from_indices(raw, train_index, val_index, device, dtype, y_train if noisy else None)


def splits_from_indices(
    raw: RawData,
    train_index: torch.Tensor,
    val_index: torch.Tensor,
    device: torch.device,
    dtype: torch.dtype,
    y_train: Optional[torch.Tensor] = None,
) -> Splits:
    """The splits of given pool rows (a split drawn by :func:`split_data`, or one restored from a checkpoint).

    ``y_train`` replaces the pool's labels of the training rows (a noisy task's drawn labels).
    """
    clean = raw.y_pool[train_index]

    def put(x: torch.Tensor, floating: bool) -> torch.Tensor:
        return x.to(device=device, dtype=dtype if floating else torch.long)

    return Splits(
        put(raw.x_pool[train_index], True),
        put(clean if y_train is None else y_train, False),
        put(raw.x_pool[val_index], True),
        put(raw.y_pool[val_index], False),
        put(raw.x_test, True),
        put(raw.y_test, False),
        raw.num_classes,
        train_index,
        val_index,
        None if y_train is None else put(clean, False),
    )


class EpochSampler:
    """Draws index batches from a seeded, per-epoch permutation (what a shuffling DataLoader does).

    Indices are drawn on the CPU (so the stream is the same on every device) and moved once per
    call; ``draw(k, b)`` returns a ``[k, b]`` index tensor on ``device``.
    """

    def __init__(self, n: int, seed: int, device: torch.device) -> None:
        self.n = n
        self.device = device
        self.generator = torch.Generator().manual_seed(seed)
        self._order = torch.randperm(n, generator=self.generator)
        self._pos = 0

    def draw(self, k: int, batch_size: int) -> torch.Tensor:
        need = k * batch_size
        chunks = []
        while need > 0:
            if self._pos >= self.n:
                self._order = torch.randperm(self.n, generator=self.generator)
                self._pos = 0
            take = min(need, self.n - self._pos)
            chunks.append(self._order[self._pos : self._pos + take])
            self._pos += take
            need -= take
        return torch.cat(chunks).view(k, batch_size).to(self.device, non_blocking=True)


Augmentation = Callable[[torch.Tensor, torch.Generator], torch.Tensor]


@dataclass
class Batches:
    """The data of one teaching step: K training batches and one look-ahead validation batch."""

    x: torch.Tensor  # [K, B, ...]
    y: torch.Tensor  # [K, B]
    x_val: torch.Tensor  # [V, ...]
    y_val: torch.Tensor  # [V]


class IndexStream:
    """Seeded batch indices of one episode: each step K training batches and one validation batch.

    Split-relative indices only, so that the vector env can draw them for N students and gather
    their data in one go; the augmentation's generator is seeded here with the rest.

    ``finetune_start`` = s (:attr:`TaskConfig.finetune_start`): the training batches of teaching
    step s onwards (counted by the draws, the first draw being step 0's) index the *validation*
    split, drawn by their own sampler; ``from_val`` says so of the latest draw. With s = 0 every
    training batch comes from the validation split (``train_split="val"``), drawn by the
    training sampler over the validation split's size.
    """

    def __init__(
        self,
        n_train: int,
        n_val: int,
        batch_size: int,
        steps: int,
        val_batch_size: int,
        seed: int,
        device: torch.device,
        finetune_start: Optional[int] = None,
    ) -> None:
        self.batch_size = batch_size
        self.steps = steps
        self.val_batch_size = min(val_batch_size, n_val)
        generator = torch.Generator().manual_seed(seed)
        seeds = torch.randint(0, 2**62, (3,), generator=generator).tolist()
        self.finetune_start = finetune_start
        self.train_sampler = EpochSampler(n_val if finetune_start == 0 else n_train, seeds[0], device)
        self.val_sampler = EpochSampler(n_val, seeds[1], device)
        self.augment_generator = torch.Generator().manual_seed(seeds[2])
        self.finetune_sampler: Optional[EpochSampler] = None
        if finetune_start:  # a fourth seed, drawn after the three above so that they stay as they were
            self.finetune_sampler = EpochSampler(n_val, int(torch.randint(0, 2**62, (1,), generator=generator)), device)
        #: draws so far (the teaching step of the next draw) and whether the latest came from val
        self.drawn = 0
        self.from_val = False

    def next_indices(self) -> tuple[torch.Tensor, torch.Tensor]:
        """``([K, B] training indices, [V] validation indices)`` of the next step; the training
        indices index the validation split when ``from_val`` is then True."""
        start, step = self.finetune_start, self.drawn
        self.drawn += 1
        self.from_val = start is not None and step >= start
        sampler = self.finetune_sampler if self.from_val and self.finetune_sampler is not None else self.train_sampler
        idx = sampler.draw(self.steps, self.batch_size)
        return idx, self.val_sampler.draw(1, self.val_batch_size)[0]


class BatchStream(IndexStream):
    """Seeded stream of :class:`Batches` for one episode."""

    def __init__(
        self,
        splits: Splits,
        batch_size: int,
        steps: int,
        val_batch_size: int,
        seed: int,
        augment: Optional[Augmentation] = None,
        finetune_start: Optional[int] = None,
    ) -> None:
        super().__init__(
            len(splits.x_train), len(splits.x_val), batch_size, steps, val_batch_size, seed, splits.x_train.device, finetune_start
        )
        self.splits = splits
        self.augment = augment

    def next(self) -> Batches:
        s = self.splits
        idx, vidx = self.next_indices()
        x_src, y_src = (s.x_val, s.y_val) if self.from_val else (s.x_train, s.y_train)
        x = x_src[idx]
        if self.augment is not None:
            flat = x.flatten(0, 1)
            x = self.augment(flat, self.augment_generator).view_as(x)
        return Batches(x, y_src[idx], s.x_val[vidx], s.y_val[vidx])
