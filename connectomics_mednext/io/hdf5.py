"""HDF5: volumes read lazily (``file.h5``, or ``file.h5/group/dataset``), files written whole, and predictions.

Every HDF5 file the package writes is written here. Labels and volumes are written as
``<name>.partial`` and renamed when complete (:func:`written_hdf5`). A prediction is dataset
``vol<i>`` of (C, Z, Y, X) uint8 per input volume, written to ``<output>.partial``
(``<output>.rank<r>.partial`` per rank when ranks share the work). Each dataset stores its
resume key and, per output block, the first plane not yet written (``done_z``), fsynced after
the planes it counts, so a rerun with the same key continues where a kill left it. Rank 0 joins
the ranks' files; the output gets its final name only when complete. A file whose writes failed
(a full disk) is abandoned (:func:`abandon`), never left for HDF5 to retry.
"""

import glob
import json
import os
import re
from contextlib import contextmanager
from typing import Any, Callable, Dict, Iterator, List, Optional, Sequence, Tuple

import h5py
import numpy as np

from ..errors import InputError, MissingDatasetError, UserError, WriteError, argument, failure_reason
from ..geometry import Box
from ..log import get_logger
from .prediction_output import OUTPUT_DTYPE, BlockWriter, Plans, PredictionOutput, stale_volumes
from .resume import as_stored, changed_fields, restart_line

logger = get_logger(__name__)

# Planes copied at a time when rank 0 joins the ranks' files.
MERGE_PLANES = 16


def open_hdf5(path: str, name: str = "") -> h5py.File:
    """An HDF5 file opened for reading, or one sentence saying it is not one.

    Args:
        path: the file.
        name: the flag or key that named it, put before the path in the message.
    """
    try:
        return h5py.File(path, "r")
    except OSError as error:
        prefix = f"{name} " if name else ""
        raise InputError(f"{prefix}{path!r} is not a readable HDF5 file ({str(error).splitlines()[0]}).") from error


HDF5_SUFFIXES = (".h5", ".hdf5", ".hdf")


def split_hdf5_name(name: str) -> Optional[Tuple[str, str]]:
    """(file, dataset) of ``a/b.h5/group/dataset``: a dataset inside groups, named as a zarr array is.

    Args:
        name: a volume name; None when it names no dataset inside an existing HDF5 file.
    """
    parts = name.split("/")
    for index in range(len(parts) - 1, 0, -1):
        prefix = "/".join(parts[:index])
        if prefix.lower().endswith(HDF5_SUFFIXES) and os.path.isfile(prefix):
            return prefix, "/".join(parts[index:])
    return None


def _dataset_paths(handle: h5py.File) -> List[str]:
    paths: List[str] = []
    handle.visititems(lambda name, node: paths.append(name) if isinstance(node, h5py.Dataset) else None)
    return paths


def open_hdf5_volume(path: str, dataset: Optional[str] = None) -> h5py.Dataset:
    """A (z, y, x) dataset of an HDF5 file, opened lazily.

    Args:
        path: the HDF5 file, or ``file.h5/group/dataset`` for a dataset inside groups.
        dataset: its dataset; ``None`` takes the one the path names, else the only one (or ``main``).
    """
    inside = split_hdf5_name(path) if dataset is None else None
    if inside is not None:
        path, dataset = inside
    handle = open_hdf5(path)
    names = _dataset_paths(handle)
    if dataset is None:
        dataset = "main" if "main" in names else (names[0] if len(names) == 1 else None)
        if dataset is None:
            raise MissingDatasetError(
                f"{path!r} holds datasets {names}; expected one, or one named 'main' (name another as "
                f"'{path}/<dataset>')."
            )
    if dataset not in handle or not isinstance(handle[dataset], h5py.Dataset):
        raise MissingDatasetError(f"{path!r} has no dataset {dataset!r}; it holds {names}.")
    volume = handle[dataset]
    if volume.ndim != 3:
        raise InputError(f"{path!r}:{dataset} has shape {volume.shape}; expected a (z, y, x) volume.")
    return volume


def _chunks(shape: Sequence[int]) -> Tuple[int, ...]:
    return (1, min(shape[1], 16), min(shape[2], 256), min(shape[3], 256))


