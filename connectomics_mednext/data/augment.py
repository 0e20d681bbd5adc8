"""Seeded training augmentation in numpy: geometry, intensity and EM artefacts.

Geometric transforms (flips, 90-degree xy rotations, z transposes on isotropic data, section
misalignment) move image, label and mask together; intensity changes and the other artefacts
(missing sections, motion blur) touch the image only. Each runs with its probability.
"""
from typing import Callable, Dict, List, Optional, Tuple

import numpy as np

Arrays = List[Optional[np.ndarray]]  # [image (float in [0, 1]), label, mask]


def _geometric(arrays: Arrays, fn: Callable[[np.ndarray], np.ndarray]) -> Arrays:
    return [None if a is None else np.ascontiguousarray(fn(a)) for a in arrays]


def flip(rng: np.random.Generator, arrays: Arrays, isotropic: bool) -> Arrays:
    axes = tuple(axis for axis in range(3) if rng.random() < 0.5)
    return _geometric(arrays, lambda a: np.flip(a, axes)) if axes else arrays


def rotate_xy(rng: np.random.Generator, arrays: Arrays, isotropic: bool) -> Arrays:
    image = arrays[0]
    turns = int(rng.integers(0, 4)) if image.shape[1] == image.shape[2] else 0
    return _geometric(arrays, lambda a: np.rot90(a, turns, axes=(1, 2))) if turns else arrays


def transpose_z(rng: np.random.Generator, arrays: Arrays, isotropic: bool) -> Arrays:
    # z may only trade places with y on isotropic data with a cubic-enough crop.
    if not isotropic or arrays[0].shape[0] != arrays[0].shape[1] or rng.random() >= 0.5:
        return arrays
    return _geometric(arrays, lambda a: np.swapaxes(a, 0, 1))


def intensity(rng: np.random.Generator, arrays: Arrays, isotropic: bool) -> Arrays:
    image = arrays[0] * rng.uniform(0.9, 1.1) + rng.uniform(-0.1, 0.1)  # contrast, brightness
    image = np.clip(image, 0.0, 1.0) ** rng.uniform(0.7, 1.5)  # gamma
    return [image.astype(np.float32)] + arrays[1:]


def missing_section(rng: np.random.Generator, arrays: Arrays, isotropic: bool) -> Arrays:
    image = arrays[0].copy()
    image[int(rng.integers(0, image.shape[0]))] = image.mean()
    return [image] + arrays[1:]


def misalignment(rng: np.random.Generator, arrays: Arrays, isotropic: bool) -> Arrays:
    depth = arrays[0].shape[0]
    if depth < 2:
        return arrays
    cut = int(rng.integers(1, depth))
    shift = tuple(int(s) for s in rng.integers(-4, 5, 2))

    def shifted(a: np.ndarray) -> np.ndarray:
        out = a.copy()
        out[cut:] = np.roll(a[cut:], shift, axis=(1, 2))
        return out

    return _geometric(arrays, shifted)


def motion_blur(rng: np.random.Generator, arrays: Arrays, isotropic: bool) -> Arrays:
    image = arrays[0].copy()
    z = int(rng.integers(0, image.shape[0]))
    axis = int(rng.integers(1, 3))
    section = image[z]
    blurred = sum(np.roll(section, offset, axis=axis - 1) for offset in range(-2, 3)) / 5.0
    image[z] = blurred
    return [image] + arrays[1:]


# name -> (transform, probability); order matters: geometry first, then intensity, then artefacts.
AUGMENTATIONS: Dict[str, Tuple[Callable[..., Arrays], float]] = {
    "flip": (flip, 1.0),
    "rotate_xy": (rotate_xy, 1.0),
    "transpose_z": (transpose_z, 1.0),
    "misalignment": (misalignment, 0.1),
    "intensity": (intensity, 0.5),
    "missing_section": (missing_section, 0.1),
    "motion_blur": (motion_blur, 0.1),
}


def augment(rng: np.random.Generator, image: np.ndarray, label: np.ndarray, mask: Optional[np.ndarray],
            isotropic: bool) -> Arrays:
    """Apply every augmentation of ``AUGMENTATIONS`` with its probability.

    Args:
        rng: the seeded generator (its state is checkpointed, so resumed runs continue it).
        image: float image in [0, 1], (z, y, x).
        label: labels, same shape.
        mask: valid mask or None.
        isotropic: allow z transposes.
    """
    arrays: Arrays = [image, label, mask]
    for transform, probability in AUGMENTATIONS.values():
        if probability >= 1.0 or rng.random() < probability:
            arrays = transform(rng, arrays, isotropic)
    return arrays
