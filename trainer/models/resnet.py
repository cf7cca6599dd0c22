"""CIFAR ResNet-18 and PreAct ResNet-18 (kuangliu-style, as in TRADES, MART and HAT; see models/registry.py)."""

from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import nn

from memloss.trainer.data.registry import DatasetInfo
from memloss.trainer.models.layers import Classifier


class BasicBlock(nn.Module):
    """conv3×3-BN-ReLU-conv3×3-BN plus shortcut (1×1 conv + BN when the shape changes), then ReLU."""

    def __init__(self, in_planes: int, planes: int, stride: int) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(in_planes, planes, 3, stride, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(planes)
        self.conv2 = nn.Conv2d(planes, planes, 3, 1, 1, bias=False)
        self.bn2 = nn.BatchNorm2d(planes)
        self.shortcut = nn.Sequential()
        if stride != 1 or in_planes != planes:
            self.shortcut = nn.Sequential(nn.Conv2d(in_planes, planes, 1, stride, bias=False), nn.BatchNorm2d(planes))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = F.relu(self.bn1(self.conv1(x)))
        return F.relu(self.bn2(self.conv2(out)) + self.shortcut(x))


class PreActBlock(nn.Module):
    """out = relu(bn1(x)); shortcut from `out` (1×1 conv, no BN) when the shape changes, else x;
    conv1, then conv2(relu(bn2(.))), then add."""

    def __init__(self, in_planes: int, planes: int, stride: int) -> None:
        super().__init__()
        self.bn1 = nn.BatchNorm2d(in_planes)
        self.conv1 = nn.Conv2d(in_planes, planes, 3, stride, 1, bias=False)
        self.bn2 = nn.BatchNorm2d(planes)
        self.conv2 = nn.Conv2d(planes, planes, 3, 1, 1, bias=False)
        self.shortcut: nn.Module | None = None
        if stride != 1 or in_planes != planes:
            self.shortcut = nn.Conv2d(in_planes, planes, 1, stride, bias=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = F.relu(self.bn1(x))
        shortcut = self.shortcut(out) if self.shortcut is not None else x
        out = self.conv1(out)
        return self.conv2(F.relu(self.bn2(out))) + shortcut


def _stages(block: type[nn.Module], widths: Sequence[int] = (64, 128, 256, 512),
            blocks: Sequence[int] = (2, 2, 2, 2)) -> list[nn.Module]:
    """The four residual stages (strides 1, 2, 2, 2) starting from 64 channels."""
    layers: list[nn.Module] = []
    in_planes = 64
    for i, (width, count) in enumerate(zip(widths, blocks)):
        for j in range(count):
            layers.append(block(in_planes, width, 2 if (i > 0 and j == 0) else 1))
            in_planes = width
    return layers


def resnet18(info: DatasetInfo) -> Classifier:
    """CIFAR ResNet-18: 3×3 stem conv-BN-ReLU, 8 BasicBlocks, global average pool, Linear(512, classes)."""
    stem = [nn.Conv2d(info.shape[0], 64, 3, 1, 1, bias=False), nn.BatchNorm2d(64), nn.ReLU(inplace=True)]
    body = nn.Sequential(*stem, *_stages(BasicBlock))
    return Classifier(info, body, nn.AdaptiveAvgPool2d(1), nn.Linear(512, info.num_classes))


def preact_resnet18(info: DatasetInfo) -> Classifier:
    """PreAct ResNet-18: 3×3 stem conv (no BN/ReLU), 8 PreActBlocks, final relu(bn), global pool, Linear."""
    stem = nn.Conv2d(info.shape[0], 64, 3, 1, 1, bias=False)
    body = nn.Sequential(stem, *_stages(PreActBlock), nn.BatchNorm2d(512), nn.ReLU(inplace=True))
    return Classifier(info, body, nn.AdaptiveAvgPool2d(1), nn.Linear(512, info.num_classes))
