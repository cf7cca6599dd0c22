"""The 2-D two-class data set of the toy problem (MemLoss paper §3.3, figures 2-3).

The paper only says "a 2D binary classification problem" with blue (class 0) and green (class 1) points; it gives
no generator. We use two interleaved moons (scikit-learn's `make_moons`) because their curved, interleaved boundary
is the smallest setting where a two-layer MLP's boundary has room to bend towards each epoch's adversarial examples
(a linearly separable set would give a nearly fixed boundary and no forgetting to look at).

The project's PGD clamps inputs to [0, 1], so the moons are mapped into the unit square: x1 from [-1, 2] and x2
from [-0.5, 1] (the noise-free extent) are scaled *separately* onto [MARGIN, 1 - MARGIN]. The separate scaling keeps
the vertical gap between the middles of the moons at 0.27, wider than the Linf attack's reach of 2·eps = 0.2
between two points of different classes; only near the tips of the moons does the Linf gap shrink to 0.16. So
eps = 0.1 is a large part of the gap (the attack matters) while a robust boundary exists for most of the
noise-free moons (as with real data, a few points cannot be made robust). Gaussian noise (in moon units, before
scaling) blurs the classes; the few noisy points that leave the square are clipped to it.
"""

from dataclasses import dataclass

import numpy as np
import torch

# Distance of the noise-free moons from the edges of the unit square.
MARGIN = 0.1
# Noise-free extent of sklearn's moons, per coordinate: x1 in [-1, 2], x2 in [-0.5, 1].
_MOONS_LOW = np.array([-1.0, -0.5])
_MOONS_HIGH = np.array([2.0, 1.0])


@dataclass(frozen=True)
class ToyData:
    """A labelled 2-D point set.

    x: float32 [N, 2] in [0, 1]²; y: int64 [N] in {0, 1} (0 = blue, 1 = green), on the CPU.
    """

    x: torch.Tensor
    y: torch.Tensor


def to_unit_square(points: np.ndarray) -> np.ndarray:
    """Map moons coordinates [N, 2] (float) into [0, 1]², the noise-free moons landing in [MARGIN, 1 - MARGIN]²."""
    scaled = MARGIN + (1.0 - 2.0 * MARGIN) * (points - _MOONS_LOW) / (_MOONS_HIGH - _MOONS_LOW)
    return np.clip(scaled, 0.0, 1.0)


def make_toy_data(n: int, noise: float, seed: int) -> ToyData:
    """Draw n two-moons points (balanced classes, Gaussian noise of std `noise` in moon units) in [0, 1]².

    Deterministic in (n, noise, seed).
    """
    from sklearn.datasets import make_moons  # lazy: sklearn is only needed by the toy

    points, labels = make_moons(n_samples=n, noise=noise, random_state=seed)
    x = torch.from_numpy(to_unit_square(points)).to(torch.float32)
    return ToyData(x=x, y=torch.from_numpy(labels).to(torch.int64))
