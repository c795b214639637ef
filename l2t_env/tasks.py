"""Tasks: a data set, a student architecture, its training hyper-parameters and a budget.

A task is a typed :class:`TaskConfig`. Built-in tasks are YAML files under ``configs/tasks/``; any
field can be overridden by keyword (``gym.make("L2T-v0", task="digits-mlp", lr=0.05)``). Users bring
their own data as tensors or a torch ``Dataset`` (:meth:`RawData.from_tensors`,
:meth:`RawData.from_datasets`) and their own ``nn.Module`` student, passed in the same config.

Loaders and student builders are named by ``"module:function"`` strings so that nothing heavy
(torchvision, a data set) is imported or read before a task is actually built.
"""

from __future__ import annotations

import copy
import dataclasses
import importlib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Union

import numpy as np
import torch
from torch import nn

from l2t_env.config_files import builtin_names, config_dir, read_yaml

# name -> "module:function". A loader takes the TaskConfig and returns RawData.
DATASETS: dict[str, str] = {
    "digits": "l2t_env.data:load_digits",
    "digits-noisy": "l2t_env.data:load_noisy_digits",
    "mnist1d": "l2t_env.mnist1d_data:load_mnist1d",
    "cifar10": "l2t_env.vision:load_cifar10",
    "cifar100": "l2t_env.vision:load_cifar100",
    "mnist": "l2t_env.vision:load_mnist",
    "random-cifar10": "l2t_env.vision:load_random_cifar10",
    "random-cifar100": "l2t_env.vision:load_random_cifar100",
}

# name -> "module:function". A builder takes (input_shape, num_classes, **student_kwargs).
STUDENTS: dict[str, str] = {
    "mlp": "l2t_env.students:MLP",
    "digits-cnn": "l2t_env.students:DigitsCNN",
    "cnn1d": "l2t_env.students:CNN1D",
    "lenet": "l2t_env.resnets:LeNet5",
    "resnet8": "l2t_env.resnets:resnet8",
    "resnet20": "l2t_env.resnets:resnet20",
    "resnet32": "l2t_env.resnets:resnet32",
    "resnet8-wide": "l2t_env.resnets:resnet8_wide",
    "resnet20-wide": "l2t_env.resnets:resnet20_wide",
    "resnet32-wide": "l2t_env.resnets:resnet32_wide",
}

# name -> "module:function". An augmentation maps (x [B, ...], generator) -> x, batched on device.
AUGMENTATIONS: dict[str, str] = {
    "crop-flip": "l2t_env.vision:random_crop_flip",
}


def resolve(ref: str | Callable) -> Callable:
    """Import ``"module:attr"`` lazily; pass callables through."""
    if callable(ref):
        return ref
    module_name, _, attr = ref.partition(":")
    return getattr(importlib.import_module(module_name), attr)


