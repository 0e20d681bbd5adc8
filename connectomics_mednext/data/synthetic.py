"""A small synthetic EM-like volume with labels, for the quick start and tests.

Cells are Voronoi regions of random seeds separated by dark membranes; mitochondria are
darker ellipsoids inside cells; the image gets texture, blur and noise. Labels hold a cell id
per interior voxel and 0 on membranes, like FlyEM's gala volumes, and a mitochondria mask.
"""

import argparse
import os
from typing import Dict, Sequence

import numpy as np

from ..io import write_volume


def _smooth(volume: np.ndarray, passes: int) -> np.ndarray:
    # Repeated 3-tap box filtering along each axis approximates a Gaussian blur.
    for _ in range(passes):
        for axis in range(volume.ndim):
            volume = (np.roll(volume, 1, axis) + volume + np.roll(volume, -1, axis)) / 3.0
    return volume


def make_em_volume(
    shape: Sequence[int] = (64, 128, 128), cells: int = 40, mitochondria: int = 25, membrane: float = 1.5, seed: int = 0
) -> Dict[str, np.ndarray]:
    """Generate ``image`` (uint8), ``label`` (uint16 cell ids, 0 on membranes) and ``mito`` (uint8).

    Args:
        shape: (z, y, x) size.
        cells: number of cells.
        mitochondria: number of mitochondria.
        membrane: membrane half-thickness in voxels.
        seed: random seed.
    """
    rng = np.random.default_rng(seed)
    shape = tuple(shape)
    grid = np.stack(np.meshgrid(*[np.arange(n, dtype=np.float32) for n in shape], indexing="ij"), -1)
    centres = rng.random((cells, 3)).astype(np.float32) * np.array(shape, dtype=np.float32)
    nearest = np.full(shape, np.inf, dtype=np.float32)
    second = np.full(shape, np.inf, dtype=np.float32)
    owner = np.zeros(shape, dtype=np.uint16)
    for index, centre in enumerate(centres, start=1):
        distance = np.sqrt(((grid - centre) ** 2).sum(-1))
        closer = distance < nearest
        second = np.where(closer, nearest, np.minimum(second, distance))
        owner = np.where(closer, index, owner).astype(np.uint16)
        nearest = np.where(closer, distance, nearest)
    on_membrane = (second - nearest) < 2 * membrane
    label = np.where(on_membrane, 0, owner).astype(np.uint16)

    mito = np.zeros(shape, dtype=bool)
    for _ in range(mitochondria):
        centre = rng.random(3) * np.array(shape)
        radii = rng.uniform(2.0, 5.0, 3)
        inside = (((grid - centre) / radii) ** 2).sum(-1) < 1.0
        mito |= inside & (label > 0)

    image = np.full(shape, 170.0, dtype=np.float32)
    image += _smooth(rng.normal(0, 25, shape).astype(np.float32), 2)  # cytoplasm texture
    image[mito] -= 70
    image[on_membrane] = 45
    image = _smooth(image, 1) + rng.normal(0, 12, shape)
    return {
        "image": np.clip(image, 0, 255).astype(np.uint8),
        "label": label,
        "mito": mito.astype(np.uint8),
    }


def write_example(folder: str, shape: Sequence[int] = (64, 128, 128), seed: int = 0) -> None:
    """Write ``train_image.h5``, ``train_label.h5``, ``test_image.h5`` and ``test_label.h5`` (dataset ``main``).

    Args:
        folder: destination, created if needed.
        shape: (z, y, x) size of each volume.
        seed: seed of the training volume; the test volume uses ``seed + 1``.
    """
    os.makedirs(folder, exist_ok=True)
    for split, split_seed in (("train", seed), ("test", seed + 1)):
        volume = make_em_volume(shape, seed=split_seed)
        for name in ("image", "label"):
            write_volume(os.path.join(folder, f"{split}_{name}.h5"), volume[name])


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description="Write a synthetic EM-like train/test pair as HDF5.")
    parser.add_argument("folder", help="destination folder")
    parser.add_argument("--shape", type=int, nargs=3, default=[64, 128, 128], metavar=("Z", "Y", "X"))
    parser.add_argument("--seed", type=int, default=0)
    arguments = parser.parse_args()
    write_example(arguments.folder, arguments.shape, arguments.seed)
    print(f"Wrote train/test image and label volumes to {arguments.folder}")
