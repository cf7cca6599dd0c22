"""Wide ResNets as published, with the state_dict keys of the RobustBench model zoo's definitions.

- `wrn-28-10`, `wrn-34-10`, `wrn-70-16` (`ClassicWideResNet`): the WideResNet of the TRADES/MART code, DM-Improves-AT
  `core/models/wideresnet.py` (its `wrn-D-W` names) and RobustBench `model_zoo/architectures/wide_resnet.py`
  (`WideResNet(depth, widen_factor)`, sub_block1=False): pre-activation blocks, ReLU, BN momentum 0.1, 3×3 convolutions
  with padding 1, a 1×1 shortcut where the width changes. Keys: conv1, block{1,2,3}.layer.{i}.{bn1, conv1, bn2,
  conv2, convShortcut}, bn1, fc.
- `wrn-28-10-swish`, `wrn-34-10-swish`, `wrn-70-16-swish` (`DMWideResNet`): DeepMind's WideResNet (Gowal et al.
  2020) as in DM-Improves-AT `core/models/wideresnetwithswish.py` and RobustBench `dm_wide_resnet.py`
  (`DMWideResNet(depth, width, activation_fn=nn.SiLU)`): SiLU, TensorFlow-"SAME" padding of the 3×3 convolutions
  (1 px all round at stride 1, 0 left/top and 1 right/bottom at stride 2), BN momentum 0.01 as DM-Improves-AT trains
  it. Keys: init_conv, layer.{g}.block.{i}.{batchnorm_0, conv_0, batchnorm_1, conv_1, shortcut}, batchnorm, logits.

Both take [0, 1] images and normalize inside (`normalize`, mean/std buffers [1, C, 1, 1]). The buffers are not
persistent: the zoo's DMWideResNet keeps mean/std out of its state dict (register_buffer(persistent=False)) and its
WideResNet has none, so a zoo state dict loads into these models with strict=True and theirs back into the zoo's.
memloss model files record mean/std in their metadata instead (models/files.py). Global average pooling is adaptive
(identical to the published avg_pool2d(8) on 32×32 inputs) so other resolutions work too. Initialization as
published: convolutions N(0, 2/(k²·out_channels)), BN weight 1 / bias 0, linear bias 0.
"""

import math

import torch
import torch.nn.functional as F
from torch import nn

from memloss.trainer.data.registry import DatasetInfo
from memloss.trainer.models.layers import Normalize

CLASSIC_BN_MOMENTUM = 0.1
DM_BN_MOMENTUM = 0.01  # DM-Improves-AT (Haiku's decay 0.99); the zoo's inference copy leaves torch's 0.1


def _blocks_per_group(depth: int) -> int:
    if (depth - 4) % 6 != 0 or depth < 10:
        raise ValueError(f"a WideResNet depth must be 6·n + 4 with n ≥ 1, got {depth}")
    return (depth - 4) // 6


def _widths(width: int) -> tuple[int, int, int, int]:
    return 16, 16 * width, 32 * width, 64 * width


