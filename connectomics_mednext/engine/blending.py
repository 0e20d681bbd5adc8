"""Window blending weights for the sliding window."""

from typing import Callable, Dict, Sequence

import numpy as np


def gaussian_weights(size: Sequence[int]) -> np.ndarray:
    """Separable Gaussian with sigma = size / 8 per axis (nnU-Net's), peak 1, floor 1e-3."""
    axes = []
    for n in size:
        coords = np.arange(n, dtype=np.float64) - (n - 1) / 2.0
        axes.append(np.exp(-0.5 * (coords / (n / 8.0)) ** 2))
    weights = np.einsum("i,j,k->ijk", *axes)
    return np.maximum(weights / weights.max(), 1e-3).astype(np.float32)


def bump_weights(size: Sequence[int]) -> np.ndarray:
    """PyTC's 'bump': a smooth function that is 1 at the centre and falls to ~0 at the edges."""
    axes = []
    for n in size:
        t = (np.arange(n, dtype=np.float64) + 0.5) / n * 2.0 - 1.0  # in (-1, 1)
        axes.append(np.exp(1.0 - 1.0 / np.maximum(1.0 - t**2, 1e-6)))
    weights = np.einsum("i,j,k->ijk", *axes)
    return np.maximum(weights / weights.max(), 1e-3).astype(np.float32)


BLENDINGS: Dict[str, Callable[[Sequence[int]], np.ndarray]] = {"gaussian": gaussian_weights, "bump": bump_weights}
