"""Lazy volumes named as in PyTC: ``DATASET.INPUT_PATH`` + names joined with '@'.

HDF5 files give an ``h5py.Dataset``; TIFF stacks a :class:`~.tiff.TiffVolume`. Both have
``shape`` and ``dtype`` and read only the box they are indexed with.
"""
import os
from typing import List, Optional, Sequence

import h5py
import numpy as np

from .tiff import TIFF_SUFFIXES, TiffVolume


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


def open_volume(path: str, dataset: Optional[str] = None):
    """Open a (z, y, x) volume without reading it: a TIFF stack, or a dataset of an HDF5 file.

    Args:
        path: HDF5 or TIFF (``.tif``, ``.tiff``) file.
        dataset: HDF5 dataset name; ``None`` takes the only dataset (or ``main``).
    """
    if path.lower().endswith(TIFF_SUFFIXES):
        return TiffVolume(path)
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


def volume_name(volume) -> str:
    """The file a volume from :func:`open_volume` (or a padded view of one) comes from, for messages."""
    if isinstance(volume, h5py.Dataset):
        return volume.file.filename
    return volume.name if isinstance(getattr(volume, "name", None), str) else "the input array"


def read_whole(volume) -> np.ndarray:
    """All of a lazy volume, as an array."""
    return np.asarray(volume[(slice(None),) * 3])


def check_same_shape(images: Sequence, others: Sequence, what: str) -> None:
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
                f"{what} {volume_name(other)!r} has shape {other.shape} but its image "
                f"{volume_name(image)!r} has {image.shape}."
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
