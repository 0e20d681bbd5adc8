"""Predictions as zarr: one (C, Z, Y, X) uint8 array per input volume, written by every rank directly.

``result.zarr`` is a zarr (v2) group holding ``vol0``, ``vol1``, ... with OME-Zarr (0.4)
multiscale metadata for the full-resolution level, so viewers (napari, Neuroglancer, webKnossos)
and any zarr reader open it. While it is written it is ``result.zarr.partial``:

- output blocks are whole chunks (:func:`~connectomics_mednext.geometry.plan_output_blocks`),
  so no two ranks ever write the same chunk and no rank joins anything;
- each finished block leaves a done marker, ``.progress/vol<i>/<block>.done``, as daisy does,
  and ``.progress/vol<i>/resume_key.json`` records what the array is a prediction of: a rerun
  with the same key computes only the blocks without a marker, whichever rank was killed, and a
  rerun with other weights or settings starts the array afresh;
- rank 0 marks the group complete (``connectomics_mednext.complete`` in its attributes) and
  gives it its final name once every block of every volume has its marker.
"""

import os
import re
import shutil
from typing import Any, Callable, Dict, List, Optional, Sequence, Tuple

import numpy as np

from ..errors import InputError, argument
from ..geometry import Box
from ..log import get_logger
from ..version import __version__
from .chunked import create_zarr_array
from .json_files import read_json, write_json_atomically
from .ome_zarr import ome_multiscale
from .prediction_output import OUTPUT_DTYPE, BlockWriter, Plans, PredictionOutput, on_rank_zero, stale_volumes
from .resume import as_stored, changed_fields, restart_line

logger = get_logger(__name__)

PROGRESS = ".progress"
# The largest chunk (z, y, x) of a prediction: 32 planes suit both streaming in z and viewers.
CHUNK = (32, 256, 256)


def is_complete_prediction(folder: str) -> bool:
    """Whether ``folder`` is a zarr prediction of ours that every block was written into (its complete mark).

    Args:
        folder: a ``.zarr`` group.
    """
    attributes = read_json(os.path.join(folder, ".zattrs")) if os.path.isdir(folder) else None
    return bool((attributes or {}).get("connectomics_mednext", {}).get("complete"))


class ZarrBlocks(BlockWriter):
    """One output array and its done markers: where each block resumes, and block writes.

    Args:
        array: the (C, Z, Y, X) tensorstore array.
        progress: the folder of this array's done markers.
        blocks: the output blocks.
    """

    def __init__(self, array, progress: str, blocks: List[Box]) -> None:
        self.array, self.progress, self.blocks = array, progress, blocks

    def _marker(self, number: int) -> str:
        return os.path.join(self.progress, f"{number}.done")

    def done(self, number: int) -> bool:
        """Whether block ``number`` is complete."""
        return os.path.isfile(self._marker(number))

    def next_plane(self, number: int) -> int:
        """The block's first plane, or its end when its marker says it is done."""
        block = self.blocks[number]
        return block.end[0] if self.done(number) else block.begin[0]

    def write_values(self, number: int, box: Box, values: np.ndarray) -> None:
        """Write the planes ``box`` of block ``number``; the block's last planes leave its marker.

        Args:
            number: the block.
            box: the (z, y, x) voxels written.
            values: (C, *box.shape) values.
        """
        try:
            self.array[(slice(None),) + box.slices()].write(values).result()
        except ValueError as error:  # tensorstore reports its I/O failures so
            code = re.search(r"os_error_code='(\d+)'", str(error))
            raise OSError(int(code.group(1)) if code else None, str(error).splitlines()[0]) from error
        if box.end[0] == self.blocks[number].end[0]:
            with open(self._marker(number), "w", encoding="utf-8"):
                pass


def reopen_blocks(output_path: str, index: int, shape: Sequence[int], blocks: List[Box]) -> ZarrBlocks:
    """Array ``vol<index>`` of a prediction being written, for a worker that writes some of its blocks.

    The run that plans the prediction creates the array and its resume key (:meth:`ZarrPrediction.dataset`);
    daisy's workers only reopen it.

    Args:
        output_path: the final ``.zarr`` folder.
        index: the input volume.
        shape: (C, Z, Y, X).
        blocks: the output blocks.
    """
    path = output_path.rstrip("/") + ".partial"
    array = create_zarr_array(os.path.join(path, f"vol{index}"), shape, OUTPUT_DTYPE, shape)
    return ZarrBlocks(array, os.path.join(path, PROGRESS, f"vol{index}"), blocks)


