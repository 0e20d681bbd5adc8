"""The CPU execution: channels-last activations, the kernels beside this module, and in-place inference.

On CPU a MedNeXt forward is memory traffic more than arithmetic, so this execution computes the
same network as the blocks' own ``forward`` with:

- 1x1 convs as matrix products over the channels-last (voxels, C) view (:mod:`.pointwise`);
- depthwise convs whose backward, and transposed forward, are fast depthwise convs (:mod:`.depthwise`);
- a block's norm, expansion, GELU and compression fused over cache-sized tiles (:mod:`.fused`);
- without autograd, blocks writing their result over tensors the walk no longer needs, and each up
  block adding its output straight into the skip.

``tests/test_fast_paths.py`` checks every path here against :class:`.ReferenceExecution`.
"""

from typing import Optional

import torch
from torch import nn

from ..blocks import MedNeXtBlock, MedNeXtUpBlock, global_response_norm
from .depthwise import depthwise_conv
from .fused import can_fuse, fused_pointwise, fused_pointwise_inference
from .layout import CHANNELS_LAST, is_channels_last
from .norm import is_per_channel_group_norm, normalise
from .pointwise import (
    add_pointwise_transpose_product,
    pointwise_conv,
    pointwise_conv_transpose,
)
from .reference import ReferenceExecution


def _conv_1x1(conv: nn.Module, x: torch.Tensor) -> torch.Tensor:
    return pointwise_conv_transpose(conv, x) if conv.transposed else pointwise_conv(conv, x)


def _fusable(block: MedNeXtBlock) -> bool:
    # GRN needs statistics of the whole expanded tensor, so it cannot run tile by tile.
    return not block.grn and is_per_channel_group_norm(block.norm)


def _shortcut(block: MedNeXtBlock, x: torch.Tensor) -> Optional[torch.Tensor]:
    """What ``block`` adds to its branch: its input, a 1x1 (transposed) conv of it, or nothing."""
    if getattr(block, "resample_do_res", False):
        return _conv_1x1(block.res_conv, x)
    return x if block.do_res else None


class CpuExecution(ReferenceExecution):
    """The network on channels-last CPU activations with fused kernels; see the module docstring.

    Args:
        checkpointing: recompute each block in the backward, as in :class:`.ReferenceExecution`.
    """

    def __init__(self, checkpointing: bool = False) -> None:
        super().__init__(checkpointing=checkpointing, channels_last=True)

    def _after_depthwise(
        self, block: MedNeXtBlock, y: torch.Tensor, shortcut: Optional[torch.Tensor], into_shortcut: bool
    ) -> torch.Tensor:
        """The block from its depthwise conv's output ``y`` on; ``into_shortcut`` lets the result
        overwrite ``shortcut`` without autograd."""
        if _fusable(block) and can_fuse(y):
            if not torch.is_grad_enabled():
                return fused_pointwise_inference(y, shortcut, block.norm, block.conv2, block.conv3, into_shortcut)
            return fused_pointwise(y, shortcut, block.norm, block.conv2, block.conv3)
        y = block.act(pointwise_conv(block.conv2, normalise(block.norm, y)))
        if block.grn:
            y = global_response_norm(y, block.grn_gamma, block.grn_beta)
        y = pointwise_conv(block.conv3, y)
        return y if shortcut is None else y + shortcut

    def _block(self, block: MedNeXtBlock, x: torch.Tensor, overwrite_input: bool) -> torch.Tensor:
        shortcut = _shortcut(block, x)
        # A resampling shortcut is this block's own tensor, always free to hold the result.
        into_shortcut = overwrite_input or shortcut is not x
        out = self._after_depthwise(block, depthwise_conv(block.conv1, x), shortcut, into_shortcut)
        return block.pad_at_start(out) if isinstance(block, MedNeXtUpBlock) else out

    def block(self, block: nn.Module, x: torch.Tensor) -> torch.Tensor:
        return self._block(block, x, overwrite_input=False)

    def stem(self, conv: nn.Module, x: torch.Tensor) -> torch.Tensor:
        return pointwise_conv(conv, x).contiguous(memory_format=CHANNELS_LAST[x.dim()])

    def stage(self, blocks: nn.Sequential, x: torch.Tensor) -> torch.Tensor:
        if self.checkpointing or torch.is_grad_enabled():
            return super().stage(blocks, x)
        # Without autograd a stage's input is this forward's own tensor and dead once read (the
        # skips are stage outputs, which down blocks only read), so blocks write over their input.
        for block in blocks:
            x = self._block(block, x, overwrite_input=True)
        return x

    def join(self, skip: torch.Tensor, up: nn.Module, x: torch.Tensor) -> torch.Tensor:
        """``skip + up(x)``; without autograd it is computed into ``skip``.

        The block's output is added straight into the part of ``skip`` that the padding leaves, and
        the strided ``res_conv`` adds its bias through the branch's last bias and its product only at
        the voxels its stride reaches: no padded copy and no mostly-zero shortcut tensor.
        """
        if torch.is_grad_enabled():
            return super().join(skip, up, x)
        y = depthwise_conv(up.conv1, x)
        if _fusable(up) and can_fuse(y) and is_channels_last(skip):
            fold_bias = up.resample_do_res and up.res_conv.bias is not None
            out = fused_pointwise_inference(
                y, None, up.norm, up.conv2, up.conv3, extra_bias=up.res_conv.bias if fold_bias else None
            )
            if up.resample_do_res:
                add_pointwise_transpose_product(up.res_conv, out, x)
        else:
            out = self._after_depthwise(up, y, _shortcut(up, x), into_shortcut=True)
        if out.dtype != skip.dtype:
            # Under autocast the plain sum promotes; an in-place one would round to the skip's dtype.
            return skip + up.pad_at_start(out)
        # The reference's padding puts the missing voxels at the start of each axis.
        interior = (slice(None), slice(None)) + tuple(slice(s - 1, None) for s in up.stride)
        skip[interior] += out
        return skip

    def head(self, head: nn.Module, x: torch.Tensor) -> torch.Tensor:
        return pointwise_conv_transpose(head.conv_out, x).contiguous()
