"""A small CNN for CPU runs (digits, synthetic): cheap enough for 10-step PGD training on 2 cores."""

from torch import nn

from memloss.trainer.data.registry import DatasetInfo
from memloss.trainer.models.layers import Classifier


def small_cnn(info: DatasetInfo) -> Classifier:
    """3 conv-BN-ReLU layers (32, 64 s2, 128 s2), 2×2 adaptive average pool (512 features), Linear."""
    layers: list[nn.Module] = []
    in_ch = info.shape[0]
    for out_ch, stride in ((32, 1), (64, 2), (128, 2)):
        layers += [nn.Conv2d(in_ch, out_ch, 3, stride, 1, bias=False), nn.BatchNorm2d(out_ch), nn.ReLU(inplace=True)]
        in_ch = out_ch
    return Classifier(info, nn.Sequential(*layers), nn.AdaptiveAvgPool2d(2), nn.Linear(128 * 4, info.num_classes))
