"""Chunked stores read through tensorstore: zarr (v2 and v3), N5 and Neuroglancer precomputed.

A dataset inside a container is named as funlib and daisy name it,
``<container>.zarr/<path inside>`` (``.n5`` likewise); a precomputed volume by its folder (the
one holding ``info``). tensorstore reads all of these with one API and reads only the chunks a
box touches. It is the optional ``zarr`` extra.

Axis order: zarr arrays are read as they are stored, (z, y, x). N5 lists dimensions x first (the
Java convention) and precomputed is (x, y, z, channel), so both are read reversed, as zarr's N5
store and funlib do, and give (z, y, x).
"""

import os
from typing import Any, Dict, List, Optional, Sequence, Tuple

import numpy as np

from ..errors import InputError, MissingDatasetError, MissingFileError, import_extra
from .json_files import read_json

CONTAINER_SUFFIXES = (".zarr", ".n5")
EXTRA_HINT = "pip install 'connectomics-mednext[zarr]' (or pip install tensorstore)"


def import_tensorstore():
    """The tensorstore module, or a :class:`MissingExtraError` naming the extra."""
    return import_extra("tensorstore", f"Chunked volumes (zarr, N5, precomputed) need tensorstore: {EXTRA_HINT}.")


def split_container(name: str) -> Optional[Tuple[str, str]]:
    """(container, path inside) of ``a/b.zarr/raw/s0``, or None when no path component is a container.

    Args:
        name: a volume name.
    """
    parts = os.path.normpath(name).split(os.sep)
    for index, part in enumerate(parts):
        if part.lower().endswith(CONTAINER_SUFFIXES):
            container = os.sep.join(parts[: index + 1]) or os.sep
            return container, "/".join(parts[index + 1 :])
    return None


def is_precomputed(name: str) -> bool:
    """Whether ``name`` is a Neuroglancer precomputed volume: a folder with an ``info`` file.

    Args:
        name: a volume name.
    """
    return os.path.isfile(os.path.join(name, "info"))


def is_chunked_name(name: str) -> bool:
    """Whether ``name`` names a chunked store (a container path or a precomputed folder).

    Args:
        name: a volume name.
    """
    return split_container(name) is not None or is_precomputed(name)


def _zarr_node(folder: str) -> Optional[str]:
    """'array-v2', 'array-v3', 'group' or None (nothing there) for a folder of a zarr container."""
    if os.path.isfile(os.path.join(folder, ".zarray")):
        return "array-v2"
    if os.path.isfile(os.path.join(folder, ".zgroup")):
        return "group"
    metadata = os.path.join(folder, "zarr.json")
    if os.path.isfile(metadata):
        return "array-v3" if read_json(metadata).get("node_type") == "array" else "group"
    # A folder without metadata is an implicit group (as tensorstore leaves intermediate ones).
    return "group" if os.path.isdir(folder) else None


def _n5_node(folder: str) -> Optional[str]:
    attributes = os.path.join(folder, "attributes.json")
    if os.path.isfile(attributes) and "dimensions" in read_json(attributes):
        return "array-n5"
    return "group" if os.path.isdir(folder) else None


def _arrays_in(container: str, node_of) -> List[str]:
    """Paths of the arrays below ``container``, for messages."""
    found = []
    for root, folders, _ in os.walk(container):
        folders[:] = sorted(f for f in folders if not f.startswith("."))
        if root != container and (node_of(root) or "").startswith("array"):
            found.append(os.path.relpath(root, container).replace(os.sep, "/"))
            folders[:] = []  # chunks live below an array
    return found


# Container suffix -> how its folders say what they are, and the tensorstore driver per node kind.
NODE_KINDS = {".zarr": _zarr_node, ".n5": _n5_node}
DRIVERS = {"array-v2": "zarr", "array-v3": "zarr3", "array-n5": "n5"}
# Stored axis order reversed to give (z, y, x).
REVERSED = {"array-n5"}


