"""The work of one block, the same whether one process walks the blocks or daisy's workers pull them.

- :func:`fragment_block`: the mode's decoder on the block and its context, cut to the block,
  with ids unique in the whole volume (the block's raster index times :func:`id_stride`, plus
  the fragment's rank by first voxel in the block);
- :func:`~.contacts.block_contacts`: its contacts with the blocks around it;
- :meth:`~.graph.Relabelling.apply`: its final ids.
"""

import math
from dataclasses import dataclass
from typing import List, Sequence, Tuple

import numpy as np

from ..geometry import Box
from .decoders import Decoder, SegmentOptions


@dataclass
class BlockFragments:
    """One block's fragments.

    Args:
        labels: fragment ids over the block (uint64, background 0).
        ids: the ids that occur, in order of first voxel.
        voxel_counts: the voxels of each.
    """

    labels: np.ndarray
    ids: np.ndarray
    voxel_counts: np.ndarray


def block_grid(shape: Sequence[int], block_size: Sequence[int]) -> List[Box]:
    """The blocks of a volume in (z, y, x) raster order: ``block_size`` each, smaller at the far faces.

    Args:
        shape: the volume's (z, y, x) shape.
        block_size: voxels per block and axis.
    """
    grid = [math.ceil(n / b) for n, b in zip(shape, block_size)]
    return [
        Box.from_spans([(i * b, min((i + 1) * b, n)) for i, b, n in zip(corner, block_size, shape)])
        for corner in np.ndindex(*grid)
    ]


def block_index(block: Box, shape: Sequence[int], block_size: Sequence[int]) -> int:
    """The raster index of ``block`` in :func:`block_grid`."""
    grid = [math.ceil(n / b) for n, b in zip(shape, block_size)]
    return int(np.ravel_multi_index([b // size for b, size in zip(block.begin, block_size)], grid))


def id_stride(block_size: Sequence[int]) -> int:
    """The id range of one block: more than the fragments it can hold (one per voxel)."""
    return int(np.prod(block_size)) + 1


def grown(block: Box, context: int, shape: Sequence[int]) -> Box:
    """``block`` and ``context`` voxels beyond each face, inside the volume."""
    return Box(
        tuple(max(0, b - context) for b in block.begin), tuple(min(n, e + context) for e, n in zip(block.end, shape))
    )


def _by_first_voxel(labels: np.ndarray) -> Tuple[np.ndarray, np.ndarray]:
    """(labels renumbered 1..n in order of first voxel, background 0; the voxel count of each)."""
    ids, first, inverse, counts = np.unique(labels.ravel(), return_index=True, return_inverse=True, return_counts=True)
    rank = np.zeros(len(ids), dtype=np.int64)
    foreground = ids != 0
    order = np.argsort(first[foreground], kind="stable")
    rank[np.flatnonzero(foreground)[order]] = np.arange(1, int(foreground.sum()) + 1)
    ranked = np.zeros(int(foreground.sum()), dtype=np.int64)
    ranked[rank[foreground] - 1] = counts[foreground]
    return rank[inverse.ravel()].reshape(labels.shape), ranked


def fragment_block(
    prediction, block: Box, index: int, stride: int, decoder: Decoder, options: SegmentOptions
) -> BlockFragments:
    """The fragments of one block, read with the mode's context and cut to the block.

    Args:
        prediction: the lazy (C, Z, Y, X) uint8 prediction.
        block: the block's box.
        index: its raster index in the grid.
        stride: :func:`id_stride` of the grid.
        decoder: the mode.
        options: its options, with the resolution settled.
    """
    read = grown(block, decoder.context(options), prediction.shape[1:])
    values = np.asarray(prediction[(slice(None),) + read.slices()])
    local, counts = _by_first_voxel(decoder.fragments(values, options)[block.relative_to(read).slices()])
    offset = np.uint64(index) * np.uint64(stride)
    labels = np.where(local > 0, local.astype(np.uint64) + offset, np.uint64(0))
    ids = offset + np.arange(1, len(counts) + 1, dtype=np.uint64)
    return BlockFragments(labels, ids, counts)
