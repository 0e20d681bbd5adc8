"""Lazy HDF5 volumes named as in PyTC: ``DATASET.INPUT_PATH`` + names joined with '@'."""
import os
from typing import List, Optional, Sequence

import h5py
import numpy as np


def split_names(names: Optional[str], input_path: str, key: str) -> List[str]:
    """File paths of a PyTC name field (``'a.h5@b.h5'``) under ``input_path``.

    Args:
        names: the config value.
        input_path: ``DATASET.INPUT_PATH``.
        key: the config key, for error messages.
    """
    if not names:
        raise ValueError(f"{key} is not set; give one or more HDF5 files joined with '@'.")
    paths = [os.path.join(input_path, name) for name in names.split("@")]
    missing = [p for p in paths if not os.path.isfile(p)]
    if missing:
        raise FileNotFoundError(f"{key}: file {missing[0]!r} does not exist.")
    return paths


def open_volume(path: str, dataset: Optional[str] = None) -> h5py.Dataset:
    """Open a 3D dataset of an HDF5 file without reading it: ``dataset``, or the file's only one.

    Args:
        path: HDF5 file.
        dataset: dataset name; ``None`` takes the only dataset (or ``main``).
    """
    handle = h5py.File(path, "r")
    names = [k for k in handle.keys() if isinstance(handle[k], h5py.Dataset)]
    if dataset is None:
        dataset = "main" if "main" in names else (names[0] if len(names) == 1 else None)
        if dataset is None:
            raise KeyError(f"{path!r} holds datasets {names}; expected one, or one named 'main'.")
    if dataset not in handle:
        raise KeyError(f"{path!r} has no dataset {dataset!r}; it holds {names}.")
    volume = handle[dataset]
    if volume.ndim != 3:
        raise ValueError(f"{path!r}:{dataset} has shape {volume.shape}; expected a (z, y, x) volume.")
    return volume


def check_same_shape(images: Sequence[h5py.Dataset], others: Sequence[h5py.Dataset], what: str) -> None:
    """Raise if ``others`` do not pair one-to-one with ``images`` in shape.

    Args:
        images: image volumes.
        others: label or mask volumes.
        what: their config key, for the message.
    """
    if len(images) != len(others):
        raise ValueError(f"{what} names {len(others)} volumes but the image names {len(images)}.")
    for image, other in zip(images, others):
        if image.shape != other.shape:
            raise ValueError(
                f"{what} {other.file.filename!r} has shape {other.shape} but its image "
                f"{image.file.filename!r} has {image.shape}."
            )


def to_unit_range(crop: np.ndarray) -> np.ndarray:
    """uint8 intensities as float32 in [0, 1]."""
    return crop.astype(np.float32) / 255.0


def standardise(image: np.ndarray) -> np.ndarray:
    """PyTC's normalisation of a [0, 1] image: mean and std 0.5."""
    return ((image - 0.5) / 0.5).astype(np.float32)


def normalise_image(crop: np.ndarray) -> np.ndarray:
    """PyTC's input normalisation of uint8 data: / 255, then mean and std 0.5, as float32."""
    return standardise(to_unit_range(crop))
