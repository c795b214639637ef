"""Small students for the embedded digits tasks. Vision students live in ``resnets.py``."""

from __future__ import annotations

import math

from torch import nn


class MLP(nn.Module):
    """Fully connected ReLU network; the default ``digits-mlp`` student is 64-128-10."""

    def __init__(self, input_shape: tuple[int, ...], num_classes: int, hidden: tuple[int, ...] = (128,)) -> None:
        super().__init__()
        layers: list[nn.Module] = [nn.Flatten()]
        width = math.prod(input_shape)
        for h in hidden:
            layers += [nn.Linear(width, h), nn.ReLU()]
            width = h
        layers.append(nn.Linear(width, num_classes))
        self.net = nn.Sequential(*layers)

    def forward(self, x):
        return self.net(x)


class DigitsCNN(nn.Module):
    """Two 3x3 convolutions and a linear head for 1x8x8 digits (the ``digits-cnn`` student)."""

    def __init__(self, input_shape: tuple[int, ...], num_classes: int, channels: tuple[int, int] = (16, 32)) -> None:
        super().__init__()
        c_in, h, w = input_shape
        c1, c2 = channels
        self.features = nn.Sequential(
            nn.Conv2d(c_in, c1, 3, padding=1),
            nn.ReLU(),
            nn.Conv2d(c1, c2, 3, padding=1),
            nn.ReLU(),
            nn.MaxPool2d(2),
            nn.Flatten(),
        )
        self.head = nn.Linear(c2 * (h // 2) * (w // 2), num_classes)

    def forward(self, x):
        return self.head(self.features(x))


class CNN1D(nn.Module):
    """A small 1-D CNN for sequences ``[1, L]`` (the ``mnist1d-cnn`` student).

    Three 3-wide convolutions (stride 2, ReLU) and a linear head, in the spirit of the MNIST-1D
    paper's small CNN.
    """

    def __init__(self, input_shape: tuple[int, ...], num_classes: int, channels: tuple[int, ...] = (25, 25, 25)) -> None:
        super().__init__()
        if len(input_shape) != 2:
            raise ValueError(f"cnn1d: input_shape={input_shape!r}, expected (channels, length); use dataset_kwargs channel: true")
        c_in, length = input_shape
        layers: list[nn.Module] = []
        for c in channels:
            layers += [nn.Conv1d(c_in, c, 3, stride=2, padding=1), nn.ReLU()]
            c_in, length = c, (length + 1) // 2
        self.features = nn.Sequential(*layers, nn.Flatten())
        self.head = nn.Linear(c_in * length, num_classes)

    def forward(self, x):
        return self.head(self.features(x))
