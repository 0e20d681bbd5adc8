"""Memory-layout helpers shared by the CPU fast paths."""
from typing import Dict

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
