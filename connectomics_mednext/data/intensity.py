"""PyTC's intensity normalisation of uint8 crops."""

import numpy as np


def to_unit_range(crop: np.ndarray) -> np.ndarray:
    """uint8 intensities as float32 in [0, 1]."""
    return crop.astype(np.float32) / 255.0


def standardise(image: np.ndarray) -> np.ndarray:
    """PyTC's normalisation of a [0, 1] image: mean and std 0.5."""
    return ((image - 0.5) / 0.5).astype(np.float32)


def normalise_image(crop: np.ndarray) -> np.ndarray:
    """PyTC's input normalisation of uint8 data: / 255, then mean and std 0.5, as float32."""
    return standardise(to_unit_range(crop))
