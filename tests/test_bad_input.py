"""Bad input is caught when the env or the task is built, with a message naming value and expectation."""

from __future__ import annotations


import gymnasium as gym
import pytest
import torch

import l2t_env  # noqa: F401 - registers L2T-v0
from l2t_env.env import resolve_device
from l2t_env.tasks import RawData, TaskConfig


def toy_data(n: int = 120, features: int = 5, classes: int = 3, num_classes: int | None = None) -> RawData:
    g = torch.Generator().manual_seed(0)
    x = torch.randn(n, features, generator=g)
    y = torch.arange(n) % classes
    return RawData.from_tensors(x[: n - 20], y[: n - 20], x[n - 20 :], y[n - 20 :], num_classes)


def mlp(inputs: int, outputs: int) -> torch.nn.Module:
    return torch.nn.Sequential(torch.nn.Linear(inputs, 8), torch.nn.ReLU(), torch.nn.Linear(8, outputs))


def test_batch_larger_than_training_split_names_its_size():
    # digits-mlp: 1,438 in the pool, val_fraction=0.25 holds out 360 -> 1,078 training examples
    with pytest.raises(ValueError, match=r"batch_size=5000 .*training split.* 1078 examples.*batch_size <= 1078"):
        gym.make("L2T-v0", batch_size=5000)
    with pytest.raises(ValueError, match=r"batch_size=100000"):
        gym.make("L2T-v0", batch_size=100000)
    env = gym.make("L2T-v0", batch_size=1078, teaching_steps=1, unroll_steps=1, lookahead="off")
    env.reset(seed=0)  # the largest batch that fits is accepted


def test_validation_batch_and_reward_subset_are_clipped_to_the_validation_split():
    data = toy_data(n=120)  # pool 100 -> 20 validation examples
    task = TaskConfig(name="toy", dataset=data, student=mlp(5, 3), teaching_steps=1, unroll_steps=2, batch_size=10)
    env = gym.make("L2T-v0", task=task.replace(val_batch_size=500, reward_val_size=300))
    env.reset(seed=0)
    u = env.unwrapped
    assert len(u.splits.x_val) == 20
    assert u.stream.val_batch_size == 20 and len(u._next.x_val) == 20
    assert len(u._x_fixed) == 20


def test_cuda_without_cuda_says_what_is_available_and_about_auto():
    if torch.cuda.is_available():
        n = torch.cuda.device_count()
        with pytest.raises(ValueError, match=rf"device='cuda:{n}'.*'cuda:0'.*device='auto'"):
            resolve_device(f"cuda:{n}")
        return
    with pytest.raises(ValueError, match=r"device='cuda' was asked for.*only \['cpu'\].*device='auto'"):
        gym.make("L2T-v0", device="cuda")
    with pytest.raises(ValueError, match=r"device='gpu' is not a device; expected 'auto', 'cpu'"):
        resolve_device("gpu")
    assert resolve_device("auto") == torch.device("cpu")


def test_student_that_does_not_fit_the_input_shape_fails_at_build():
    task = TaskConfig(name="toy", dataset=toy_data(features=5), student=mlp(7, 3), teaching_steps=1)
    with pytest.raises(ValueError, match=r"task 'toy': the student failed on a batch of inputs of shape \(2, 5\).*\[N, 3\] logits"):
        gym.make("L2T-v0", task=task)


def test_student_with_fewer_outputs_than_classes_fails_at_build():
    task = TaskConfig(name="toy", dataset=toy_data(classes=10), student=mlp(5, 3), teaching_steps=1)
    with pytest.raises(ValueError, match=r"student output has shape \(2, 3\) \(3 columns, the task has 10 classes\).*expected shape \(2, 10\)"):
        gym.make("L2T-v0", task=task)


def test_labels_outside_the_class_range_are_named():
    with pytest.raises(ValueError, match=r"y_pool holds labels in \[0, 4\], expected 0\.\.2"):
        toy_data(classes=5, num_classes=3)
    rng = torch.Generator().manual_seed(0)
    x = torch.randn(10, 2, generator=rng)
    with pytest.raises(ValueError, match=r"y_test holds labels in \[-1, 1\], expected 0\.\.1"):
        RawData.from_tensors(x, torch.arange(10) % 2, x, torch.arange(10) % 3 - 1, num_classes=2)


def test_non_finite_inputs_are_named_with_their_first_example():
    rng = torch.Generator().manual_seed(0)
    x = torch.randn(30, 4, generator=rng)
    x[7, 2] = float("nan")
    x[9] = float("inf")
    y = torch.arange(30) % 2
    with pytest.raises(ValueError, match=r"x_pool holds 5 non-finite value\(s\) \(NaN or inf\) in 2 example\(s\), the first at index 7"):
        RawData.from_tensors(x, y, torch.randn(5, 4, generator=rng), y[:5])
    with pytest.raises(ValueError, match=r"x_test holds 5 non-finite value\(s\) .* in 2 example\(s\), the first at index 0"):
        RawData.from_tensors(torch.randn(30, 4, generator=rng), y, x[7:12], y[:5])
    with pytest.raises(ValueError, match=r"x_test examples have shape \(3,\), expected \(4,\)"):
        RawData.from_tensors(torch.randn(30, 4, generator=rng), y, torch.randn(5, 3, generator=rng), y[:5])


def test_dry_forward_leaves_the_global_random_stream_alone():
    task = TaskConfig(name="toy", dataset=toy_data(), student=mlp(5, 3), teaching_steps=1)
    torch.manual_seed(3)
    before = torch.get_rng_state()
    gym.make("L2T-v0", task=task)
    assert torch.equal(torch.get_rng_state(), before)