class ChunkedVolume:
    """A lazy (z, y, x) view of a chunked dataset: indexing reads only the chunks the box touches.

    Args:
        store: the opened tensorstore, already in (z, y, x) order.
        name: the volume's name, for messages.
        attributes: the dataset's JSON attributes (``resolution`` gives the voxel size).
    """

    def __init__(self, store, name: str, attributes: Dict[str, Any], metadata_file: str) -> None:
        self._store = store
        self.name = name
        self.attributes = attributes
        self.metadata_file = metadata_file
        self.shape = tuple(int(n) for n in store.shape)
        self.dtype = np.dtype(store.dtype.numpy_dtype)
        self.ndim = len(self.shape)

    def __getitem__(self, index) -> np.ndarray:
        return np.asarray(self._store[index].read().result())

    def identity(self) -> Dict[str, Any]:
        """What the resume key records of this input: its name, and the count, bytes and newest mtime of its files.

        Listing the store catches a chunk written, added or removed in place (its metadata file
        stays the same), at the cost of one ``stat`` per chunk file, without reading a voxel:
        hashing the content would cost as much as predicting it. Only a rewrite that keeps every
        file's size and restores its old modification time (``cp -p``, ``rsync -t`` of equal-size
        chunks) goes unnoticed.
        """
        files = size = newest = 0
        for root, _, names in os.walk(os.path.dirname(self.metadata_file)):
            for name in names:
                stat = os.stat(os.path.join(root, name))
                files, size, newest = files + 1, size + stat.st_size, max(newest, stat.st_mtime_ns)
        return {"store": os.path.abspath(self.name), "files": files, "bytes": size, "newest_mtime_ns": newest}

    @property
    def voxel_size(self) -> Optional[Tuple[float, ...]]:
        """(z, y, x) voxel size from funlib's ``resolution`` (or ``voxel_size``) attribute, if any."""
        for key in ("resolution", "voxel_size"):
            value = self.attributes.get(key)
            if isinstance(value, list) and len(value) == self.ndim:
                return tuple(float(v) for v in value)
        return None


def _kvstore(path: str) -> Dict[str, str]:
    return {"driver": "file", "path": os.path.abspath(path) + "/"}


def open_chunked(name: str, key: str = "", ndim: int = 3) -> ChunkedVolume:
    """Open a chunked dataset for lazy reading.

    Args:
        name: ``<container>.zarr/<path>``, ``<container>.n5/<path>``, or a precomputed folder.
        key: the config key or flag that named it, for messages.
        ndim: the axes expected: 3 for a (z, y, x) volume, 4 for a (C, Z, Y, X) prediction.
    """
    where = f"{key}: " if key else ""
    if is_precomputed(name):
        return _open_precomputed(name, where)
    container, inside = split_container(name)
    suffix = os.path.splitext(container)[1].lower()
    if not os.path.isdir(container):
        raise MissingFileError(f"{where}container {container!r} does not exist.")
    node_of = NODE_KINDS[suffix]
    folder = os.path.join(container, *inside.split("/")) if inside else container
    kind = node_of(folder) if os.path.isdir(folder) else None
    if kind == "group":
        arrays = _arrays_in(folder, node_of)
        if len(arrays) == 1 or "main" in arrays:
            choice = "main" if "main" in arrays else arrays[0]
            return open_chunked(f"{container}/{inside + '/' if inside else ''}{choice}", key, ndim)
        raise MissingDatasetError(
            f"{where}{name!r} is a group holding arrays {arrays}; name one, e.g. "
            f"{container}/{(inside + '/' if inside else '') + (arrays[0] if arrays else 'raw')}."
        )
    if kind is None:
        raise MissingDatasetError(
            f"{where}{container!r} has no array {inside!r}; it holds {_arrays_in(container, node_of)}."
        )
    tensorstore = import_tensorstore()
    spec = {"driver": DRIVERS[kind], "kvstore": _kvstore(folder)}
    try:
        store = tensorstore.open(spec, read=True).result()
    except ValueError as error:
        raise InputError(f"{where}{name!r} cannot be read as {DRIVERS[kind]} ({error}).") from error
    if kind in REVERSED:
        store = store.T
    return _as_volume(store, name, _attributes(folder, kind), os.path.join(folder, METADATA_FILES[kind]), where, ndim)


