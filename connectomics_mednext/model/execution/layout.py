"""Memory-layout helpers shared by the CPU fast paths."""

from typing import Dict, Tuple

import torch

# Channels-last memory format by tensor rank (batch, channels and 2 or 3 spatial axes).
CHANNELS_LAST: Dict[int, torch.memory_format] = {4: torch.channels_last, 5: torch.channels_last_3d}


def is_channels_last(x: torch.Tensor) -> bool:
    """Whether ``x`` (4D or 5D) is contiguous in channels-last order and not also in the default order."""
    memory_format = CHANNELS_LAST.get(x.dim())
    return memory_format is not None and x.is_contiguous(memory_format=memory_format) and not x.is_contiguous()


def memory_format_of(x: torch.Tensor) -> torch.memory_format:
    """The memory format a new tensor needs to share ``x``'s layout."""
    return CHANNELS_LAST[x.dim()] if is_channels_last(x) else torch.contiguous_format


def spread_zeros(x: torch.Tensor, stride: Tuple[int, ...]) -> torch.Tensor:
    """Spread ``x`` onto a grid ``stride`` times finer, with zeros between: ``n -> (n - 1) * s + 1`` voxels.

    Args:
        x: tensor of shape (B, C, *spatial).
        stride: the spacing per spatial axis.
    """
    size = tuple((n - 1) * s + 1 for n, s in zip(x.shape[2:], stride))
    stuffed = torch.empty(x.shape[:2] + size, dtype=x.dtype, device=x.device, memory_format=memory_format_of(x)).zero_()
    stuffed[(slice(None), slice(None)) + tuple(slice(None, None, s) for s in stride)] = x
    return stuffed
