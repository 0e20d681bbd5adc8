"""How the network runs, apart from what it computes: the one place that chooses an execution.

:class:`~connectomics_mednext.model.mednext.MedNeXt` walks its encoder and decoder through an
execution object (stem, stage, down, join, head). :func:`select_execution` is the only place
that picks one, so a new backend (a GPU kernel, say) is one class and one line here.
"""

import torch
from torch import nn

from .cpu import CpuExecution
from .reference import ReferenceExecution, checkpointing_applies


def select_execution(model: nn.Module, x: torch.Tensor) -> ReferenceExecution:
    """The execution for one forward pass of ``model`` on ``x``.

    CPU tensors in channels-last (the default there) take the CPU kernels; anything else runs the
    modules' own forward, in channels-last when ``model.channels_last`` asks for it.

    Args:
        model: the MedNeXt (its ``channels_last``, ``checkpoint_style`` and ``training`` are read).
        x: the network's input.
    """
    checkpointing = checkpointing_applies(model.checkpoint_style, model)
    on_cpu = x.device.type == "cpu"
    channels_last = on_cpu if model.channels_last is None else model.channels_last
    if on_cpu and channels_last:
        return CpuExecution(checkpointing=checkpointing)
    return ReferenceExecution(checkpointing=checkpointing, channels_last=channels_last)


__all__ = ["CpuExecution", "ReferenceExecution", "select_execution"]
