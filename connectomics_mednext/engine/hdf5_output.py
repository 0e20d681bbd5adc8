"""Predictions as HDF5 files in PyTC's layout: dataset ``vol<i>`` of (C, Z, Y, X) uint8 per input volume.

A prediction is written to ``<output>.partial`` (``<output>.rank<r>.partial`` per rank when
ranks share the work). Each dataset stores its resume key and, per output block, the first
plane not yet written (``done_z``), so a rerun with the same key continues where a kill left
it. Rank 0 joins the ranks' files; the output gets its final name only when complete.
"""
import glob
import json
import os
from typing import Any, Dict, List, Sequence, Tuple

import h5py
import numpy as np

from ..geometry import Box
from .log import get_logger

logger = get_logger(__name__)

OUTPUT_DTYPE = np.uint8
# Planes copied at a time when rank 0 joins the ranks' files.
MERGE_PLANES = 16


def changed_fields(stored: Dict[str, Any], wanted: Dict[str, Any]) -> List[str]:
    """The names of the resume-key fields that differ (``input.mtime_ns`` for nested ones).

    Args:
        stored: the key an unfinished output was started with.
        wanted: this run's key.
    """
    changed = []
    for name in sorted(set(stored) | set(wanted)):
        old, new = stored.get(name), wanted.get(name)
        if isinstance(old, dict) and isinstance(new, dict):
            changed += [f"{name}.{inner}" for inner in changed_fields(old, new)]
        elif old != new:
            changed.append(name)
    return changed


def _chunks(shape: Sequence[int]) -> Tuple[int, ...]:
    return (1, min(shape[1], 16), min(shape[2], 256), min(shape[3], 256))


class BlockDataset:
    """One output dataset and its per-block progress: where each block resumes, and block writes.

    Args:
        dataset: the (C, Z, Y, X) dataset, with ``done_z`` attributes.
    """

    def __init__(self, dataset: h5py.Dataset) -> None:
        self.dataset = dataset

    def next_plane(self, number: int) -> int:
        """The first plane of block ``number`` not yet written."""
        return int(self.dataset.attrs["done_z"][number])

    def write(self, number: int, box: Box, values: np.ndarray) -> None:
        """Write the planes ``box`` of block ``number`` and record them as done, durably.

        Args:
            number: the block.
            box: the (z, y, x) voxels written, from the block's next plane on.
            values: (C, *box.shape) values.
        """
        self.dataset[(slice(None),) + box.slices()] = values
        done = self.dataset.attrs["done_z"]
        done[number] = box.end[0]
        self.dataset.attrs["done_z"] = done
        self.dataset.file.flush()


class PartialHdf5Prediction:
    """This rank's unfinished prediction file.

    Args:
        output_path: the final file.
        rank: this process's rank.
        world_size: the number of processes sharing the work.
    """

    def __init__(self, output_path: str, rank: int = 0, world_size: int = 1) -> None:
        self.output_path = output_path
        self.world_size = world_size
        self.path = output_path + (".partial" if world_size == 1 else f".rank{rank}.partial")
        self.file = self._open()

    def _open(self) -> h5py.File:
        """Open for appending; a file that a kill left unreadable is started afresh."""
        try:
            return h5py.File(self.path, "a")
        except OSError:
            logger.info(f"{self.path!r} cannot be read (interrupted while writing?); starting it again.",
                        extra={"all_ranks": True})
            os.remove(self.path)
            return h5py.File(self.path, "a")

    def dataset(self, name: str, shape: Sequence[int], key: Dict[str, Any], blocks: List[Box]) -> BlockDataset:
        """Dataset ``name``, reused only if an interrupted run with the same resume key left it.

        Args:
            name: ``vol<i>``.
            shape: (C, Z, Y, X).
            key: the resume key, plain data.
            blocks: the output blocks, whose first planes start the progress record.
        """
        out = self.file
        wanted = json.loads(json.dumps(key))  # tuples become lists, as they come back from the file
        shape = tuple(shape)
        if name in out:
            stored = json.loads(out[name].attrs.get("resume_key", "{}"))
            changed = changed_fields(stored, wanted) or (["shape"] if out[name].shape != shape else [])
            if changed:
                logger.info(f"{out.filename!r}: {name} was started with other {', '.join(changed)}; starting it "
                            "afresh.", extra={"all_ranks": True})
                del out[name]
        if name not in out:
            dataset = out.create_dataset(name, shape=shape, dtype=OUTPUT_DTYPE, chunks=_chunks(shape))
            dataset.attrs["resume_key"] = json.dumps(wanted, sort_keys=True)
            first_z = np.array([block.begin[0] for block in blocks], dtype=np.int64)
            dataset.attrs["first_z"] = first_z
            dataset.attrs["done_z"] = first_z
        return BlockDataset(out[name])

    def close_or_discard(self) -> None:
        """Close after a failure; delete the file when it holds no finished plane."""
        datasets = [d for d in self.file.values() if "first_z" in d.attrs]
        finished = any(np.any(d.attrs["done_z"] != d.attrs["first_z"]) for d in datasets)
        self.file.close()
        if not finished:
            os.remove(self.path)

    def close(self) -> None:
        self.file.close()

    def join_ranks(self, plans: List[Tuple[Tuple[int, ...], List[Box]]]) -> None:
        """Rank 0: copy every block from the file of the rank that predicted it into ``<output>.partial``.

        Args:
            plans: per volume, the (C, Z, Y, X) shape and the blocks.
        """
        parts = [h5py.File(f"{self.output_path}.rank{r}.partial", "r") for r in range(self.world_size)]
        try:
            with h5py.File(self.output_path + ".partial", "w") as out:
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
                    joined.attrs["resume_key"] = parts[0][name].attrs["resume_key"]
        finally:
            for part in parts:
                part.close()

    def publish(self) -> None:
        """Give the complete ``<output>.partial`` its final name and remove the ranks' files."""
        os.replace(self.output_path + ".partial", self.output_path)
        for leftover in glob.glob(glob.escape(self.output_path) + ".rank*.partial"):
            os.remove(leftover)
