"""The toy network: a two-layer ReLU MLP whose single output z is returned as the logits [0, z], so that softmax is
the paper's sigmoid and cross-entropy its BCE. `EnsembleMLP` holds R such networks (one per run: seeds × variants)
in stacked weight tensors and evaluates them with batched matrix products, so that every run of the experiment
advances in the same step at the cost of about one; `TwoLogitMLP` is one of them as an ordinary module (figures)."""

from __future__ import annotations

import math

import torch
from torch import Tensor, nn


class TwoLogitMLP(nn.Module):
    """Two hidden ReLU layers and one output unit z; forward returns logits [B, 2] = [0, z] for inputs [B, 2]
    in [0,1]² (float32), so that softmax gives [1 − σ(z), σ(z)] = the paper's sigmoid output."""

    def __init__(self, hidden: int, dims: int = 2) -> None:
        super().__init__()
        self.body = nn.Sequential(
            nn.Linear(dims, hidden), nn.ReLU(), nn.Linear(hidden, hidden), nn.ReLU(), nn.Linear(hidden, 1)
        )

    def forward(self, x: Tensor) -> Tensor:
        z = self.body(x)
        return torch.cat([torch.zeros_like(z), z], dim=1)


# (name, shape given hidden h): weights are [fan_in, fan_out] so that x @ w works on a batch of rows.
def _shapes(hidden: int, dims: int) -> tuple[tuple[str, tuple[int, ...]], ...]:
    return (("w1", (dims, hidden)), ("b1", (1, hidden)), ("w2", (hidden, hidden)), ("b2", (1, hidden)),
            ("w3", (hidden, 1)), ("b3", (1, 1)))


def _fan_in(name: str, hidden: int, dims: int) -> int:
    return dims if name in ("w1", "b1") else hidden


class EnsembleMLP(nn.Module):
    """R independent `TwoLogitMLP`s. Parameters are [R, ...]; forward takes the R runs' inputs stacked run-major,
    x float [R·B, 2] (rows r·B … r·B + B − 1 belong to run r), and returns logits [R·B, 2] = [0, z].

    Because each run owns its slice of every parameter, the gradient of Σ_r (mean loss of run r) with respect to
    that slice is exactly run r's own gradient, and SGD's momentum and weight decay act element-wise: one optimizer
    over the ensemble is R independent optimizers."""

    def __init__(self, runs: int, hidden: int, dims: int = 2) -> None:
        super().__init__()
        self.runs, self.hidden, self.dims = runs, hidden, dims
        for name, shape in _shapes(hidden, dims):
            self.register_parameter(name, nn.Parameter(torch.zeros(runs, *shape)))

    @torch.no_grad()
    def init_runs(self, seeds: list[int]) -> None:
        """PyTorch's default `nn.Linear` initialization (U(±1/√fan_in) for weights and biases), run r drawn from
        seeds[r] alone: runs given the same seed start from the same weights (the paired design)."""
        if len(seeds) != self.runs:
            raise ValueError(f"need one seed per run ({self.runs}), got {len(seeds)}")
        for r, seed in enumerate(seeds):
            gen = torch.Generator().manual_seed(seed)
            for name, shape in _shapes(self.hidden, self.dims):
                bound = 1.0 / math.sqrt(_fan_in(name, self.hidden, self.dims))
                getattr(self, name)[r].copy_((torch.rand(shape, generator=gen) * 2 - 1) * bound)

    def forward(self, x: Tensor) -> Tensor:
        h = x.view(self.runs, -1, self.dims)
        h = torch.relu(torch.baddbmm(self.b1, h, self.w1))
        h = torch.relu(torch.baddbmm(self.b2, h, self.w2))
        z = torch.baddbmm(self.b3, h, self.w3).reshape(-1, 1)
        return torch.cat([torch.zeros_like(z), z], dim=1)

    def member(self, r: int) -> TwoLogitMLP:
        """Run r as a standalone `TwoLogitMLP` (a copy of its weights)."""
        model = TwoLogitMLP(self.hidden, self.dims)
        linears = [m for m in model.body if isinstance(m, nn.Linear)]
        with torch.no_grad():
            for i, layer in enumerate(linears, start=1):
                layer.weight.copy_(getattr(self, f"w{i}")[r].T)
                layer.bias.copy_(getattr(self, f"b{i}")[r, 0])
        return model


@torch.no_grad()
def wrong_mask(model: nn.Module, x: Tensor, y: Tensor) -> Tensor:
    """bool [N]: the predicted class of x [N, 2] (argmax of the logits; a tie z = 0 counts as class 0) is not y."""
    return model(x).argmax(dim=1) != y


def error_rate(model: nn.Module, x: Tensor, y: Tensor) -> Tensor:
    """Fraction (0-dim float tensor in [0, 1]) of points x [N, 2] misclassified by the model."""
    return wrong_mask(model, x, y).float().mean()