@dataclass
class RawData:
    """A task's examples as CPU tensors, before the per-seed train/val split.

    ``x_pool``/``y_pool`` are split into train and validation by the episode seed; the test split
    is fixed by the data set and is only ever reported. Inputs are already normalised.
    ``train_label_noise`` = p replaces each *training* label, after the split, with probability p
    by a class drawn uniformly from all C classes (possibly its own), drawn from the split seed;
    validation and test labels stay clean. (A task's ``label_noise`` setting is the general form,
    for any data set and with pair noise too; a task may use only one of the two.)
    """

    x_pool: torch.Tensor
    y_pool: torch.Tensor
    x_test: torch.Tensor
    y_test: torch.Tensor
    num_classes: int
    train_label_noise: float = 0.0

    def __post_init__(self) -> None:
        p = self.train_label_noise
        if isinstance(p, bool) or not isinstance(p, (int, float)) or not 0.0 <= float(p) <= 1.0:
            raise ValueError(f"train_label_noise={p!r}, expected a number in [0, 1]")
        for name in ("y_pool", "y_test"):
            y = getattr(self, name)
            if y.dtype != torch.long:
                setattr(self, name, y.long())
        if len(self.x_pool) != len(self.y_pool) or len(self.x_test) != len(self.y_test):
            raise ValueError(
                f"inputs and labels differ in length: pool {len(self.x_pool)} vs {len(self.y_pool)}, "
                f"test {len(self.x_test)} vs {len(self.y_test)}"
            )
        for name in ("y_pool", "y_test"):
            y = getattr(self, name)
            if len(y) and (int(y.min()) < 0 or int(y.max()) >= self.num_classes):
                raise ValueError(
                    f"{name} holds labels in [{int(y.min())}, {int(y.max())}], expected 0..{self.num_classes - 1}"
                )
        if tuple(self.x_test.shape[1:]) != tuple(self.x_pool.shape[1:]):
            raise ValueError(
                f"x_test examples have shape {tuple(self.x_test.shape[1:])}, expected {tuple(self.x_pool.shape[1:])} as in x_pool"
            )
        for name in ("x_pool", "x_test"):
            x = getattr(self, name)
            if x.is_floating_point() and x.numel() and not bool(torch.isfinite(x).all()):
                bad = ~torch.isfinite(x).reshape(len(x), -1)
                rows = bad.any(1)
                raise ValueError(
                    f"{name} holds {int(bad.sum())} non-finite value(s) (NaN or inf) in {int(rows.sum())} example(s), "
                    f"the first at index {int(rows.nonzero()[0, 0])}; expected finite inputs"
                )

    @property
    def input_shape(self) -> tuple[int, ...]:
        return tuple(self.x_pool.shape[1:])

    @classmethod
    def from_tensors(
        cls,
        x_train: torch.Tensor,
        y_train: torch.Tensor,
        x_test: torch.Tensor,
        y_test: torch.Tensor,
        num_classes: int | None = None,
    ) -> "RawData":
        """User data as tensors. ``x_train`` is split into train/val by the episode seed."""
        x_train, x_test = torch.as_tensor(x_train).float(), torch.as_tensor(x_test).float()
        y_train, y_test = torch.as_tensor(y_train).long(), torch.as_tensor(y_test).long()
        if num_classes is None:
            num_classes = int(max(y_train.max(), y_test.max())) + 1
        return cls(x_train, y_train, x_test, y_test, num_classes)

    @classmethod
    def from_datasets(cls, train: Any, test: Any, num_classes: int | None = None) -> "RawData":
        """User data as map-style torch ``Dataset``s of ``(x, y)``; read once into tensors."""

        def materialise(ds: Any) -> tuple[torch.Tensor, torch.Tensor]:
            xs, ys = zip(*(ds[i] for i in range(len(ds))))
            return torch.stack([torch.as_tensor(x) for x in xs]), torch.as_tensor(ys)

        x_tr, y_tr = materialise(train)
        x_te, y_te = materialise(test)
        return cls.from_tensors(x_tr, y_tr, x_te, y_te, num_classes)


StudentSpec = Union[str, nn.Module, Callable[..., nn.Module]]