# The file holding each kind's shape and dtype, and the one holding its attributes.
METADATA_FILES = {"array-v2": ".zarray", "array-v3": "zarr.json", "array-n5": "attributes.json"}
ATTRIBUTE_FILES = {"array-v2": ".zattrs", "array-v3": "zarr.json", "array-n5": "attributes.json"}


def _attributes(folder: str, kind: str) -> Dict[str, Any]:
    path = os.path.join(folder, ATTRIBUTE_FILES[kind])
    if not os.path.isfile(path):
        return {}
    data = read_json(path)
    return data.get("attributes", {}) if kind == "array-v3" else data


def _open_precomputed(name: str, where: str) -> ChunkedVolume:
    tensorstore = import_tensorstore()
    try:
        store = tensorstore.open({"driver": "neuroglancer_precomputed", "kvstore": _kvstore(name)}, read=True).result()
    except ValueError as error:
        raise InputError(f"{where}{name!r} cannot be read as a Neuroglancer precomputed volume ({error}).") from error
    if store.shape[-1] != 1:
        raise InputError(f"{where}{name!r} has {store.shape[-1]} channels; expected a one-channel volume.")
    store = store[..., 0].T  # (x, y, z, channel) -> (z, y, x)
    info = read_json(os.path.join(name, "info"))
    resolution = info["scales"][0].get("resolution")
    attributes = {"resolution": list(reversed(resolution))} if resolution else {}
    return _as_volume(store, name, attributes, os.path.join(name, "info"), where)


def _as_volume(
    store, name: str, attributes: Dict[str, Any], metadata_file: str, where: str, ndim: int = 3
) -> ChunkedVolume:
    volume = ChunkedVolume(store, name, attributes, metadata_file)
    if volume.ndim != ndim:
        expected = "a (z, y, x) volume" if ndim == 3 else "a (C, Z, Y, X) prediction"
        raise InputError(f"{where}{name!r} has shape {volume.shape}; expected {expected}.")
    return volume


def open_zarr_array(folder: str):
    """An existing zarr (v2) array, opened for reading and writing.

    Args:
        folder: the array's folder.
    """
    return import_tensorstore().open({"driver": "zarr", "kvstore": _kvstore(folder)}).result()


def create_zarr_array(folder: str, shape: Sequence[int], dtype: np.dtype, chunks: Sequence[int]):
    """Create, or reopen when it already has this shape and dtype, a zarr (v2) array for writing.

    Args:
        folder: the array's folder inside its container.
        shape: its shape.
        dtype: its dtype.
        chunks: its chunk shape.

    Raises:
        InputError: an array of another shape or dtype is already there, or the store cannot be written.
    """
    tensorstore = import_tensorstore()
    dtype = np.dtype(dtype)
    if os.path.isfile(os.path.join(folder, ".zarray")):
        existing = read_json(os.path.join(folder, ".zarray"))
        if list(existing["shape"]) != list(shape) or np.dtype(existing["dtype"]) != dtype:
            raise InputError(
                f"{folder!r} already holds a {np.dtype(existing['dtype']).name} array of shape "
                f"{tuple(existing['shape'])}; expected {dtype.name} of shape {tuple(shape)}. Remove it "
                "or choose another output name."
            )
        return tensorstore.open({"driver": "zarr", "kvstore": _kvstore(folder)}, write=True).result()
    metadata = {
        "shape": list(shape),
        "chunks": list(chunks),
        "dtype": dtype.str,
        "compressor": {"id": "blosc", "cname": "zstd", "clevel": 3, "shuffle": 1},
    }
    try:
        os.makedirs(folder, exist_ok=True)
        return tensorstore.open(
            {"driver": "zarr", "kvstore": _kvstore(folder), "metadata": metadata}, create=True, write=True
        ).result()
    except (OSError, ValueError) as error:
        raise InputError(f"{folder!r} cannot be written ({error}).") from error
