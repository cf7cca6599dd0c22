"""A torch.Generator's state in a resume point, and restoring it on whatever device the run resumes on.

A generator's state is device-specific: a CPU generator's is the Mersenne Twister's 5,056 bytes, a CUDA one's the
Philox seed and offset (16 bytes), and each refuses the other's. A resume may change `--device` (the one option it
may change), so the state is saved with the kind of device it came from, and restored exactly when the kinds
agree; across kinds the stream cannot be continued, so the new generator is seeded from a hash of the saved state
(deterministic: resuming the same point twice gives the same draws) and the run says so.
"""

from __future__ import annotations

import hashlib
from typing import Any

import torch

CUDA_STATE_BYTES = 16  # Philox: seed (uint64) and offset (int64)


def generator_state(generator: torch.Generator) -> dict[str, Any]:
    """The resume point's fields of `generator`: its state (uint8 tensor) and the kind of device it belongs to."""
    return {"generator": generator.get_state(), "generator_device": generator.device.type}


def saved_kind(state: dict[str, Any]) -> str:
    """'cpu' or 'cuda': the kind of device a saved generator state came from (run directories written before the
    kind was saved: told by the state's size)."""
    kind = state.get("generator_device")
    if isinstance(kind, str):
        return kind
    return "cuda" if state["generator"].numel() == CUDA_STATE_BYTES else "cpu"


def derived_seed(saved: torch.Tensor) -> int:
    """A 63-bit seed determined by a saved state's bytes."""
    digest = hashlib.sha256(saved.detach().cpu().contiguous().numpy().tobytes()).digest()
    return int.from_bytes(digest[:8], "little") & (2**63 - 1)


def restore_generator(generator: torch.Generator, state: dict[str, Any]) -> str | None:
    """Loads the saved generator fields of `state` (see `generator_state`) into `generator`: exactly when the device
    kinds agree (None), else re-derived from the saved state; then returns a note for the user."""
    saved, kind = state["generator"], saved_kind(state)
    if kind == generator.device.type:
        generator.set_state(saved)
        return None
    generator.manual_seed(derived_seed(saved))
    return (f"the random stream of augmentation and attack starts was saved on {kind} and this resume runs on "
            f"{generator.device.type}: it continues from a seed derived from the saved state (the run is not "
            "bit-identical to an uninterrupted one)")
