"""``Box``: a half-open box of voxels, the one geometry type of blocks, windows and their overlaps.

Like funlib's ``Roi`` (in voxels, not world units): a begin and an end per axis, intersection,
shifting and slicing. This module is also the one place output blocks are planned
(:func:`plan_output_blocks`: near-equal boxes, or whole chunks for chunked outputs, whose
blocks must not share a chunk); inference intersects windows with them and stores them in
resume keys.
"""

from dataclasses import dataclass
from typing import List, Optional, Sequence, Tuple

Span = Tuple[int, int]


@dataclass(frozen=True)
class Box:
    """Voxels ``begin[i] <= p[i] < end[i]`` on every axis.

    Args:
        begin: the first voxel, per axis.
        end: one past the last voxel, per axis (an end below its begin is clipped to it: empty).
    """

    begin: Tuple[int, ...]
    end: Tuple[int, ...]

    def __post_init__(self) -> None:
        if len(self.begin) != len(self.end):
            raise ValueError(f"A box needs as many ends as begins, got {self.begin} and {self.end}.")
        object.__setattr__(self, "begin", tuple(int(b) for b in self.begin))
        object.__setattr__(self, "end", tuple(max(int(e), b) for e, b in zip(self.end, self.begin)))

    @classmethod
    def from_spans(cls, spans: Sequence[Span]) -> "Box":
        """The box of (begin, end) per axis.

        Args:
            spans: one half-open span per axis.
        """
        return cls(tuple(a for a, _ in spans), tuple(b for _, b in spans))

    @classmethod
    def from_shape(cls, shape: Sequence[int], begin: Sequence[int] = ()) -> "Box":
        """The box of ``shape`` voxels starting at ``begin`` (the origin by default).

        Args:
            shape: voxels per axis.
            begin: the first voxel, per axis.
        """
        begin = tuple(begin) or (0,) * len(shape)
        return cls(begin, tuple(b + n for b, n in zip(begin, shape)))

    @property
    def shape(self) -> Tuple[int, ...]:
        """Voxels per axis."""
        return tuple(e - b for b, e in zip(self.begin, self.end))

    @property
    def spans(self) -> List[Span]:
        """(begin, end) per axis."""
        return list(zip(self.begin, self.end))

    @property
    def empty(self) -> bool:
        """Whether the box holds no voxel."""
        return any(e == b for b, e in zip(self.begin, self.end))

    def intersect(self, other: "Box") -> "Box":
        """The voxels in both boxes (possibly an empty box).

        Args:
            other: a box of the same rank.
        """
        begin = tuple(max(a, b) for a, b in zip(self.begin, other.begin))
        return Box(begin, tuple(min(a, b) for a, b in zip(self.end, other.end)))

    def shift(self, offset: Sequence[int]) -> "Box":
        """This box moved by ``offset`` voxels.

        Args:
            offset: voxels per axis (negative moves towards the origin).
        """
        return Box(tuple(b + o for b, o in zip(self.begin, offset)), tuple(e + o for e, o in zip(self.end, offset)))

    def relative_to(self, origin: "Box") -> "Box":
        """This box in the coordinates of an array that starts at ``origin.begin``.

        Args:
            origin: the box the array covers.
        """
        return self.shift(tuple(-b for b in origin.begin))

    def with_axis(self, axis: int, span: Span) -> "Box":
        """This box with ``axis`` cut to ``span``.

        Args:
            axis: the axis to replace.
            span: its new (begin, end).
        """
        spans = self.spans
        spans[axis] = span
        return Box.from_spans(spans)

    def slices(self) -> Tuple[slice, ...]:
        """The box as an index into an array whose voxel 0 is the origin."""
        return tuple(slice(b, e) for b, e in zip(self.begin, self.end))

    def to_json(self) -> List[List[int]]:
        """[[begin, end], ...] per axis, as resume keys store it."""
        return [[b, e] for b, e in zip(self.begin, self.end)]


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


def plan_aligned_blocks(
    shape: Sequence[int], block_size: Sequence[int], chunk: Sequence[int], min_blocks: int = 1
) -> List[Box]:
    """Output blocks made of whole chunks, in (z, y, x) raster order, so no two blocks share a chunk.

    Args:
        shape: the output's (z, y, x) shape.
        block_size: the largest block (z, y, x), rounded up to whole chunks; 0 on an axis means the
            whole axis, except that the depth is then split into enough spans for ``min_blocks``.
        chunk: the output's chunk shape (z, y, x).
        min_blocks: the fewest blocks wanted (the number of processes sharing the work).
    """

    def spans(size: int, length: int, step: int) -> List[Span]:
        length = -(-length // step) * step  # whole chunks
        return [(start, min(start + length, size)) for start in range(0, size, length)]

    ys = spans(shape[1], block_size[1] or shape[1], chunk[1])
    xs = spans(shape[2], block_size[2] or shape[2], chunk[2])
    depth = block_size[0]
    if depth <= 0:
        z_chunks = -(-shape[0] // chunk[0])
        z_parts = min(z_chunks, -(-min_blocks // (len(ys) * len(xs))))
        depth = -(-z_chunks // z_parts) * chunk[0]
    return [Box.from_spans((z, y, x)) for z in spans(shape[0], depth, chunk[0]) for y in ys for x in xs]


def plan_output_blocks(
    shape: Sequence[int], block_size: Sequence[int], min_blocks: int = 1, chunk: Optional[Sequence[int]] = None
) -> List[Box]:
    """An output's blocks: whole chunks when the output is chunked, else near-equal boxes.

    Args:
        shape: the output's (z, y, x) shape.
        block_size: the largest block (z, y, x); 0 on an axis means the whole axis.
        min_blocks: the fewest blocks wanted (the number of processes sharing the work).
        chunk: the chunk (z, y, x) blocks must be made of, or None.
    """
    if chunk is None:
        return plan_blocks(shape, block_size, min_blocks)
    return plan_aligned_blocks(shape, block_size, chunk, min_blocks)
