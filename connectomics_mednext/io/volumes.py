"""Lazy (z, y, x) volumes named as in PyTC: ``DATASET.INPUT_PATH`` + names joined with '@'.

HDF5 files give an ``h5py.Dataset``, TIFF stacks a :class:`~.tiff.TiffVolume`, chunked stores
(zarr, N5, precomputed) a :class:`~.chunked.ChunkedVolume`. All have ``shape`` and ``dtype`` and
read only the box they are indexed with; nothing outside :mod:`connectomics_mednext.io` needs
to know which format a volume came from.
"""

import os
from typing import Any, Iterator, List, Optional, Sequence, Tuple

import h5py
import numpy as np

from ..errors import ConfigError, InputError, MissingDatasetError, MissingFileError, argument
from .chunked import ChunkedVolume, is_chunked_name, open_chunked, split_container
from .hdf5 import open_hdf5, open_hdf5_volume, split_hdf5_name
from .tiff import TIFF_SUFFIXES, TiffVolume
from .zarr_prediction import is_complete_prediction

# Voxels read at a time when a whole volume is scanned (for NaNs or its value range).
SCAN_VOXELS = 1 << 24


def split_names(names: Optional[str], input_path: str, key: str) -> List[str]:
    """File paths of a PyTC name field (``'a.h5@b.h5'``) under ``input_path``.

    Args:
        names: the config value.
        input_path: ``DATASET.INPUT_PATH``.
        key: the config key, for error messages.
    """
    if not names:
        raise ConfigError(
            f"{key} is not set; give one or more volumes (HDF5, TIFF, <name>.zarr/<array>, "
            "<name>.n5/<array>) joined with '@'."
        )
    if any(not name for name in names.split("@")):
        raise ConfigError(f"{key} {names!r} has an empty name between or after its '@'s; join file names with '@'.")
    paths = [os.path.join(input_path, name) for name in names.split("@")]
    for path in paths:
        chunked = split_container(path)
        if chunked is not None and not os.path.isdir(chunked[0]):
            raise MissingFileError(f"{key}: container {chunked[0]!r} does not exist.")
        if chunked is None and not is_chunked_name(path) and not os.path.isfile(path) and not split_hdf5_name(path):
            raise MissingFileError(f"{key}: file {path!r} does not exist.")
    return paths


def open_volume(path: str, dataset: Optional[str] = None):
    """Open a (z, y, x) volume without reading it.

    Args:
        path: an HDF5 file, a TIFF stack (``.tif``, ``.tiff``), ``<container>.zarr/<array>``,
            ``<container>.n5/<array>`` or a Neuroglancer precomputed folder.
        dataset: HDF5 dataset name; ``None`` takes the only dataset (or ``main``).
    """
    if path.lower().endswith(TIFF_SUFFIXES):
        volume = TiffVolume(path)
    elif is_chunked_name(path):
        volume = open_chunked(path)
    else:
        volume = open_hdf5_volume(path, dataset)
    if np.dtype(volume.dtype).fields is not None:
        raise InputError(
            f"{path!r} holds a compound dtype {np.dtype(volume.dtype)}; expected a plain numeric (z, y, x) volume "
            "(save one field of it on its own)."
        )
    if 0 in tuple(volume.shape):
        raise InputError(f"{path!r} is empty (shape {tuple(volume.shape)}); expected a (z, y, x) volume.")
    return volume


def volume_name(volume) -> str:
    """The file a volume from :func:`open_volume` (or a padded view of one) comes from, for messages."""
    if isinstance(volume, h5py.Dataset):
        return volume.file.filename
    if isinstance(volume, ChunkedVolume):
        return volume.name
    return volume.name if isinstance(getattr(volume, "name", None), str) else "the input array"


