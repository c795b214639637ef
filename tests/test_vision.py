"""Vision students (ResNets, LeNet-5), the CIFAR augmentation, the vision loaders and task files."""

from __future__ import annotations

import importlib
import sys
import types

import numpy as np

import pytest
import torch
import torch.nn.functional as F
from torch.func import functional_call

from l2t_env import resnets
from l2t_env.tasks import available_tasks, build_student, load_raw_data, load_task
from l2t_env.vision import (
    load_cifar10,
    load_cifar100,
    load_mnist,
    load_random_cifar10,
    load_random_cifar100,
    random_crop_flip,
)


def n_params(model: torch.nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())


def torchvision_importable() -> bool:
    try:
        importlib.import_module("torchvision.datasets")
    except Exception:
        return False
    return True


# ---------------------------------------------------------------- students


@pytest.mark.parametrize(
    "builder, classes, expected",
    [
        ("resnet8", 10, 78_042),
        ("resnet8", 100, 83_892),
        ("resnet8_wide", 10, 1_227_594),
        ("resnet20", 10, 272_474),
        ("resnet32", 10, 466_906),
    ],
)
def test_resnet_parameter_counts(builder, classes, expected):
    assert n_params(getattr(resnets, builder)((3, 32, 32), classes)) == expected


def test_wide_resnet8_reference_head_count():
    # The reference code pools the 8x8 map to 2x2 (avg_pool2d(out, 4)): a 1,024-feature head.
    assert n_params(resnets.resnet8_wide((3, 32, 32), 10, pool_grid=2)) == 1_235_274


def test_lenet_parameter_count_and_shape():
    model = resnets.LeNet5((1, 28, 28), 10)
    assert n_params(model) == 61_706
    rng = torch.Generator().manual_seed(0)
    assert model(torch.randn(3, 1, 28, 28, generator=rng)).shape == (3, 10)


@pytest.mark.parametrize("builder", ["resnet20", "resnet32", "resnet8_wide"])
def test_resnet_output_shapes(builder):
    model = getattr(resnets, builder)((3, 32, 32), 100)
    rng = torch.Generator().manual_seed(0)
    assert model(torch.randn(2, 3, 32, 32, generator=rng)).shape == (2, 100)


def test_students_are_built_through_the_registry_deterministically():
    config = load_task("random-cifar10-resnet8")
    a = build_student(config, (3, 32, 32), 10, seed=3)
    b = build_student(config, (3, 32, 32), 10, seed=3)
    c = build_student(config, (3, 32, 32), 10, seed=4)
    assert isinstance(a, resnets.CifarResNet)
    assert all(torch.equal(p, q) for p, q in zip(a.parameters(), b.parameters()))
    assert not all(torch.equal(p, q) for p, q in zip(a.parameters(), c.parameters()))
    lenet = build_student(load_task("mnist-lenet"), (1, 28, 28), 10, seed=0)
    assert isinstance(lenet, resnets.LeNet5)


@pytest.mark.parametrize("builder, shape", [("resnet8", (3, 32, 32)), ("LeNet5", (1, 28, 28))])
def test_functional_call_second_order(builder, shape):
    """An unrolled SGD step and a meta-gradient through it, as the environment does."""
    torch.manual_seed(0)
    model = getattr(resnets, builder)(shape, 10)
    model.train()
    params = {k: v.detach().clone().requires_grad_(True) for k, v in model.named_parameters()}
    buffers = {k: v.detach().clone() for k, v in model.named_buffers()}
    rng = torch.Generator().manual_seed(0)
    x, y = torch.randn(4, *shape, generator=rng), torch.tensor([0, 1, 2, 3])

    loss = F.cross_entropy(functional_call(model, (params, buffers), (x,)), y)
    grads = torch.autograd.grad(loss, list(params.values()), create_graph=True)
    # second order: the gradient of the gradient norm
    grad_norm = sum((g**2).sum() for g in grads)
    hvp = torch.autograd.grad(grad_norm, list(params.values()), retain_graph=True, allow_unused=True)
    flat = torch.cat([h.flatten() for h in hvp if h is not None])
    assert torch.isfinite(flat).all() and flat.abs().sum() > 0
    # through one SGD step: d L(theta - lr * g(theta)) / d theta
    stepped = {k: p - 0.1 * g for (k, p), g in zip(params.items(), grads)}
    after = F.cross_entropy(functional_call(model, (stepped, buffers), (x,)), y)
    meta = torch.autograd.grad(after, list(params.values()))
    flat = torch.cat([m.flatten() for m in meta])
    assert torch.isfinite(flat).all() and flat.abs().sum() > 0
    # the module's own tensors are untouched
    for k, v in model.named_parameters():
        assert v is not params[k]


