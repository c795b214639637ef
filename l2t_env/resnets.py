"""Vision students: CIFAR BasicBlock ResNets (two width families) and LeNet-5 for MNIST.

The environment trains students functionally (``torch.func.functional_call``) and differentiates
through many unrolled SGD steps, so every activation here is out-of-place (``F.relu``, ``a + b``)
to keep double backward valid, and a module holds nothing but parameters and buffers.

Two width families share one definition:

* ``resnet8/20/32``: He et al. (2016) CIFAR widths 16/32/64.
* ``resnet8_wide/20_wide/32_wide``: the L2T-DLN reference code's widths 64/128/256.

Both use a 3x3 stem, three stages of BasicBlocks ([1,1,1] / [3,3,3] / [5,5,5]), BatchNorm,
option-B shortcuts (1x1 conv + BN) where the shape changes, global average pooling and a linear
head. The reference code pools its 8x8 map to 2x2 (``avg_pool2d(out, 4)``) and so feeds a
1,024-feature head; ``pool_grid=2`` reproduces that exactly (1,235,274 parameters for wide
ResNet-8 with 10 classes instead of 1,227,594).
"""

from __future__ import annotations

from typing import Sequence

import torch
import torch.nn.functional as F
from torch import nn

STANDARD_WIDTHS = (16, 32, 64)
WIDE_WIDTHS = (64, 128, 256)


class BasicBlock(nn.Module):
    """Two 3x3 conv-BN layers with an identity or 1x1-conv (option B) shortcut."""

    def __init__(self, in_planes: int, planes: int, stride: int = 1) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(in_planes, planes, 3, stride=stride, padding=1, bias=False)
        self.bn1 = nn.BatchNorm2d(planes)
        self.conv2 = nn.Conv2d(planes, planes, 3, stride=1, padding=1, bias=False)
        self.bn2 = nn.BatchNorm2d(planes)
        self.shortcut: nn.Module = nn.Identity()
        if stride != 1 or in_planes != planes:
            self.shortcut = nn.Sequential(
                nn.Conv2d(in_planes, planes, 1, stride=stride, bias=False),
                nn.BatchNorm2d(planes),
            )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = F.relu(self.bn1(self.conv1(x)))
        out = self.bn2(self.conv2(out))
        return F.relu(out + self.shortcut(x))


class CifarResNet(nn.Module):
    """BasicBlock ResNet for small images: stem, three stages (stride 1, 2, 2), pool, linear head.

    ``pool_grid`` is the side of the average-pooled map fed to the head: 1 is global average
    pooling (He et al.); 2 matches the reference code's ``avg_pool2d(out, 4)`` on 32x32 inputs.
    ``kaiming_init`` uses He-normal (fan_out) conv weights; otherwise PyTorch's default conv init,
    as in the reference code. BatchNorm starts at weight 1, bias 0 either way.
    """

    def __init__(
        self,
        input_shape: Sequence[int],
        num_classes: int,
        num_blocks: Sequence[int],
        widths: Sequence[int] = STANDARD_WIDTHS,
        pool_grid: int = 1,
        kaiming_init: bool = True,
    ) -> None:
        super().__init__()
        if len(input_shape) != 3:
            raise ValueError(f"CifarResNet expects input_shape (C, H, W), got {tuple(input_shape)}")
        if len(num_blocks) != 3 or len(widths) != 3:
            raise ValueError(f"num_blocks and widths need three stages, got {num_blocks} and {widths}")
        if int(pool_grid) < 1:
            raise ValueError(f"pool_grid={pool_grid!r}, expected an integer >= 1")
        self.pool_grid = int(pool_grid)
        in_channels = int(input_shape[0])
        w0 = int(widths[0])
        self.conv1 = nn.Conv2d(in_channels, w0, 3, stride=1, padding=1, bias=False)
        self.bn1 = nn.BatchNorm2d(w0)
        stages = []
        in_planes = w0
        for i, (planes, n) in enumerate(zip(widths, num_blocks)):
            blocks = []
            for j in range(int(n)):
                stride = 2 if (i > 0 and j == 0) else 1
                blocks.append(BasicBlock(in_planes, int(planes), stride))
                in_planes = int(planes)
            stages.append(nn.Sequential(*blocks))
        self.layer1, self.layer2, self.layer3 = stages
        self.linear = nn.Linear(in_planes * self.pool_grid**2, num_classes)
        if kaiming_init:
            for m in self.modules():
                if isinstance(m, nn.Conv2d):
                    nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = F.relu(self.bn1(self.conv1(x)))
        out = self.layer3(self.layer2(self.layer1(out)))
        out = F.adaptive_avg_pool2d(out, self.pool_grid)
        return self.linear(out.flatten(1))