class ZarrPrediction(PredictionOutput):
    """This run's zarr prediction, shared by every rank.

    Args:
        output_path: the final ``.zarr`` folder.
        rank: this process's rank.
        world_size: the processes writing it.
        share: returns rank 0's value on every rank (a broadcast); the identity for one process.
            Rank 0 prepares each array and every rank learns whether that worked.
    """

    def __init__(
        self, output_path: str, rank: int = 0, world_size: int = 1, share: Callable[[Any], Any] = lambda value: value
    ) -> None:
        self.output_path = output_path.rstrip("/")
        self.path = self.output_path + ".partial"
        self.rank, self.world_size, self.share = rank, world_size, share
        self.voxel_sizes: Dict[str, Optional[Tuple[float, ...]]] = {}
        self.chunks: Dict[Tuple[int, ...], Tuple[int, int, int]] = {}  # by output (z, y, x) shape
        on_rank_zero(self.rank, self.share, self._create_group)

    def _create_group(self) -> None:
        if os.path.lexists(self.output_path) and not is_complete_prediction(self.output_path):
            raise InputError(
                f"{argument('output_path')} {self.output_path!r} exists and is not a zarr prediction of ours; "
                "other files are never replaced: remove it or choose another name."
            )
        try:
            os.makedirs(os.path.join(self.path, PROGRESS), exist_ok=True)
        except OSError as error:
            raise InputError(f"INFERENCE.OUTPUT_NAME {self.path!r} cannot be created ({error.strerror}).") from error
        if not os.path.isfile(os.path.join(self.path, ".zgroup")):
            write_json_atomically(os.path.join(self.path, ".zgroup"), {"zarr_format": 2})

    def chunk_shape(self, shape: Sequence[int], block_size: Sequence[int], min_blocks: int) -> Tuple[int, int, int]:
        """The (z, y, x) chunk of a prediction: at most :data:`CHUNK`, the shape and the block size,
        and, when the depth is not blocked, thin enough in z to give every rank a block.

        Args:
            shape: the output's (z, y, x) shape.
            block_size: the largest block (z, y, x); 0 is the whole axis.
            min_blocks: the processes sharing the work.
        """
        chunk = [min(n, c, b) if b > 0 else min(n, c) for n, c, b in zip(shape, CHUNK, block_size)]
        if block_size[0] <= 0:
            chunk[0] = min(chunk[0], -(-shape[0] // min_blocks))
        self.chunks[tuple(shape)] = tuple(chunk)
        return tuple(chunk)

    def dataset(
        self,
        index: int,
        shape: Sequence[int],
        key: Dict[str, Any],
        blocks: List[Box],
        voxel_size: Optional[Tuple[float, ...]] = None,
    ) -> ZarrBlocks:
        """Array ``vol<index>``, continued only when it was started with the same resume key.

        Args:
            index: the input volume.
            shape: (C, Z, Y, X).
            key: the resume key, plain data.
            blocks: the output blocks.
            voxel_size: the input's (z, y, x) voxel size in nm, when known.
        """
        name = f"vol{index}"
        folder, progress = os.path.join(self.path, name), os.path.join(self.path, PROGRESS, name)
        wanted = as_stored(key)
        chunks = (shape[0],) + self.chunks[tuple(shape[1:])]
        self.voxel_sizes[name] = voxel_size

        def prepare() -> None:
            stored = read_json(os.path.join(progress, "resume_key.json"))
            if stored is None and os.path.isdir(folder):
                raise InputError(
                    f"{folder!r} exists but holds no resume key of ours; remove it or choose another "
                    "INFERENCE.OUTPUT_NAME."
                )
            changed = changed_fields(stored, wanted) if stored is not None else []
            if changed:
                logger.info(restart_line(self.path, name, changed))
                shutil.rmtree(folder)
                shutil.rmtree(progress)
            os.makedirs(progress, exist_ok=True)
            create_zarr_array(folder, shape, OUTPUT_DTYPE, chunks)
            write_json_atomically(os.path.join(progress, "resume_key.json"), wanted)

        on_rank_zero(self.rank, self.share, prepare)
        array = create_zarr_array(folder, shape, OUTPUT_DTYPE, chunks)  # reopens what rank 0 made
        return ZarrBlocks(array, progress, blocks)

    def close_or_discard(self, write_failed: bool = False) -> None:
        """After a failure: keep what finished blocks there are (a rerun continues them).

        Args:
            write_failed: a write failed; a block's marker follows its data, so the markers stay true.
        """
        if self.rank == 0 and self.world_size == 1:
            markers = [
                n for _, _, files in os.walk(os.path.join(self.path, PROGRESS)) for n in files if n.endswith(".done")
            ]
            if not markers:
                shutil.rmtree(self.path, ignore_errors=True)

    def close(self) -> None:
        """Nothing to flush: every block write has completed when it returns."""

    def publish(self, plans: Plans) -> None:
        """Rank 0, once every rank is done: check every block's marker, mark the group complete and name it.

        Args:
            plans: per volume, the (C, Z, Y, X) shape and the blocks.
        """
        for index, (_, blocks) in enumerate(plans):
            progress = os.path.join(self.path, PROGRESS, f"vol{index}")
            missing = [n for n in range(len(blocks)) if not os.path.isfile(os.path.join(progress, f"{n}.done"))]
            if missing:
                raise RuntimeError(f"Blocks {missing[:5]} of vol{index} in {self.path!r} are unfinished.")
        stale = stale_volumes(os.listdir(self.path), len(plans))
        for name in stale:
            shutil.rmtree(os.path.join(self.path, name))
        if stale:
            logger.info(f"{self.output_path!r}: dropped {', '.join(stale)}, left by an earlier run of more inputs.")
        attributes = {
            "multiscales": [
                ome_multiscale(f"vol{i}", self.voxel_sizes.get(f"vol{i}"), True) for i in range(len(plans))
            ],
            "connectomics_mednext": {
                "complete": True,
                "version": __version__,
                "layout": "(C, Z, Y, X) uint8, probability x 255",
            },
        }
        write_json_atomically(os.path.join(self.path, ".zattrs"), attributes)
        for name, voxel_size in self.voxel_sizes.items():
            if voxel_size:  # funlib's attribute on the array itself, which decoding reads
                write_json_atomically(os.path.join(self.path, name, ".zattrs"), {"resolution": list(voxel_size)})
        shutil.rmtree(os.path.join(self.path, PROGRESS))
        if os.path.isdir(self.output_path):
            shutil.rmtree(self.output_path)  # the previous result of this name, replaced as HDF5 files are
        os.replace(self.path, self.output_path)