def volume_chunks(shape: Sequence[int]) -> Tuple[int, int, int]:
    """The (z, y, x) chunks of a label or image volume: 16 planes of at most 256 x 256.

    Args:
        shape: the volume's (z, y, x) shape.
    """
    return (min(shape[0], 16), min(shape[1], 256), min(shape[2], 256))


@contextmanager
def hdf5_writes() -> Iterator[None]:
    """Within the block, a write that fails (HDF5 reports some as RuntimeError) raises OSError with its errno."""
    try:
        yield
    except (OSError, RuntimeError) as error:
        code = re.search(r"errno = (\d+)", str(error))
        if (isinstance(error, OSError) and error.errno) or (isinstance(error, RuntimeError) and not code):
            raise
        raise OSError(int(code.group(1)) if code else None, str(error).splitlines()[0]) from error


def abandon(handle: h5py.File) -> None:
    """Close a file whose writes failed, without letting HDF5 retry them; the caller removes the file.

    HDF5 keeps unwritten data and metadata and tries again on close and at exit, where a full
    disk makes the library crash the process. Its descriptor is pointed at /dev/null first, so
    every retry succeeds into nothing.

    Args:
        handle: an open file.
    """
    if not handle.id.valid:
        return
    null = os.open(os.devnull, os.O_WRONLY)
    try:
        os.dup2(null, handle.id.get_vfd_handle())
    finally:
        os.close(null)
    try:
        handle.close()
    except (OSError, RuntimeError):
        # After some failed flushes HDF5's own bookkeeping refuses the close; its retries at exit
        # now write into /dev/null and succeed.
        pass


@contextmanager
def written_hdf5(path: str, key: str) -> Iterator[h5py.File]:
    """An HDF5 file written as ``<path>.partial`` and renamed to ``path`` when the block ends without error.

    A failure removes the partial file, so nothing half-written ever bears the final name.

    Args:
        path: the final file.
        key: the flag, key or argument that named it, for the message when its folder is missing.
    """
    folder = os.path.dirname(os.path.abspath(path))
    if not os.path.isdir(folder):
        raise InputError(f"{key} {path!r}: folder {folder!r} does not exist.")
    partial = path + ".partial"
    handle = h5py.File(partial, "w")
    try:
        with hdf5_writes():
            yield handle
            handle.close()
        os.replace(partial, path)
    except BaseException as error:
        abandon(handle)
        os.remove(partial)
        if isinstance(error, OSError) and error.errno and not isinstance(error, UserError):  # a failed write
            raise WriteError(
                f"{key} {path!r} could not be written ({failure_reason(error)}); nothing was written."
            ) from error
        raise


@contextmanager
def scratch_dataset(path: str, shape: Sequence[int], dtype: Any) -> Iterator[h5py.Dataset]:
    """A chunked on-disk (z, y, x) dataset for intermediate values, deleted when the block ends.

    Args:
        path: the scratch file.
        shape: its (z, y, x) shape.
        dtype: its values' type.
    """
    handle = h5py.File(path, "w")
    try:
        yield handle.create_dataset("scratch", shape=tuple(shape), dtype=dtype, chunks=volume_chunks(shape))
    finally:
        abandon(handle)  # its values are not needed, whether or not every write succeeded
        os.remove(path)


def check_replaceable(path: str, key: str, what: str, ours: Callable[[h5py.File], bool]) -> None:
    """Refuse to replace a file unless it is an HDF5 file of ours; refuse a folder where a file is wanted.

    Args:
        path: the output file, which may exist.
        key: the flag, key or argument that named it, for the message.
        what: what the output is, for the message ("a prediction").
        ours: whether an open HDF5 file is one we wrote.
    """
    if not os.path.lexists(path):
        return
    if os.path.isdir(path):
        raise InputError(f"{key} {path!r} is a folder; expected the name of a file for {what}.")
    try:
        with h5py.File(path, "r") as handle:
            mine = ours(handle)
    except OSError:
        mine = False
    if not mine:
        raise InputError(
            f"{key} {path!r} exists and is not {what} of ours; other files are never replaced: remove it or choose "
            "another name."
        )


def is_our_prediction(handle: h5py.File) -> bool:
    """Whether an HDF5 file is a prediction our engine wrote: ``vol<i>`` datasets with their resume keys."""
    volumes = [name for name in handle if name.startswith("vol") and isinstance(handle[name], h5py.Dataset)]
    return bool(volumes) and all("resume_key" in handle[name].attrs for name in volumes)


