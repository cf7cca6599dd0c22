"""Layers every memloss model shares: `Normalize` (per-channel mean/std in buffers, the model's first layer) and
`Classifier` (normalize → body → pool = features; fc = head)."""

from collections.abc import Sequence

import torch
from torch import nn

from memloss.trainer.data.registry import DatasetInfo


class Normalize(nn.Module):
    """(x - mean) / std per channel; `mean`/`std` are float32 [1, C, 1, 1] buffers, saved in the state_dict unless
    `persistent` is False (the wide ResNets: the RobustBench zoo keeps them out of its state dicts)."""

    def __init__(self, mean: Sequence[float], std: Sequence[float], persistent: bool = True) -> None:
        super().__init__()
        self.register_buffer("mean", torch.tensor(mean, dtype=torch.float32).view(1, -1, 1, 1), persistent=persistent)
        self.register_buffer("std", torch.tensor(std, dtype=torch.float32).view(1, -1, 1, 1), persistent=persistent)

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
