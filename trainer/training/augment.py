"""Augmentation on the training device with recorded parameters: random crop with zero padding, and horizontal flip.

A *view* of an image x [C,H,W] is `crop(pad(x, p), offset)` followed by an optional horizontal flip. Because the
parameters are kept per sample, the memory store can rebuild the exact adversarial image of an earlier epoch as
clamp(view_k(x) + δ_k, 0, 1), and `align_delta` can move δ_k into another view.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F

from memloss.trainer.common.devices import to_device


@dataclass(frozen=True)
class ViewParams:
    """Per-sample view parameters. offset: int64 [B,2] (row, column) in [0, 2·pad]; flip: bool [B]."""

    offset: torch.Tensor
    flip: torch.Tensor

    def to(self, device: torch.device) -> "ViewParams":
        """The same views on `device` (host tensors pinned first when it is CUDA: common/devices.py)."""
        return ViewParams(to_device(self.offset, device), to_device(self.flip, device))


def identity_views(batch: int, pad: int, device: torch.device) -> ViewParams:
    """The un-augmented view (centre crop, no flip)."""
    offset = torch.full((batch, 2), pad, dtype=torch.int64, device=device)
    return ViewParams(offset, torch.zeros(batch, dtype=torch.bool, device=device))


def sample_views(batch: int, pad: int, flip: bool, generator: torch.Generator, device: torch.device) -> ViewParams:
    """Random crop offsets uniform in [0, 2·pad] and flips with probability 1/2 (if `flip`)."""
    offset = torch.randint(0, 2 * pad + 1, (batch, 2), generator=generator, device=device)
    flips = torch.rand(batch, generator=generator, device=device) < 0.5
    return ViewParams(offset, flips & flip)


def _grid(params: ViewParams, height: int, width: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Index grids mapping view pixel (i, j) of each sample to its padded-image pixel: ([B,1,1], [B,H,1], [B,1,W])."""
    device = params.offset.device
    rows = params.offset[:, :1] + torch.arange(height, device=device)
    cols = torch.arange(width, device=device).expand(len(params.flip), width)
    cols = torch.where(params.flip[:, None], width - 1 - cols, cols) + params.offset[:, 1:]
    batch = torch.arange(len(params.flip), device=device)
    return batch[:, None, None], rows[:, :, None], cols[:, None, :]


def apply_view(x: torch.Tensor, params: ViewParams, pad: int) -> torch.Tensor:
    """The view of x [B,C,H,W] (float, any range) under `params`; zero padding; differentiable."""
    padded = F.pad(x, (pad, pad, pad, pad)) if pad else x
    return _crop(padded.permute(0, 2, 3, 1), params, x.shape[-2], x.shape[-1])


def align_delta(delta: torch.Tensor, source: ViewParams, target: ViewParams, pad: int) -> torch.Tensor:
    """Moves a perturbation made on view `source` into view `target` of the same image.

    Pixels of the target view that the source view did not cover get 0 (the border of the padded canvas).
    delta: float [B,C,H,W]; returns float [B,C,H,W].
    """
    n, ch, h, w = delta.shape
    canvas = delta.new_zeros(n, h + 2 * pad, w + 2 * pad, ch)
    b, r, c = _grid(source, h, w)
    canvas[b, r, c] = delta.permute(0, 2, 3, 1)
    return _crop(canvas, target, h, w)


def _crop(canvas: torch.Tensor, params: ViewParams, height: int, width: int) -> torch.Tensor:
    """Crops (and flips) views of size height×width out of a channels-last padded canvas [B,H+2p,W+2p,C]."""
    b, r, c = _grid(params, height, width)
    return canvas[b, r, c].permute(0, 3, 1, 2)
