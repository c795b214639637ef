"""Data on the student's device, split and batched by seeded generators (no DataLoader).

The per-seed train/val split, the batch order and the augmentation all come from generators
seeded by the episode seed, so one seed fixes every random choice of the data pipeline.
"""

from __future__ import annotations

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


def noisy_labels(y: torch.Tensor, rate: float, num_classes: int, generator: torch.Generator) -> torch.Tensor:
    """Symmetric noise: each label replaced with probability ``rate`` by a uniform class (maybe its own)."""
    replace = torch.rand(len(y), generator=generator) < rate
    drawn = torch.randint(0, num_classes, (len(y),), generator=generator)
    return torch.where(replace, drawn, y)


def split_sizes(n: int, val_fraction: float) -> tuple[int, int]:
    """``(n_train, n_val)`` of a pool of ``n`` examples, as :func:`split_data` cuts it (same for every seed)."""
    n_val = max(1, int(round(n * val_fraction)))
    if n - n_val < 1:
        raise ValueError(f"val_fraction={val_fraction} leaves no training examples out of {n}")
    return n - n_val, n_val


def check_batch_sizes(config: TaskConfig, raw: RawData) -> None:
    """A training batch must fit in the training split (checked before any work is done).

    The validation batch and the fixed reward subset are clipped to the validation split instead
    (small user data sets keep the default ``val_batch_size=100``); see the env's Arguments table.
    """
    n_train, n_val = split_sizes(len(raw.x_pool), config.val_fraction)
    if config.batch_size > n_train:
        raise ValueError(
            f"task {config.name!r}: batch_size={config.batch_size} is larger than the training split, "
            f"which has {n_train} examples ({len(raw.x_pool)} in the pool, {n_val} of them held out by "
            f"val_fraction={config.val_fraction}); expected batch_size <= {n_train}"
        )


def split_indices(raw: RawData, val_fraction: float, seed: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """What ``seed`` draws of a split: the pool rows of train and val, and the training labels
    (the pool's, or with ``raw.train_label_noise`` the noisy ones the same seed then draws).

    The vector env keeps one copy of the pool and these per student instead of N copies of the data.
    """
    n = len(raw.x_pool)
    _, n_val = split_sizes(n, val_fraction)
    generator = torch.Generator().manual_seed(seed)
    order = torch.randperm(n, generator=generator)
    train_index = order[n_val:]
    y_train = raw.y_pool[train_index]
    if raw.train_label_noise > 0:
        y_train = noisy_labels(y_train, raw.train_label_noise, raw.num_classes, generator)
    return train_index, order[:n_val], y_train


def split_data(raw: RawData, val_fraction: float, seed: int, device: torch.device, dtype: torch.dtype) -> Splits:
    """Split the pool into train/val by ``seed`` and move everything to ``device`` once.

    With ``raw.train_label_noise`` the same seed then draws the training labels' noise.
    """
    train_index, val_index, y_train = split_indices(raw, val_fraction, seed)
    return splits_from_indices(raw, train_index, val_index, device, dtype, y_train if raw.train_label_noise > 0 else None)


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
    """

    def __init__(
        self, n_train: int, n_val: int, batch_size: int, steps: int, val_batch_size: int, seed: int, device: torch.device
    ) -> None:
        self.batch_size = batch_size
        self.steps = steps
        self.val_batch_size = min(val_batch_size, n_val)
        seeds = torch.randint(0, 2**62, (3,), generator=torch.Generator().manual_seed(seed)).tolist()
        self.train_sampler = EpochSampler(n_train, seeds[0], device)
        self.val_sampler = EpochSampler(n_val, seeds[1], device)
        self.augment_generator = torch.Generator().manual_seed(seeds[2])

    def next_indices(self) -> tuple[torch.Tensor, torch.Tensor]:
        """``([K, B] training indices, [V] validation indices)`` of the next step."""
        idx = self.train_sampler.draw(self.steps, self.batch_size)
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
    ) -> None:
        super().__init__(len(splits.x_train), len(splits.x_val), batch_size, steps, val_batch_size, seed, splits.x_train.device)
        self.splits = splits
        self.augment = augment

    def next(self) -> Batches:
        s = self.splits
        idx, vidx = self.next_indices()
        x = s.x_train[idx]
        if self.augment is not None:
            flat = x.flatten(0, 1)
            x = self.augment(flat, self.augment_generator).view_as(x)
        return Batches(x, s.y_train[idx], s.x_val[vidx], s.y_val[vidx])