def _standard(blocks: Sequence[int], input_shape: tuple, num_classes: int, **kwargs) -> nn.Module:
    kwargs.setdefault("kaiming_init", True)
    return CifarResNet(input_shape, num_classes, blocks, STANDARD_WIDTHS, **kwargs)


def _wide(blocks: Sequence[int], input_shape: tuple, num_classes: int, **kwargs) -> nn.Module:
    kwargs.setdefault("kaiming_init", False)  # the reference code keeps PyTorch's default init
    return CifarResNet(input_shape, num_classes, blocks, WIDE_WIDTHS, **kwargs)


def resnet8(input_shape: tuple, num_classes: int, **kwargs) -> nn.Module:
    """He et al. ResNet-8, widths 16/32/64: 78,042 parameters (10 classes), 83,892 (100)."""
    return _standard((1, 1, 1), input_shape, num_classes, **kwargs)


def resnet20(input_shape: tuple, num_classes: int, **kwargs) -> nn.Module:
    """He et al. ResNet-20, widths 16/32/64: 272,474 parameters (10 classes), 278,324 (100)."""
    return _standard((3, 3, 3), input_shape, num_classes, **kwargs)


def resnet32(input_shape: tuple, num_classes: int, **kwargs) -> nn.Module:
    """He et al. ResNet-32, widths 16/32/64: 466,906 parameters (10 classes), 472,756 (100)."""
    return _standard((5, 5, 5), input_shape, num_classes, **kwargs)


def resnet8_wide(input_shape: tuple, num_classes: int, **kwargs) -> nn.Module:
    """Reference-code ResNet-8, widths 64/128/256: 1,227,594 parameters (10 classes), 1,250,724 (100).

    The reference's 2x2-pooled head (``pool_grid=2``) gives 1,235,274 (10 classes).
    """
    return _wide((1, 1, 1), input_shape, num_classes, **kwargs)


def resnet20_wide(input_shape: tuple, num_classes: int, **kwargs) -> nn.Module:
    """Reference-code ResNet-20, widths 64/128/256: 4,327,754 parameters (10 classes), 4,350,884 (100)."""
    return _wide((3, 3, 3), input_shape, num_classes, **kwargs)


def resnet32_wide(input_shape: tuple, num_classes: int, **kwargs) -> nn.Module:
    """Reference-code ResNet-32, widths 64/128/256: 7,427,914 parameters (10 classes), 7,451,044 (100)."""
    return _wide((5, 5, 5), input_shape, num_classes, **kwargs)


class LeNet5(nn.Module):
    """LeNet-5 for 1x28x28 MNIST: conv 6@5x5 (pad 2), max-pool, conv 16@5x5, max-pool, 120-84-C.

    ReLU replaces the original tanh/sigmoid units; 61,706 parameters for 10 classes. Other input
    sizes work as long as the second pooled map is at least 1x1.
    """

    def __init__(self, input_shape: tuple, num_classes: int) -> None:
        super().__init__()
        if len(input_shape) != 3:
            raise ValueError(f"LeNet5 expects input_shape (C, H, W), got {tuple(input_shape)}")
        c, h, w = (int(v) for v in input_shape)
        h2, w2 = (h // 2 - 4) // 2, (w // 2 - 4) // 2
        if h2 < 1 or w2 < 1:
            raise ValueError(f"LeNet5 needs inputs of at least 12x12, got {h}x{w}")
        self.conv1 = nn.Conv2d(c, 6, 5, padding=2)
        self.conv2 = nn.Conv2d(6, 16, 5)
        self.fc1 = nn.Linear(16 * h2 * w2, 120)
        self.fc2 = nn.Linear(120, 84)
        self.fc3 = nn.Linear(84, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = F.max_pool2d(F.relu(self.conv1(x)), 2)
        x = F.max_pool2d(F.relu(self.conv2(x)), 2)
        x = F.relu(self.fc1(x.flatten(1)))
        x = F.relu(self.fc2(x))
        return self.fc3(x)
