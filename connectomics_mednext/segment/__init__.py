"""Predictions -> instance labels: connected components and watersheds, for either engine's output."""

from .decoders import DECODERS, SegmentOptions
from .run import segment_file

__all__ = ["DECODERS", "SegmentOptions", "segment_file"]