# ---------------------------------------------------------------- augmentation


def _match_windows(x: torch.Tensor, out: torch.Tensor, pad: int = 4) -> list[tuple[int, int, bool]]:
    """For every sample, the unique (row offset, col offset, flipped) whose window equals ``out``."""
    n, c, h, w = x.shape
    padded = F.pad(x, (pad, pad, pad, pad))
    windows = padded.unfold(2, h, 1).unfold(3, w, 1)  # [N, C, 9, 9, H, W]
    found = []
    for i in range(n):
        hits = []
        for flip in (False, True):
            win = windows[i].flip(-1) if flip else windows[i]
            eq = (win == out[i][:, None, None]).flatten(3).all(-1).all(0)  # [9, 9]
            hits += [(int(a), int(b), flip) for a, b in eq.nonzero()]
        assert len(hits) == 1, f"sample {i}: {len(hits)} matching windows"
        found.append(hits[0])
    return found


def test_crop_flip_is_a_window_of_the_padded_input():
    n, h, w = 300, 10, 10
    x = torch.randn(n, 3, h, w, generator=torch.Generator().manual_seed(1)) + 10.0  # no zeros inside
    out = random_crop_flip(x, torch.Generator().manual_seed(0))
    assert out.shape == x.shape and out.dtype == x.dtype
    found = _match_windows(x, out)
    rows = {r for r, _, _ in found}
    cols = {c for _, c, _ in found}
    flips = [f for _, _, f in found]
    assert rows == set(range(9)) and cols == set(range(9))  # 300 draws cover every offset
    assert 0.3 < sum(flips) / n < 0.7
    for i, (r, c, flip) in enumerate(found):
        img = out[i]
        # rows above/below the image are padding: offset 0 -> 4 zero rows on top, 8 -> at the bottom
        top, bottom = 4 - r if r < 4 else 0, r - 4 if r > 4 else 0
        assert (img[:, :top] == 0).all() and (img[:, h - bottom :] == 0).all()
        left, right = (4 - c if c < 4 else 0), (c - 4 if c > 4 else 0)
        if flip:
            left, right = right, left
        assert (img[..., :left] == 0).all() and (img[..., w - right :] == 0).all()
        assert (img[:, top : h - bottom, left : w - right] != 0).all()


def test_crop_flip_full_size_images():
    x = torch.randn(8, 3, 32, 32, generator=torch.Generator().manual_seed(2)) + 10.0
    out = random_crop_flip(x, torch.Generator().manual_seed(5))
    assert out.shape == (8, 3, 32, 32)
    _match_windows(x, out)


def test_crop_flip_is_seeded():
    rng = torch.Generator().manual_seed(0)
    x = torch.randn(64, 3, 32, 32, generator=rng)
    a = random_crop_flip(x, torch.Generator().manual_seed(7))
    b = random_crop_flip(x, torch.Generator().manual_seed(7))
    c = random_crop_flip(x, torch.Generator().manual_seed(8))
    assert torch.equal(a, b)
    assert not torch.equal(a, c)
    g = torch.Generator().manual_seed(7)
    first, second = random_crop_flip(x, g), random_crop_flip(x, g)
    assert torch.equal(first, a) and not torch.equal(first, second)  # the generator advances


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device to compare devices")
def test_crop_flip_same_on_cuda_and_cpu():
    rng = torch.Generator().manual_seed(0)
    x = torch.randn(375, 3, 32, 32, generator=rng)
    cpu = random_crop_flip(x, torch.Generator().manual_seed(3))
    gpu = random_crop_flip(x.cuda(), torch.Generator().manual_seed(3))
    assert gpu.device.type == "cuda"
    assert torch.equal(cpu, gpu.cpu())


