"""8-bit quantization of perturbations with a per-sample scale (device-agnostic, pure torch).

code = round(127·δ/s) + 128 with s = max|δ| per sample, so codes lie in [1, 255], δ = 0 and δ = ±s are exact and
the error is at most s/254. A sample with s = 0 has all codes 128.
"""

from __future__ import annotations

import torch

from memloss.errors import MemlossError

ZERO_CODE = 128
LEVELS = 127
EPS_SLACK = 1e-6  # float32 round-off of x_adv - x near ±eps


class NonFiniteDelta(MemlossError):
    """A perturbation to quantize held NaN or Inf."""


NONFINITE_MESSAGE = "perturbation contains NaN or Inf; check the attack's step size and the model's loss"


def quantize(delta: torch.Tensor, eps: float | None = None, norm: str = "Linf",
             nonfinite: torch.Tensor | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """Quantizes perturbations to uint8 codes.

    delta: float [B, ...] (any device). With `eps`, rejects a sample outside the ball of radius eps·(1+1e-6) in
    `norm` ("Linf": any |δ| > bound; "L2": ‖δ_i‖₂ > bound). Returns codes uint8 [B, ...] in [1, 255] and scale
    float32 [B] (= max|δ_i|), both on delta's device.

    NaN/Inf: without `nonfinite` raises MemlossError (this check syncs once with the device). With `nonfinite` (a
    bool scalar tensor on delta's device, the caller's flag) nothing waits for the device: the flag is OR-ed with
    "some value is NaN/Inf" in place, and the rows holding one get codes 128 and scale 0 (δ = 0, a valid row the
    store accepts); the caller reads the flag later (at a flush, at the end of the epoch) and raises
    `NonFiniteDelta` before anything made from those rows is committed. That keeps the per-step host sync off the
    training step."""
    if not delta.is_floating_point() or delta.dim() < 1:
        raise MemlossError(f"quantize expects a float tensor [B, ...], got {delta.dtype} of shape {tuple(delta.shape)}")
    flat = delta.detach().reshape(delta.shape[0], -1).float()
    # amax propagates NaN and keeps Inf, so a row's scale is finite exactly when all its values are.
    scale = flat.abs().amax(dim=1) if flat.shape[1] else flat.new_zeros(flat.shape[0])
    finite = torch.isfinite(scale)
    if nonfinite is None:
        if not bool(finite.all()):
            raise NonFiniteDelta(NONFINITE_MESSAGE)
    else:
        nonfinite |= ~finite.all()
        scale = torch.where(finite, scale, torch.zeros_like(scale))
    if eps is not None:
        _check_radius(flat, scale, eps, norm)
    safe = torch.where(scale > 0, scale, torch.ones_like(scale))
    codes = torch.round(flat * (LEVELS / safe)[:, None]).clamp_(-LEVELS, LEVELS) + ZERO_CODE
    if nonfinite is not None:
        codes = torch.where(finite[:, None], codes, torch.full_like(codes, ZERO_CODE))
    return codes.to(torch.uint8).reshape(delta.shape), scale


def check_finite(nonfinite: torch.Tensor) -> None:
    """Raises `NonFiniteDelta` when a deferred check of `quantize(..., nonfinite=flag)` tripped (one host sync)."""
    if bool(nonfinite):
        raise NonFiniteDelta(NONFINITE_MESSAGE)


def _check_radius(flat: torch.Tensor, scale: torch.Tensor, eps: float, norm: str) -> None:
    bound = float(eps) * (1 + EPS_SLACK)
    if norm == "Linf":
        size = scale
    elif norm == "L2":
        size = flat.norm(dim=1)
    else:
        raise MemlossError(f"norm {norm!r} is not supported; use 'Linf' or 'L2'")
    worst = float(size.max()) if size.numel() else 0.0
    if worst > bound:
        raise MemlossError(f"perturbation of {norm} size {worst:.6g} exceeds eps={float(eps):.6g}; project it first")


def dequantize(codes: torch.Tensor, scale: torch.Tensor) -> torch.Tensor:
    """Inverse of `quantize`: codes uint8 [..., B, ...] and scale float32 [..., B] (the leading dims of codes) give
    float32 δ of the codes' shape, on the codes' device. (c−128)/127 is computed before multiplying by s so that
    codes 128, 1 and 255 give exactly 0, −s and +s."""
    lead = scale.dim()
    unit = (codes.to(torch.float32) - ZERO_CODE) / LEVELS
    return unit * scale.to(torch.float32).reshape(*scale.shape, *([1] * (codes.dim() - lead)))