def create_volume(handle: h5py.File, name: str, shape: Sequence[int], dtype: Any, data: Optional[np.ndarray] = None):
    """A gzip-compressed (z, y, x) dataset in an open file, filled with ``data`` when given.

    Args:
        handle: the file, opened for writing.
        name: the dataset.
        shape: its (z, y, x) shape.
        dtype: its values' type.
        data: its values, or None to write it later.
    """
    shape = tuple(shape)
    return handle.create_dataset(
        name, shape=shape, dtype=dtype, data=data, chunks=volume_chunks(shape), compression="gzip"
    )


def write_volume(path: str, array: np.ndarray, dataset: str = "main", key: str = "path") -> None:
    """Write a (z, y, x) array as a gzip-compressed HDF5 file, complete or not at all.

    Args:
        path: the file.
        array: the values.
        dataset: the dataset's name.
        key: what named ``path``, for messages.
    """
    with written_hdf5(path, key) as handle:
        create_volume(handle, dataset, array.shape, array.dtype, array)


class BlockDataset(BlockWriter):
    """One output dataset and its per-block progress: where each block resumes, and block writes.

    Args:
        dataset: the (C, Z, Y, X) dataset, with ``done_z`` attributes.
    """

    def __init__(self, dataset: h5py.Dataset) -> None:
        self.dataset = dataset

    def next_plane(self, number: int) -> int:
        """The first plane of block ``number`` not yet written."""
        return int(self.dataset.attrs["done_z"][number])

    def write_values(self, number: int, box: Box, values: np.ndarray) -> None:
        """Write the planes ``box`` of block ``number`` and record them as done, durably.

        Args:
            number: the block.
            box: the (z, y, x) voxels written, from the block's next plane on.
            values: (C, *box.shape) values.
        """
        handle = self.dataset.file
        with hdf5_writes():
            self.dataset[(slice(None),) + box.slices()] = values
            # The data reaches the disk before the mark that says it is there: a crash or a full disk
            # between the two leaves planes that are computed again, never a mark over missing data.
            handle.flush()
            os.fsync(handle.id.get_vfd_handle())
            done = self.dataset.attrs["done_z"]
            done[number] = box.end[0]
            self.dataset.attrs["done_z"] = done
            handle.flush()


