"""Where the sliding window goes: window starts along each axis, and the windows over a span.

Windows lie on one grid over the whole (padded) volume. The output is cut into blocks
(:func:`~connectomics_mednext.geometry.plan_output_blocks`); a block
is predicted from exactly the grid windows that overlap it, so every voxel blends the same
windows in the same order whatever the blocks are, and blocked, distributed or resumed runs
give the same bytes as one pass over the volume. Windows that overlap two blocks are run for
each: the price of a buffer bounded by the block size.
"""

from typing import List, Sequence

from ..geometry import Span


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
