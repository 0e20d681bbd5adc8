"""Predictions -> instance labels: connected components and watersheds, for either engine's output."""

from .blockwise import segment_blockwise
from .decoders import DECODERS, SegmentOptions
from .run import segment, segment_file, segment_options

__all__ = ["DECODERS", "SegmentOptions", "segment", "segment_blockwise", "segment_file", "segment_options"]