@dataclass
class TaskConfig:
    """Everything that defines a teaching task. Built-in ones live in ``configs/tasks/*.yaml``."""

    name: str = "custom"
    #: a key of ``DATASETS`` or a :class:`RawData`
    dataset: Union[str, RawData] = "digits"
    #: a key of ``STUDENTS``, an ``nn.Module`` (re-initialised per seed) or a builder
    student: StudentSpec = "mlp"
    student_kwargs: dict = field(default_factory=dict)
    dataset_kwargs: dict = field(default_factory=dict)
    #: student SGD learning rate (constant, no momentum, no weight decay)
    lr: float = 0.1
    batch_size: int = 25
    #: K, student steps per teaching step
    unroll_steps: int = 15
    #: teaching steps per episode (truncation)
    teaching_steps: int = 100
    #: the look-ahead's validation batch, drawn afresh each teaching step
    val_batch_size: int = 100
    #: size of the fixed validation subset behind the reward and the observed val loss/acc (0 = all)
    reward_val_size: int = 0
    #: fraction of the pool held out as validation, re-drawn from the episode seed
    val_fraction: float = 0.2
    #: number of pool examples held out as validation; when set it overrides ``val_fraction``
    val_size: Union[int, None] = None
    #: training-label noise drawn per seed after the split, ``{rate: r, kind: symmetric | pair}``
    #: (see :func:`l2t_env.data.noisy_labels` for each kind's rate); validation and test stay clean
    label_noise: Union[dict, None] = None
    #: where the student's training batches come from: the (noisy) ``"train"`` split or the clean
    #: ``"val"`` split (a baseline trained on the validation data alone)
    train_split: str = "train"
    #: the last ``round(finetune_fraction * teaching_steps)`` teaching steps (at least 1 when > 0)
    #: draw their training batches from the validation split: train, then fine-tune on clean data
    finetune_fraction: float = 0.0
    #: a key of ``AUGMENTATIONS`` or None
    augment: Union[str, None] = None
    #: where vision data sets are read from, and whether torchvision may download them there
    data_root: str = "data"
    download: bool = False

    def __post_init__(self) -> None:
        positive_ints = ("batch_size", "unroll_steps", "teaching_steps", "val_batch_size")
        for key in positive_ints:
            value = getattr(self, key)
            if not isinstance(value, (int, np.integer)) or isinstance(value, bool) or value < 1:
                raise ValueError(f"task {self.name!r}: {key}={value!r}, expected a positive integer")
        if not isinstance(self.reward_val_size, (int, np.integer)) or self.reward_val_size < 0:
            raise ValueError(f"task {self.name!r}: reward_val_size={self.reward_val_size!r}, expected an integer >= 0")
        if not (isinstance(self.lr, (int, float)) and np.isfinite(self.lr) and self.lr > 0):
            raise ValueError(f"task {self.name!r}: lr={self.lr!r}, expected a finite number > 0")
        if not 0.0 < float(self.val_fraction) < 1.0:
            raise ValueError(f"task {self.name!r}: val_fraction={self.val_fraction!r}, expected a number in (0, 1)")
        if self.val_size is not None and (
            not isinstance(self.val_size, (int, np.integer)) or isinstance(self.val_size, bool) or self.val_size < 1
        ):
            raise ValueError(f"task {self.name!r}: val_size={self.val_size!r}, expected None or an integer >= 1")
        self.label_noise = check_label_noise(self.label_noise, f"task {self.name!r}")
        if self.train_split not in TRAIN_SPLITS:
            raise ValueError(f"task {self.name!r}: train_split={self.train_split!r}, expected one of {list(TRAIN_SPLITS)}")
        f = self.finetune_fraction
        if isinstance(f, bool) or not isinstance(f, (int, float)) or not 0.0 <= float(f) < 1.0:
            raise ValueError(f"task {self.name!r}: finetune_fraction={f!r}, expected a number in [0, 1)")
        if f > 0 and self.train_split != "train":
            raise ValueError(
                f"task {self.name!r}: finetune_fraction={f!r} with train_split={self.train_split!r}; "
                "fine-tuning on the validation split follows training on train_split='train'"
            )
        if isinstance(self.dataset, str) and self.dataset not in DATASETS:
            raise ValueError(f"task {self.name!r}: unknown dataset {self.dataset!r}; valid: {sorted(DATASETS)}")
        if isinstance(self.student, str) and self.student not in STUDENTS:
            raise ValueError(f"task {self.name!r}: unknown student {self.student!r}; valid: {sorted(STUDENTS)}")
        if self.augment is not None and self.augment not in AUGMENTATIONS:
            raise ValueError(
                f"task {self.name!r}: unknown augment {self.augment!r}; valid: {sorted(AUGMENTATIONS)} or None"
            )

    @property
    def finetune_start(self) -> Union[int, None]:
        """The first teaching step (0-based) whose training batches come from the validation split.

        0 with ``train_split="val"``, ``None`` when every batch comes from the training split.
        """
        if self.train_split == "val":
            return 0
        if self.finetune_fraction <= 0:
            return None
        return self.teaching_steps - max(1, int(round(self.finetune_fraction * self.teaching_steps)))

    def replace(self, **overrides: Any) -> "TaskConfig":
        """A copy with some fields changed; unknown keys raise with the list of valid ones."""
        check_keys(overrides)
        return dataclasses.replace(self, **overrides)

    def to_dict(self) -> dict:
        """A JSON-friendly view (user data and modules are named, not dumped)."""
        out = {}
        for f in dataclasses.fields(self):
            value = getattr(self, f.name)
            if isinstance(value, RawData):
                value = f"<RawData {tuple(value.x_pool.shape)} classes={value.num_classes}>"
            elif isinstance(value, nn.Module) or callable(value):
                value = f"<{type(value).__name__}>" if isinstance(value, nn.Module) else repr(value)
            out[f.name] = copy.deepcopy(value)
        return out


TRAIN_SPLITS = ("train", "val")
NOISE_KINDS = ("symmetric", "pair")


def check_label_noise(noise: Any, where: str) -> Union[dict, None]:
    """``label_noise`` checked and completed: None, or ``{"rate": float in [0, 1], "kind": ...}``
    (``kind`` defaults to ``"symmetric"``)."""
    if noise is None:
        return None
    if not isinstance(noise, dict) or set(noise) - {"rate", "kind"} or "rate" not in noise:
        raise ValueError(
            f"{where}: label_noise={noise!r}, expected None or a mapping "
            f"{{rate: a number in [0, 1], kind: one of {list(NOISE_KINDS)}}}"
        )
    rate, kind = noise["rate"], noise.get("kind", "symmetric")
    if isinstance(rate, bool) or not isinstance(rate, (int, float)) or not 0.0 <= float(rate) <= 1.0:
        raise ValueError(f"{where}: label_noise rate={rate!r}, expected a number in [0, 1]")
    if kind not in NOISE_KINDS:
        raise ValueError(f"{where}: label_noise kind={kind!r}, expected one of {list(NOISE_KINDS)}")
    return {"rate": float(rate), "kind": str(kind)}


