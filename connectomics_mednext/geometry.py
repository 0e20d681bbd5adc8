"""``Box``: a half-open box of voxels, the one geometry type of blocks, windows and their overlaps.

Like funlib's ``Roi`` (in voxels, not world units): a begin and an end per axis, intersection,
shifting and slicing. Inference plans its output blocks as boxes, intersects windows with them,
and stores them in resume keys; chunked writers cut their arrays with them.
"""
from dataclasses import dataclass
from typing import List, Sequence, Tuple

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
