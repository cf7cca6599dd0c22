"""The toy network: a two-layer ReLU MLP whose single output z is returned as the logits [0, z], so that softmax is
the paper's sigmoid and cross-entropy its BCE; plus the error helpers the runs use."""

from __future__ import annotations

import torch
from torch import Tensor, nn


class TwoLogitMLP(nn.Module):
    """Two hidden ReLU layers and one output unit z; forward returns logits [B, 2] = [0, z] for inputs [B, 2]
    in [0,1]² (float32), so that softmax gives [1 − σ(z), σ(z)] = the paper's sigmoid output."""

    def __init__(self, hidden: int) -> None:
        super().__init__()
        self.body = nn.Sequential(
            nn.Linear(2, hidden), nn.ReLU(), nn.Linear(hidden, hidden), nn.ReLU(), nn.Linear(hidden, 1)
        )

    def forward(self, x: Tensor) -> Tensor:
        z = self.body(x)
        return torch.cat([torch.zeros_like(z), z], dim=1)


def build_toy_model(hidden: int, seed: int) -> TwoLogitMLP:
    """PyTorch's default initialization, drawn from `seed` without touching the global random state."""
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        return TwoLogitMLP(hidden)


@torch.no_grad()
def wrong_mask(model: nn.Module, x: Tensor, y: Tensor) -> Tensor:
    """bool [N]: the predicted class of x [N, 2] (argmax of the logits; a tie z = 0 counts as class 0) is not y."""
    return model(x).argmax(dim=1) != y


def error_rate(model: nn.Module, x: Tensor, y: Tensor) -> Tensor:
    """Fraction (0-dim float tensor in [0, 1]) of points x [N, 2] misclassified by the model.
    Forgetting of epoch n = error_rate(model_n, x_adv_{n−1}, y)."""
    return wrong_mask(model, x, y).float().mean()
