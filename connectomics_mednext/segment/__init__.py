"""Predictions -> instance labels: connected components and watersheds, for either engine's output."""

from .decoders import DECODERS, SegmentOptions
from .run import segment, segment_file, segment_options

__all__ = ["DECODERS", "SegmentOptions", "segment", "segment_file", "segment_options"]
