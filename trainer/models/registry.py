"""The classifiers: CIFAR ResNet-18, PreAct ResNet-18, a small CNN and the published wide ResNets (WRN-28-10,
WRN-34-10, WRN-70-16 and their SiLU "-swish" variants, models/wide_resnet.py), all taking [0, 1] images.

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

from torch import nn

from memloss.errors import MemlossError
from memloss.trainer.data.registry import DatasetInfo
from memloss.trainer.models.resnet import preact_resnet18, resnet18
from memloss.trainer.models.small_cnn import small_cnn
from memloss.trainer.models.wide_resnet import WIDE_RESNETS, wide_resnet

ARCHES: tuple[str, ...] = ("resnet18", "preact_resnet18", "small_cnn", *WIDE_RESNETS)


class ModelError(MemlossError):
    """An unknown architecture name."""


_BUILDERS = {"resnet18": resnet18, "preact_resnet18": preact_resnet18, "small_cnn": small_cnn}


def build_model(arch: str, info: DatasetInfo) -> nn.Module:
    """A freshly initialised `arch` for inputs of `info.shape` in [0, 1], `info.num_classes` outputs."""
    if arch in WIDE_RESNETS:
        return wide_resnet(arch, info)
    if arch not in _BUILDERS:
        raise ModelError(f"unknown architecture {arch!r}; valid: {', '.join(ARCHES)}")
    return _BUILDERS[arch](info)
