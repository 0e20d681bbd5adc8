"""Where the sliding window goes: window starts, and the output blocks that inference streams through.

Windows lie on one grid over the whole (padded) volume. The output is cut into blocks; a block
is predicted from exactly the grid windows that overlap it, so every voxel blends the same
windows in the same order whatever the blocks are, and blocked, distributed or resumed runs
give the same bytes as one pass over the volume. Windows that overlap two blocks are run for
each: the price of a buffer bounded by the block size.
"""
from typing import List, Sequence

from ..geometry import Box, Span


def window_starts(size: int, window: int, stride: int) -> List[int]:
    """Window starts along one axis: every ``stride``, plus one flush with the end.

    Args:
        size: the axis length.
        window: the window length, at most ``size``.
        stride: the step, between 1 and ``window``.
    """
    starts = list(range(0, size - window + 1, stride))
    if starts[-1] != size - window:
        starts.append(size - window)
    return starts


def windows_over(starts: Sequence[int], window: int, span: Span) -> List[int]:
    """The starts whose windows overlap ``span`` (half-open).

    Args:
        starts: window starts along one axis.
        window: the window length.
        span: (begin, end) along that axis.
    """
    return [s for s in starts if s < span[1] and s + window > span[0]]


def split_axis(size: int, block: int) -> List[Span]:
    """``[0, size)`` in near-equal spans of at most ``block`` voxels (one span when ``block`` is 0).

    Args:
        size: the axis length.
        block: the longest span; 0 for one span.
    """
    parts = 1 if block <= 0 else -(-size // block)
    edges = [i * size // parts for i in range(parts + 1)]
    return list(zip(edges[:-1], edges[1:]))


def plan_blocks(shape: Sequence[int], block_size: Sequence[int], min_blocks: int = 1) -> List[Box]:
    """Output blocks in (z, y, x) raster order.

    Args:
        shape: the output's (z, y, x) shape.
        block_size: the largest block (z, y, x); 0 on an axis means the whole axis, except that
            the depth is then split into as many spans as needed to give ``min_blocks`` blocks.
        min_blocks: the fewest blocks wanted (the number of processes sharing the work).
    """
    ys, xs = split_axis(shape[1], block_size[1]), split_axis(shape[2], block_size[2])
    depth = block_size[0]
    if depth <= 0:
        z_parts = min(shape[0], -(-min_blocks // (len(ys) * len(xs))))
        depth = -(-shape[0] // z_parts)
    return [Box.from_spans((z, y, x)) for z in split_axis(shape[0], depth) for y in ys for x in xs]
