"""What every prediction output is: the protocol the HDF5 and zarr writers declare, and the stored values.

A prediction is one (C, Z, Y, X) uint8 array per input volume, probability x 255 as PyTC
writes it. The predictor hands a :class:`PredictionOutput` float probabilities block by block;
the output stores them as :data:`OUTPUT_DTYPE`, records each block's progress so that an
interrupted run continues where it stopped, and gets its final name only when complete.
"""

from abc import ABC, abstractmethod
from typing import Any, Callable, Dict, List, Optional, Sequence, Tuple

import numpy as np

from ..errors import InputError
from ..geometry import Box

# Probability x 255, clipped, as PyTC writes it.
OUTPUT_DTYPE = np.uint8
# Per volume: the (C, Z, Y, X) shape and the output blocks.
Plans = List[Tuple[Tuple[int, ...], List[Box]]]


def stale_volumes(names, count: int):
    """The ``vol<i>`` names of ``names`` with ``i >= count``: left by an earlier run of more input volumes.

    Args:
        names: dataset or array names in an unfinished output.
        count: this run's input volumes.
    """
    return sorted(n for n in names if n.startswith("vol") and n[3:].isdigit() and int(n[3:]) >= count)


def on_rank_zero(rank: int, share: Callable[[Any], Any], work: Callable[[], None]) -> None:
    """Run ``work`` on rank 0; when it fails, every rank raises (rank 0 its own error), so that none waits.

    Args:
        rank: this process's rank.
        share: returns rank 0's value on every rank (a broadcast); the identity for one process.
        work: what rank 0 does.
    """
    failure: Optional[BaseException] = None
    message = None
    if rank == 0:
        try:
            work()
        except Exception as error:
            failure, message = error, str(error) or type(error).__name__
    message = share(message)
    if failure is not None:
        raise failure
    if message is not None:
        raise InputError(message)


def to_output_values(probabilities: np.ndarray) -> np.ndarray:
    """Probabilities in 0..1 as stored: x 255, rounded half to even, clipped to 0..255, uint8.

    Args:
        probabilities: float values.
    """
    return np.clip(np.rint(probabilities * 255.0), 0, 255).astype(OUTPUT_DTYPE)


class BlockWriter(ABC):
    """One output array and the progress of its blocks."""

    @abstractmethod
    def next_plane(self, number: int) -> int:
        """The first plane of block ``number`` not yet written (its end when the block is done)."""

    def write(self, number: int, box: Box, probabilities: np.ndarray) -> None:
        """Store ``probabilities`` (C, *box.shape, in 0..1) for the planes ``box`` of block ``number``.

        Args:
            number: the block.
            box: the (z, y, x) voxels written, from the block's next plane on.
            probabilities: float values.
        """
        self.write_values(number, box, to_output_values(probabilities))

    @abstractmethod
    def write_values(self, number: int, box: Box, values: np.ndarray) -> None:
        """Store ``values`` (C, *box.shape, :data:`OUTPUT_DTYPE`) and record the planes as done, durably."""


class PredictionOutput(ABC):
    """This process's handle on a prediction being written (:func:`~connectomics_mednext.io.open_prediction_output`).

    Args:
        output_path: the final file or folder.
        rank: this process's rank.
        world_size: the processes writing it.
        share: returns rank 0's value on every rank (a broadcast); the identity for one process.
    """

    # Whether each rank writes a file of its own, so that the split of blocks between ranks decides the bytes.
    per_rank_files: bool = False

    @abstractmethod
    def chunk_shape(
        self, shape: Sequence[int], block_size: Sequence[int], min_blocks: int
    ) -> Optional[Tuple[int, int, int]]:
        """The chunk (z, y, x) that output blocks must be made of, or None when any block will do.

        Args:
            shape: the output's (z, y, x) shape.
            block_size: the largest block (z, y, x); 0 is the whole axis.
            min_blocks: the processes sharing the work.
        """

    @abstractmethod
    def dataset(
        self,
        index: int,
        shape: Sequence[int],
        key: Dict[str, Any],
        blocks: List[Box],
        voxel_size: Optional[Tuple[float, ...]] = None,
    ) -> BlockWriter:
        """Array ``vol<index>``, continued only when an interrupted run started it with the same resume key.

        Args:
            index: the input volume.
            shape: (C, Z, Y, X).
            key: the resume key, plain data (:mod:`connectomics_mednext.engine.resume_key`).
            blocks: the output blocks.
            voxel_size: the input's (z, y, x) voxel size in nm, when known.
        """

    @abstractmethod
    def close_or_discard(self, write_failed: bool = False) -> None:
        """After a failure: keep what a rerun can continue, remove what it cannot.

        Args:
            write_failed: the failure was a write to this output (a full disk), which may have left
                it inconsistent.
        """

    @abstractmethod
    def close(self) -> None:
        """After this rank's last block."""

    @abstractmethod
    def publish(self, plans: Plans) -> None:
        """Rank 0, once every rank is done: check that every block is complete, then give the output its name.

        Args:
            plans: per volume, the (C, Z, Y, X) shape and the blocks.
        """
