"""Where fragments of neighbouring blocks touch: the pairs, and the mode's score summed along each contact.

A block owns the voxel pairs ``(p, p + step)`` whose first voxel ``p`` lies in it and whose
second lies outside it, for each step of the mode's half neighbourhood (one of each +/- pair).
Every pair of voxels in two different blocks is thus counted once in the whole volume, by one
block, so sums from all blocks add up to the whole contact. A pair that leaves the block along
two axes is owned by the face of its first such axis.
"""

from dataclasses import dataclass
from typing import Iterator, Optional, Tuple

import numpy as np

from ..geometry import Box
from .decoders import Decoder, SegmentOptions


@dataclass
class Contacts:
    """Fragment pairs that touch, each with its summed contact score and its number of voxel pairs.

    Args:
        pairs: (n, 2) uint64 fragment ids, the smaller first, each pair once.
        score_sums: (n,) the mode's contact scores (0..255) summed over the voxel pairs.
        voxel_pairs: (n,) how many voxel pairs make the contact.
    """

    pairs: np.ndarray
    score_sums: np.ndarray
    voxel_pairs: np.ndarray

    @classmethod
    def empty(cls) -> "Contacts":
        """No contact."""
        return cls(np.zeros((0, 2), np.uint64), np.zeros(0, np.float64), np.zeros(0, np.int64))

    @classmethod
    def summed(cls, pairs: np.ndarray, scores: np.ndarray, counts: np.ndarray) -> "Contacts":
        """The contacts of ``pairs`` (any order, repeated), with their scores and counts added per pair.

        Args:
            pairs: (n, 2) fragment ids.
            scores: (n,) score sums.
            counts: (n,) voxel pair counts.
        """
        if len(pairs) == 0:
            return cls.empty()
        ordered = np.sort(np.asarray(pairs, dtype=np.uint64), axis=1)
        unique, inverse = np.unique(ordered, axis=0, return_inverse=True)
        inverse = inverse.ravel()
        return cls(
            unique,
            np.bincount(inverse, weights=scores, minlength=len(unique)),
            np.bincount(inverse, weights=counts, minlength=len(unique)).astype(np.int64),
        )

    @classmethod
    def joined(cls, parts) -> "Contacts":
        """All the contacts of several blocks, added per pair.

        Args:
            parts: :class:`Contacts` of blocks.
        """
        parts = list(parts) or [cls.empty()]
        return cls.summed(
            np.concatenate([part.pairs for part in parts]),
            np.concatenate([part.score_sums for part in parts]),
            np.concatenate([part.voxel_pairs for part in parts]),
        )


def contact_region(block: Box, shape: Tuple[int, ...]) -> Box:
    """The block and one voxel beyond each face, inside the volume: what :func:`block_contacts` reads."""
    return Box(tuple(max(0, b - 1) for b in block.begin), tuple(min(n, e + 1) for e, n in zip(block.end, shape)))


def _owned_pairs(block: Box, region: Box, step: Tuple[int, ...]) -> Iterator[Tuple[Tuple[slice, ...], ...]]:
    """(near, far) index pairs, in region coordinates, of the voxel pairs ``block`` owns along ``step``."""
    for axis, direction in enumerate(step):
        if direction == 0:
            continue
        spans = []
        for other, (begin, end) in enumerate(zip(block.begin, block.end)):
            move = step[other]
            if other == axis:
                near = end - 1 if move > 0 else begin
                span = (near, near + 1) if region.begin[other] <= near + move < region.end[other] else (0, 0)
            elif other < axis and move != 0:  # an earlier axis that leaves the block owns those pairs
                span = (max(begin, begin - move), min(end, end - move))
            else:
                span = (max(begin, region.begin[other] - move), min(end, region.end[other] - move))
            spans.append(span)
        near_box = Box.from_spans(spans)
        if near_box.empty:
            continue
        near = near_box.relative_to(region).slices()
        yield near, near_box.shift(step).relative_to(region).slices()


def block_contacts(
    fragments: np.ndarray,
    prediction: Optional[np.ndarray],
    block: Box,
    region: Box,
    decoder: Decoder,
    options: SegmentOptions,
) -> Contacts:
    """The contacts between fragments of ``block`` and of the blocks around it.

    Args:
        fragments: the fragment ids (uint64) over ``region``.
        prediction: (C, ...) uint8 over ``region`` when the mode scores contacts; else None.
        block: the block's box in the volume.
        region: :func:`contact_region` of the block.
        decoder: the mode.
        options: its options.
    """
    pairs, scores = [], []
    for step in decoder.neighbour_steps(options):
        axis = next(index for index, move in enumerate(step) if move)
        for near, far in _owned_pairs(block, region, step):
            a, b = fragments[near], fragments[far]
            touching = (a > 0) & (b > 0) & (a != b)
            if not touching.any():
                continue
            pairs.append(np.stack([a[touching], b[touching]], axis=1))
            if decoder.contact_score is None:
                scores.append(np.zeros(int(touching.sum())))
            else:
                scores.append(decoder.contact_score(prediction, near, far, axis, options)[touching].astype(np.float64))
    if not pairs:
        return Contacts.empty()
    joined = np.concatenate(pairs)
    return Contacts.summed(joined, np.concatenate(scores), np.ones(len(joined), np.int64))