TASK_KEYS = tuple(f.name for f in dataclasses.fields(TaskConfig))


def check_keys(overrides: dict) -> None:
    unknown = sorted(set(overrides) - set(TASK_KEYS))
    if unknown:
        raise ValueError(f"unknown task config key(s) {unknown}; valid keys: {list(TASK_KEYS)}")


def available_tasks() -> list[str]:
    """Names of the built-in tasks (``configs/tasks/*.yaml``)."""
    return builtin_names("tasks")


def load_task(task: Union[str, Path, TaskConfig, None] = None, **overrides: Any) -> TaskConfig:
    """A task from a built-in name, a YAML path or a config, with keyword overrides applied."""
    if task is None:
        task = "digits-mlp"
    if isinstance(task, TaskConfig):
        return task.replace(**overrides) if overrides else task
    path = Path(task)
    if path.suffix in (".yaml", ".yml"):
        if not path.is_file():
            raise FileNotFoundError(f"task config file {str(path)!r} does not exist")
        fields = read_yaml(path)
        fields.setdefault("name", path.stem)
    else:
        names = available_tasks()
        if str(task) not in names:
            raise ValueError(f"unknown task {str(task)!r}; valid: {names} (or a path to a .yaml file)")
        fields = read_yaml(config_dir("tasks") / f"{task}.yaml")
        fields.setdefault("name", str(task))
    check_keys(fields)
    check_keys(overrides)
    return TaskConfig(**{**fields, **overrides})


def load_raw_data(config: TaskConfig) -> RawData:
    """The task's examples (CPU tensors), read through its loader."""
    if isinstance(config.dataset, RawData):
        return config.dataset
    data = resolve(DATASETS[config.dataset])(config)
    if not isinstance(data, RawData):
        raise TypeError(f"dataset loader for {config.dataset!r} returned {type(data).__name__}, expected RawData")
    return data


def check_student(config: TaskConfig, raw: RawData, n: int = 2) -> None:
    """Fail at task build, not deep in ``reset``: a dry forward of the student on ``n`` examples.

    Checks that the student accepts the data's example shape and returns one logit column per class.
    """
    model = build_student(config, raw.input_shape, raw.num_classes, seed=0)
    like = next(iter(model.parameters()), raw.x_pool)  # a user module may come on another device or dtype
    x = raw.x_pool[:n].to(device=like.device, dtype=like.dtype)
    was_training = model.training
    model.eval()  # BatchNorm must not need a batch statistic of n examples
    try:
        with torch.no_grad():
            out = model(x)
    except Exception as err:  # noqa: BLE001 - re-raised with what the task expected
        raise ValueError(
            f"task {config.name!r}: the student failed on a batch of inputs of shape {tuple(x.shape)} "
            f"(examples of shape {raw.input_shape}): {type(err).__name__}: {err}; "
            f"expected a student that takes [N, *{raw.input_shape}] and returns [N, {raw.num_classes}] logits"
        ) from err
    model.train(was_training)
    if not isinstance(out, torch.Tensor) or out.dim() != 2 or tuple(out.shape) != (len(x), raw.num_classes):
        what = f"{type(out).__name__}" if not isinstance(out, torch.Tensor) else f"shape {tuple(out.shape)}"
        cols = f" ({out.shape[-1]} columns, the task has {raw.num_classes} classes)" if isinstance(out, torch.Tensor) and out.dim() else ""
        raise ValueError(
            f"task {config.name!r}: student output has {what}{cols} for {len(x)} examples, "
            f"expected shape ({len(x)}, {raw.num_classes}): one logit per class"
        )


def build_student(config: TaskConfig, input_shape: tuple[int, ...], num_classes: int, seed: int) -> nn.Module:
    """A freshly initialised student; the seed alone fixes its initial weights."""
    spec = config.student
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        if isinstance(spec, nn.Module):
            model = copy.deepcopy(spec)
            for module in model.modules():
                reset = getattr(module, "reset_parameters", None)
                if callable(reset):
                    reset()
        else:
            builder = resolve(STUDENTS[spec]) if isinstance(spec, str) else spec
            model = builder(input_shape, num_classes, **config.student_kwargs)
    if not isinstance(model, nn.Module):
        raise TypeError(f"student builder returned {type(model).__name__}, expected an nn.Module")
    return model