class Hdf5Prediction(PredictionOutput):
    """This rank's unfinished prediction file.

    Args:
        output_path: the final file.
        rank: this process's rank.
        world_size: the number of processes sharing the work.
        share: unused; every rank writes a file of its own.
    """

    per_rank_files = True

    def __init__(
        self, output_path: str, rank: int = 0, world_size: int = 1, share: Callable[[Any], Any] = lambda value: value
    ) -> None:
        self.output_path = output_path
        self.world_size = world_size
        self.path = output_path + (".partial" if world_size == 1 else f".rank{rank}.partial")
        check_replaceable(output_path, argument("output_path"), "a prediction", is_our_prediction)
        self.file = self._open()

    def _open(self) -> h5py.File:
        """Open for appending; a file that a kill left unreadable is started afresh."""
        try:
            return h5py.File(self.path, "a")
        except OSError:
            logger.info(
                f"{self.path!r} cannot be read (interrupted while writing?); starting it again.",
                extra={"all_ranks": True},
            )
            os.remove(self.path)
            return h5py.File(self.path, "a")

    def chunk_shape(self, shape: Sequence[int], block_size: Sequence[int], min_blocks: int) -> None:
        """None: each rank writes a file of its own, so blocks need not be whole chunks."""
        return None

    def dataset(
        self,
        index: int,
        shape: Sequence[int],
        key: Dict[str, Any],
        blocks: List[Box],
        voxel_size: Optional[Tuple[float, ...]] = None,
    ) -> BlockDataset:
        """Dataset ``vol<index>``, reused only if an interrupted run with the same resume key left it.

        Args:
            index: the input volume.
            shape: (C, Z, Y, X).
            key: the resume key, plain data.
            blocks: the output blocks, whose first planes start the progress record.
            voxel_size: the input's voxel size, when known; stored as the ``resolution`` attribute.
        """
        out, name = self.file, f"vol{index}"
        wanted = as_stored(key)
        shape = tuple(shape)
        if name in out:
            stored = json.loads(out[name].attrs.get("resume_key", "{}"))
            changed = changed_fields(stored, wanted) or (["shape"] if out[name].shape != shape else [])
            if changed:
                logger.info(restart_line(out.filename, name, changed), extra={"all_ranks": True})
                del out[name]
        if name not in out:
            dataset = out.create_dataset(name, shape=shape, dtype=OUTPUT_DTYPE, chunks=_chunks(shape))
            dataset.attrs["resume_key"] = json.dumps(wanted, sort_keys=True)
            first_z = np.array([block.begin[0] for block in blocks], dtype=np.int64)
            dataset.attrs["first_z"] = first_z
            dataset.attrs["done_z"] = first_z
            if voxel_size:
                dataset.attrs["resolution"] = np.asarray(voxel_size, dtype=np.float64)
        return BlockDataset(out[name])

    def close_or_discard(self, write_failed: bool = False) -> None:
        """Close after a failure; delete the file when it holds no finished plane, or when a write to it failed.

        Args:
            write_failed: a write failed, so the file may be corrupt; a rerun starts it afresh.
        """
        if write_failed:
            abandon(self.file)
            if os.path.exists(self.path):
                os.remove(self.path)
            return
        datasets = [d for d in self.file.values() if "first_z" in d.attrs]
        finished = any(np.any(d.attrs["done_z"] != d.attrs["first_z"]) for d in datasets)
        self.file.close()
        if not finished:
            os.remove(self.path)

    def close(self) -> None:
        """Close the file; one whose last writes fail is abandoned (see :func:`abandon`) and the error raised."""
        try:
            with hdf5_writes():
                self.file.close()
        except OSError:
            abandon(self.file)
            raise

    def publish(self, plans: Plans) -> None:
        """Rank 0, once every rank is done: join the ranks' files if there are several, then name the file.

        Args:
            plans: per volume, the (C, Z, Y, X) shape and the blocks.
        """
        if self.world_size > 1:
            self._join_ranks(plans)  # copies this run's volumes alone
        else:
            with h5py.File(self.output_path + ".partial", "a") as handle, hdf5_writes():
                stale = stale_volumes(handle, len(plans))
                for name in stale:
                    del handle[name]
            if stale:
                logger.info(f"{self.output_path!r}: dropped {', '.join(stale)}, left by an earlier run of more inputs.")
        os.replace(self.output_path + ".partial", self.output_path)
        for leftover in glob.glob(glob.escape(self.output_path) + ".rank*.partial"):
            os.remove(leftover)

    def _join_ranks(self, plans: Plans) -> None:
        """Copy every block from the file of the rank that predicted it into ``<output>.partial``.

        The ranks' files stay until the output is published, so a failed join is simply run again.

        Args:
            plans: per volume, the (C, Z, Y, X) shape and the blocks.
        """
        parts = [h5py.File(f"{self.output_path}.rank{r}.partial", "r") for r in range(self.world_size)]
        out = h5py.File(self.output_path + ".partial", "w")
        try:
            with hdf5_writes():
                self._copy_blocks(parts, out, plans)
                out.close()
        except BaseException:
            abandon(out)
            os.remove(self.output_path + ".partial")
            raise
        finally:
            for part in parts:
                part.close()

    def _copy_blocks(self, parts: List[h5py.File], out: h5py.File, plans: Plans) -> None:
        """Each block from the rank's file that predicted it into ``out``."""
        for index, (shape, blocks) in enumerate(plans):
            name = f"vol{index}"
            joined = out.create_dataset(name, shape=shape, dtype=OUTPUT_DTYPE, chunks=_chunks(shape))
            for number, block in enumerate(blocks):
                part = parts[number % self.world_size][name]
                if int(part.attrs["done_z"][number]) < block.end[0]:
                    raise RuntimeError(f"Block {number} of {name} is unfinished in {part.file.filename!r}.")
                for z in range(block.begin[0], block.end[0], MERGE_PLANES):
                    planes = block.with_axis(0, (z, min(z + MERGE_PLANES, block.end[0])))
                    where = (slice(None),) + planes.slices()
                    joined[where] = part[where]
            for attribute in ("resume_key", "resolution"):
                if attribute in parts[0][name].attrs:
                    joined.attrs[attribute] = parts[0][name].attrs[attribute]