class _ClassicBlock(nn.Module):
    """relu(bn1(x)) → conv1 (stride) → relu(bn2) → conv2, plus x, or convShortcut(relu(bn1(x))) when widths differ."""

    def __init__(self, in_planes: int, out_planes: int, stride: int) -> None:
        super().__init__()
        self.bn1 = nn.BatchNorm2d(in_planes, momentum=CLASSIC_BN_MOMENTUM)
        self.relu1 = nn.ReLU(inplace=True)
        self.conv1 = nn.Conv2d(in_planes, out_planes, 3, stride, 1, bias=False)
        self.bn2 = nn.BatchNorm2d(out_planes, momentum=CLASSIC_BN_MOMENTUM)
        self.relu2 = nn.ReLU(inplace=True)
        self.conv2 = nn.Conv2d(out_planes, out_planes, 3, 1, 1, bias=False)
        self.equalInOut = in_planes == out_planes  # noqa: N815 (the published attribute names)
        self.convShortcut = None if self.equalInOut else nn.Conv2d(in_planes, out_planes, 1, stride, 0, bias=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        act = self.relu1(self.bn1(x))
        shortcut = x if self.convShortcut is None else self.convShortcut(act)
        return shortcut + self.conv2(self.relu2(self.bn2(self.conv1(act))))


class _ClassicGroup(nn.Module):
    """`count` classic blocks; the first changes the width and applies the stride."""

    def __init__(self, count: int, in_planes: int, out_planes: int, stride: int) -> None:
        super().__init__()
        self.layer = nn.Sequential(*[_ClassicBlock(in_planes if i == 0 else out_planes, out_planes,
                                                   stride if i == 0 else 1) for i in range(count)])

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.layer(x)


class _DMBlock(nn.Module):
    """act(batchnorm_0(x)) → SAME-padded conv_0 (stride) → act(batchnorm_1) → conv_1, plus x, or
    shortcut(act(batchnorm_0(x))) when the widths differ."""

    def __init__(self, in_planes: int, out_planes: int, stride: int, activation: type[nn.Module]) -> None:
        super().__init__()
        if stride not in (1, 2):
            raise ValueError(f"unsupported stride {stride}")
        self.batchnorm_0 = nn.BatchNorm2d(in_planes, momentum=DM_BN_MOMENTUM)
        self.relu_0 = activation()
        self.conv_0 = nn.Conv2d(in_planes, out_planes, 3, stride, 0, bias=False)
        self.batchnorm_1 = nn.BatchNorm2d(out_planes, momentum=DM_BN_MOMENTUM)
        self.relu_1 = activation()
        self.conv_1 = nn.Conv2d(out_planes, out_planes, 3, 1, 1, bias=False)
        self.has_shortcut = in_planes != out_planes
        self.shortcut = nn.Conv2d(in_planes, out_planes, 1, stride, 0, bias=False) if self.has_shortcut else None
        # TensorFlow "SAME": a stride-2 3×3 convolution pads only right and bottom.
        self._pad = (1, 1, 1, 1) if stride == 1 else (0, 1, 0, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        act = self.relu_0(self.batchnorm_0(x))
        out = self.conv_1(self.relu_1(self.batchnorm_1(self.conv_0(F.pad(act, self._pad)))))
        return (self.shortcut(act) if self.shortcut is not None else x) + out


class _DMGroup(nn.Module):
    """`count` DM blocks; the first changes the width and applies the stride."""

    def __init__(self, count: int, in_planes: int, out_planes: int, stride: int, activation: type[nn.Module]) -> None:
        super().__init__()
        self.block = nn.Sequential(*[_DMBlock(in_planes if i == 0 else out_planes, out_planes,
                                              stride if i == 0 else 1, activation) for i in range(count)])

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.block(x)


def _init_published(model: nn.Module) -> None:
    """The published initialization (both definitions)."""
    for m in model.modules():
        if isinstance(m, nn.Conv2d):
            m.weight.data.normal_(0, math.sqrt(2.0 / (m.kernel_size[0] * m.kernel_size[1] * m.out_channels)))
        elif isinstance(m, nn.BatchNorm2d):
            m.weight.data.fill_(1)
            m.bias.data.zero_()
        elif isinstance(m, nn.Linear):
            m.bias.data.zero_()


class ClassicWideResNet(nn.Module):
    """WRN-depth-width (TRADES/RobustBench `WideResNet`): [0, 1] input float [B, C, H, W] → logits [B, classes]."""

    def __init__(self, info: DatasetInfo, depth: int, width: int) -> None:
        super().__init__()
        count, (w0, w1, w2, w3) = _blocks_per_group(depth), _widths(width)
        self.normalize = Normalize(info.mean, info.std, persistent=False)
        self.conv1 = nn.Conv2d(info.shape[0], w0, 3, 1, 1, bias=False)
        self.block1 = _ClassicGroup(count, w0, w1, 1)
        self.block2 = _ClassicGroup(count, w1, w2, 2)
        self.block3 = _ClassicGroup(count, w2, w3, 2)
        self.bn1 = nn.BatchNorm2d(w3, momentum=CLASSIC_BN_MOMENTUM)
        self.relu = nn.ReLU(inplace=True)
        self.fc = nn.Linear(w3, info.num_classes)
        _init_published(self)

    def features(self, x: torch.Tensor) -> torch.Tensor:
        """x float [B, C, H, W] in [0, 1] → pooled features float [B, 64·width]."""
        out = self.block3(self.block2(self.block1(self.conv1(self.normalize(x)))))
        return torch.flatten(F.adaptive_avg_pool2d(self.relu(self.bn1(out)), 1), 1)

    def head(self, f: torch.Tensor) -> torch.Tensor:
        """features [B, 64·width] → logits [B, num_classes]."""
        return self.fc(f)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.features(x))


class DMWideResNet(nn.Module):
    """DeepMind's WRN-depth-width (RobustBench `DMWideResNet`) with `activation` (SiLU for the -swish names):
    [0, 1] input float [B, C, H, W] → logits [B, classes]."""

    def __init__(self, info: DatasetInfo, depth: int, width: int, activation: type[nn.Module] = nn.SiLU) -> None:
        super().__init__()
        count, (w0, w1, w2, w3) = _blocks_per_group(depth), _widths(width)
        self.normalize = Normalize(info.mean, info.std, persistent=False)
        self.init_conv = nn.Conv2d(info.shape[0], w0, 3, 1, 1, bias=False)
        self.layer = nn.Sequential(_DMGroup(count, w0, w1, 1, activation), _DMGroup(count, w1, w2, 2, activation),
                                   _DMGroup(count, w2, w3, 2, activation))
        self.batchnorm = nn.BatchNorm2d(w3, momentum=DM_BN_MOMENTUM)
        self.relu = activation()
        self.logits = nn.Linear(w3, info.num_classes)
        _init_published(self)

    def features(self, x: torch.Tensor) -> torch.Tensor:
        """x float [B, C, H, W] in [0, 1] → pooled features float [B, 64·width]."""
        out = self.layer(self.init_conv(self.normalize(x)))
        return torch.flatten(F.adaptive_avg_pool2d(self.relu(self.batchnorm(out)), 1), 1)

    def head(self, f: torch.Tensor) -> torch.Tensor:
        """features [B, 64·width] → logits [B, num_classes]."""
        return self.logits(f)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.features(x))


# name → (depth, width, swish). The names follow DM-Improves-AT's `--model` names.
WIDE_RESNETS: dict[str, tuple[int, int, bool]] = {
    "wrn-28-10": (28, 10, False), "wrn-34-10": (34, 10, False), "wrn-70-16": (70, 16, False),
    "wrn-28-10-swish": (28, 10, True), "wrn-34-10-swish": (34, 10, True), "wrn-70-16-swish": (70, 16, True),
}


def wide_resnet(arch: str, info: DatasetInfo) -> nn.Module:
    """The published network called `arch` (a key of WIDE_RESNETS) for inputs of `info.shape`."""
    depth, width, swish = WIDE_RESNETS[arch]
    return DMWideResNet(info, depth, width) if swish else ClassicWideResNet(info, depth, width)