def test_crop_flip_rejects_flat_input():
    rng = torch.Generator().manual_seed(0)
    with pytest.raises(ValueError, match="N, C, H, W"):
        random_crop_flip(torch.randn(4, 3072, generator=rng), torch.Generator())


# ---------------------------------------------------------------- loaders


def test_random_cifar_loader():
    config = load_task("random-cifar10-resnet8", dataset_kwargs={"n_pool": 200, "n_test": 50, "seed": 1})
    data = load_raw_data(config)
    assert data.x_pool.shape == (200, 3, 32, 32) and data.x_test.shape == (50, 3, 32, 32)
    assert data.x_pool.dtype == torch.float32 and data.y_pool.dtype == torch.long
    assert data.num_classes == 10 and data.input_shape == (3, 32, 32)
    assert 0 <= int(data.y_pool.min()) and int(data.y_pool.max()) < 10
    again = load_random_cifar10(config)
    assert torch.equal(again.x_pool, data.x_pool) and torch.equal(again.y_test, data.y_test)
    other = load_random_cifar10(config.replace(dataset_kwargs={"n_pool": 200, "n_test": 50, "seed": 2}))
    assert not torch.equal(other.x_pool, data.x_pool)


def test_random_cifar_defaults_and_100_classes():
    config = load_task("random-cifar10-resnet8", dataset="random-cifar100", dataset_kwargs={})
    data = load_random_cifar100(config)
    assert len(data.x_pool) == 5000 and len(data.x_test) == 1000
    assert data.num_classes == 100 and int(data.y_pool.max()) < 100
    assert int(data.y_pool.max()) > 50  # labels spread over the 100 classes


@pytest.mark.parametrize("loader", [load_random_cifar10, load_cifar10, load_cifar100, load_mnist])
def test_unknown_dataset_kwargs_raise(loader):
    config = load_task("random-cifar10-resnet8", dataset_kwargs={"n_pool": 10, "bogus_key": 1})
    with pytest.raises(ValueError, match="bogus_key"):
        loader(config)


@pytest.mark.skipif(torchvision_importable(), reason="torchvision is importable here; the ImportError path cannot run")
def test_cifar_without_torchvision_says_how_to_install():
    with pytest.raises(ImportError, match=r"l2t-env\[vision\]"):
        load_cifar10(load_task("cifar10-resnet8"))
    with pytest.raises(ImportError, match=r"l2t-env\[vision\]"):
        load_mnist(load_task("mnist-lenet"))


@pytest.mark.skipif(not torchvision_importable(), reason="torchvision is not importable here")
def test_missing_data_folder_names_it(tmp_path):
    with pytest.raises(FileNotFoundError, match="cifar-10-batches-py") as info:
        load_cifar10(load_task("cifar10-resnet8", data_root=str(tmp_path)))
    assert "download=True" in str(info.value) and str(tmp_path) in str(info.value)
    with pytest.raises(FileNotFoundError, match="cifar-100-python"):
        load_cifar100(load_task("cifar100-resnet8", data_root=str(tmp_path)))
    with pytest.raises(FileNotFoundError, match="MNIST"):
        load_mnist(load_task("mnist-lenet", data_root=str(tmp_path)))


def fake_torchvision(monkeypatch, n_train: int = 6, n_test: int = 4) -> None:
    """A stand-in ``torchvision.datasets`` whose CIFAR/MNIST classes hold constant images."""

    class FakeCifar:
        classes = 10

        def __init__(self, root, train=True, download=False):
            n = n_train if train else n_test
            self.data = np.full((n, 32, 32, 3), 255, dtype=np.uint8)
            self.data[:, 0, 0, :] = 0
            self.targets = [i % self.classes for i in range(n)]

    class FakeCifar100(FakeCifar):
        classes = 100

    class FakeMnist:
        def __init__(self, root, train=True, download=False):
            n = n_train if train else n_test
            self.data = torch.full((n, 28, 28), 255, dtype=torch.uint8)
            self.targets = torch.arange(n) % 10

    datasets = types.ModuleType("torchvision.datasets")
    datasets.CIFAR10, datasets.CIFAR100, datasets.MNIST = FakeCifar, FakeCifar100, FakeMnist
    package = types.ModuleType("torchvision")
    package.datasets = datasets
    monkeypatch.setitem(sys.modules, "torchvision", package)
    monkeypatch.setitem(sys.modules, "torchvision.datasets", datasets)