def _slabs(volume) -> Iterator[Tuple[int, np.ndarray]]:
    """(first plane, planes) of a lazy volume, a bounded number of voxels at a time."""
    planes = max(1, SCAN_VOXELS // max(1, int(np.prod(volume.shape[1:]))))
    for z in range(0, volume.shape[0], planes):
        yield z, np.asarray(volume[slice(z, min(z + planes, volume.shape[0])), slice(None), slice(None)])


def check_finite(volume, key: str) -> None:
    """Raise naming the file and the first bad voxel when a floating-point volume holds NaN or infinity.

    Args:
        volume: a lazy (z, y, x) volume (labels, masks or images).
        key: its config key, for the message.
    """
    if not np.issubdtype(np.dtype(volume.dtype), np.floating):
        return
    for z, slab in _slabs(volume):
        bad = np.argwhere(~np.isfinite(slab))
        if len(bad):
            position = (int(bad[0][0]) + z, int(bad[0][1]), int(bad[0][2]))
            raise InputError(
                f"{key} {volume_name(volume)!r} holds {slab[tuple(bad[0])]} at (z, y, x) = {position}; "
                "expected finite values."
            )


def value_range(volume) -> Tuple[Any, Any]:
    """The smallest and largest value of a lazy volume, read a bounded slab at a time.

    Args:
        volume: a lazy (z, y, x) volume.
    """
    low, high = None, None
    for _, slab in _slabs(volume):
        low = slab.min() if low is None else min(low, slab.min())
        high = slab.max() if high is None else max(high, slab.max())
    return low, high


def check_labels(volume, key: str) -> None:
    """Refuse labels with NaN, infinity or negative ids, naming the file.

    Args:
        volume: a lazy (z, y, x) label volume.
        key: its config key or argument, for the message.
    """
    check_finite(volume, key)
    if np.issubdtype(np.dtype(volume.dtype), np.unsignedinteger):
        return
    low, _ = value_range(volume)
    if low < 0:
        raise InputError(f"{key} {volume_name(volume)!r} holds the negative id {low}; ids must be 0 or more.")


def check_mask(volume, key: str) -> None:
    """Refuse a valid mask that is 0 everywhere (nothing would be trained on or scored), naming the file.

    Args:
        volume: a lazy (z, y, x) mask.
        key: its config key or argument, for the message.
    """
    check_finite(volume, key)
    if not any(np.any(slab > 0) for _, slab in _slabs(volume)):
        raise InputError(f"{key} {volume_name(volume)!r} is 0 everywhere: no voxel is valid, so nothing would count.")


def check_image_dtype(volume, key: str) -> None:
    """Refuse an image that is not uint8, naming the file, its dtype and its value range.

    PyTC scales every image by 1/255; applied to float data in 0..1 or to uint16 that gives a
    network input far from what it was trained on, silently. Only uint8 has that meaning.

    Args:
        volume: a lazy (z, y, x) image.
        key: its config key, for the message.
    """
    if np.dtype(volume.dtype) == np.uint8:
        return
    check_finite(volume, key)
    low, high = value_range(volume)
    raise InputError(
        f"{key} {volume_name(volume)!r} is {np.dtype(volume.dtype).name} with values {low:g}..{high:g}, "
        "but images must be uint8 (0..255, scaled by 1/255 as PyTC does); convert it, e.g. "
        "np.clip((x - low) / (high - low) * 255, 0, 255).astype(np.uint8)."
    )


def open_prediction(path: str, dataset: str = "vol0"):
    """A prediction in PyTC's layout, (C, Z, Y, X) uint8, opened lazily: an HDF5 file or a ``.zarr`` folder.

    Args:
        path: what either engine wrote (``INFERENCE.OUTPUT_PATH/OUTPUT_NAME``).
        dataset: its dataset or array (``vol0`` for the first input volume).
    """
    if path.rstrip("/").endswith(".partial"):
        raise InputError(
            f"{argument('prediction')} {path!r} is an unfinished prediction: its run was stopped or is still "
            "writing; run the same inference again to complete it, then use the file without '.partial'."
        )
    if split_container(path) is not None and path.rstrip("/").lower().endswith(".zarr"):
        if not os.path.isdir(path):
            raise MissingFileError(f"{argument('prediction')}: folder {path!r} does not exist.")
        if not is_complete_prediction(path):
            raise InputError(
                f"{argument('prediction')} {path!r} has no complete mark: it is not a finished prediction of ours "
                "(an interrupted run leaves '.partial'; run the same inference again to complete it)."
            )
        volume = open_chunked(f"{path.rstrip('/')}/{dataset}", argument("prediction"), ndim=4)
    else:
        if not os.path.isfile(path):
            raise MissingFileError(f"{argument('prediction')}: file {path!r} does not exist.")
        handle = open_hdf5(path, argument("prediction"))
        if dataset not in handle:
            raise MissingDatasetError(
                f"{argument('prediction')} {path!r} has no dataset {dataset!r}; it holds {list(handle)}."
            )
        volume = handle[dataset]
    if volume.ndim != 4 or volume.dtype != np.uint8:
        raise InputError(
            f"{argument('prediction')} {path!r}:{dataset} is {volume.dtype} of shape {volume.shape}; expected PyTC's "
            "(C, Z, Y, X) uint8 layout (probability x 255)."
        )
    return volume


def prediction_voxel_size(volume) -> Optional[Tuple[float, float, float]]:
    """The (z, y, x) voxel size a prediction records (its ``resolution`` attribute, in nm), or None.

    Args:
        volume: a prediction from :func:`open_prediction`.
    """
    attributes = volume.attrs if isinstance(volume, h5py.Dataset) else volume.attributes
    value = attributes.get("resolution")
    if value is None or len(value) != 3:
        return None
    return tuple(float(v) for v in value)


def close_volume(volume) -> None:
    """Close the file behind a volume from this module (chunked stores hold none open).

    Args:
        volume: an opened volume or prediction.
    """
    if isinstance(volume, h5py.Dataset):
        volume.file.close()


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
        raise ConfigError(f"{what} names {len(others)} volumes but the image names {len(images)}.")
    for image, other in zip(images, others):
        if image.shape != other.shape:
            raise InputError(
                f"{what} {volume_name(other)!r} has shape {other.shape} but its image "
                f"{volume_name(image)!r} has {image.shape}."
            )
