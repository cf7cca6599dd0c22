"""The classifiers: CIFAR ResNet-18, PreAct ResNet-18 and a small CNN, all taking [0, 1] images.

Normalization is each model's first layer (`Normalize`, mean/std in buffers, the RobustBench convention), so attacks
work in pixel space and the state_dict carries the statistics. Every model splits into `features(x) -> [B, D]`
(penultimate activations) and `head(f) -> logits [B, num_classes]`, with forward = head(features(x)).

ResNet-18 / PreAct ResNet-18 follow the kuangliu-style CIFAR definitions used by TRADES, MART and HAT
(spec algorithms.md §8): 3×3 stride-1 stem, no max-pool, [2, 2, 2, 2] blocks of widths 64-512. One deliberate change:
global average pooling (`adaptive_avg_pool2d(1)`) instead of `avg_pool2d(4)`; on 32×32 inputs the last feature map
is 4×4, so the two are identical, and the adaptive form also accepts other resolutions (8×8 digits, synthetic).

The small CNN (3 conv-BN-ReLU layers, 32/64/128 channels, two of them stride 2, then a 2×2 adaptive average pool
and a linear layer on the 512 pooled values) keeps a coarse spatial layout, which digit shapes need, and is cheap
enough for 10-step PGD training on 2 CPU cores.
"""

from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import nn

from memstore.errors import MemlossError
from trainer.data.registry import DatasetInfo

ARCHES: tuple[str, ...] = ("resnet18", "preact_resnet18", "small_cnn")


class ModelError(MemlossError):
    """An unknown architecture name."""


class Normalize(nn.Module):
    """(x - mean) / std per channel; `mean`/`std` are float32 [1, C, 1, 1] buffers (saved in the state_dict)."""

    def __init__(self, mean: Sequence[float], std: Sequence[float]) -> None:
        super().__init__()
        self.register_buffer("mean", torch.tensor(mean, dtype=torch.float32).view(1, -1, 1, 1))
        self.register_buffer("std", torch.tensor(std, dtype=torch.float32).view(1, -1, 1, 1))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return (x - self.mean) / self.std


class Classifier(nn.Module):
    """Normalize → `body` (conv trunk giving [B, D', h, w]) → `pool` → flatten = features; `fc` = head."""

    def __init__(self, info: DatasetInfo, body: nn.Module, pool: nn.Module, fc: nn.Linear) -> None:
        super().__init__()
        self.normalize = Normalize(info.mean, info.std)
        self.body = body
        self.pool = pool
        self.fc = fc

    def features(self, x: torch.Tensor) -> torch.Tensor:
        """x float [B, C, H, W] in [0, 1] → penultimate features float [B, D]."""
        return torch.flatten(self.pool(self.body(self.normalize(x))), 1)

    def head(self, f: torch.Tensor) -> torch.Tensor:
        """features [B, D] → logits [B, num_classes]."""
        return self.fc(f)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.features(x))


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


def small_cnn(info: DatasetInfo) -> Classifier:
    """3 conv-BN-ReLU layers (32, 64 s2, 128 s2), 2×2 adaptive average pool (512 features), Linear."""
    layers: list[nn.Module] = []
    in_ch = info.shape[0]
    for out_ch, stride in ((32, 1), (64, 2), (128, 2)):
        layers += [nn.Conv2d(in_ch, out_ch, 3, stride, 1, bias=False), nn.BatchNorm2d(out_ch), nn.ReLU(inplace=True)]
        in_ch = out_ch
    return Classifier(info, nn.Sequential(*layers), nn.AdaptiveAvgPool2d(2), nn.Linear(128 * 4, info.num_classes))


_BUILDERS = {"resnet18": resnet18, "preact_resnet18": preact_resnet18, "small_cnn": small_cnn}


def build_model(arch: str, info: DatasetInfo) -> Classifier:
    """A freshly initialised `arch` for inputs of `info.shape` in [0, 1], `info.num_classes` outputs."""
    if arch not in _BUILDERS:
        raise ModelError(f"unknown architecture {arch!r}; valid: {', '.join(ARCHES)}")
    return _BUILDERS[arch](info)