def test_missing_data_folder_with_fake_torchvision(monkeypatch, tmp_path):
    fake_torchvision(monkeypatch)
    with pytest.raises(FileNotFoundError, match="cifar-10-batches-py") as info:
        load_cifar10(load_task("cifar10-resnet8", data_root=str(tmp_path)))
    assert "download=True" in str(info.value) and "download: true" in str(info.value)
    with pytest.raises(FileNotFoundError, match="cifar-100-python"):
        load_cifar100(load_task("cifar100-resnet8", data_root=str(tmp_path)))
    with pytest.raises(FileNotFoundError, match="MNIST"):
        load_mnist(load_task("mnist-lenet", data_root=str(tmp_path)))


def test_conversion_with_fake_torchvision(monkeypatch, tmp_path):
    fake_torchvision(monkeypatch)
    (tmp_path / "cifar-10-batches-py").mkdir()
    (tmp_path / "cifar-100-python").mkdir()
    (tmp_path / "MNIST" / "raw").mkdir(parents=True)
    data = load_cifar10(load_task("cifar10-resnet8", data_root=str(tmp_path), dataset_kwargs={"n_pool": 5}))
    assert data.x_pool.shape == (5, 3, 32, 32) and data.x_test.shape == (4, 3, 32, 32)
    assert data.x_pool.dtype == torch.float32 and data.num_classes == 10
    mean, std = torch.tensor([0.4914, 0.4822, 0.4465]), torch.tensor([0.2470, 0.2435, 0.2616])
    assert torch.allclose(data.x_pool[0, :, 1, 1], (1 - mean) / std)  # white pixel, per channel
    assert torch.allclose(data.x_pool[0, :, 0, 0], -mean / std)  # black pixel
    c100 = load_cifar100(load_task("cifar100-resnet8", data_root=str(tmp_path)))
    assert c100.num_classes == 100 and torch.allclose(c100.x_test[0, 0, 0, 0], torch.tensor(-0.5071 / 0.2673))
    mnist = load_mnist(load_task("mnist-lenet", data_root=str(tmp_path)))
    assert mnist.x_pool.shape == (6, 1, 28, 28) and mnist.input_shape == (1, 28, 28)
    assert torch.allclose(mnist.x_pool[0, 0, 0, 0], torch.tensor((1 - 0.1307) / 0.3081))


# ---------------------------------------------------------------- task files


def test_cifar10_resnet8_wide_task():
    task = load_task("cifar10-resnet8-wide")
    assert task.dataset == "cifar10" and task.student == "resnet8-wide"
    assert (task.lr, task.batch_size, task.unroll_steps) == (0.1, 25, 15)
    assert (task.teaching_steps, task.val_batch_size, task.reward_val_size) == (2500, 100, 100)
    assert task.val_fraction == 0.5 and task.augment == "crop-flip"
    assert task.data_root == "data" and task.download is False


def test_mnist_and_random_tasks():
    mnist = load_task("mnist-lenet")
    assert (mnist.augment, mnist.val_fraction, mnist.teaching_steps, mnist.reward_val_size) == (None, 0.1, 1000, 500)
    rand = load_task("random-cifar10-resnet8-wide")
    assert (rand.dataset, rand.augment) == ("random-cifar10", "crop-flip")
    assert (rand.teaching_steps, rand.val_fraction) == (100, 0.2)


def test_every_task_file_loads():
    names = available_tasks()
    expected = {f"{d}-resnet{n}{w}" for d in ("cifar10", "cifar100") for n in (8, 20, 32) for w in ("", "-wide")}
    expected |= {"mnist-lenet", "random-cifar10-resnet8", "random-cifar10-resnet8-wide"}
    assert expected <= set(names)
    for name in names:
        task = load_task(name)
        assert task.name == name
        if name.startswith("cifar100"):
            assert task.dataset == "cifar100"
