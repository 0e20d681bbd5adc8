"""The plain execution: every module runs its own forward, as the reference does."""

from typing import Optional

import torch
from torch import nn
from torch.utils.checkpoint import checkpoint

from .layout import CHANNELS_LAST


class ReferenceExecution:
    """Runs the network's parts by their own ``forward``; the baseline every other execution must match.

    Args:
        checkpointing: recompute each block in the backward instead of storing its activations
            (the reference's ``'outside_block'`` style), storing only block inputs.
        channels_last: convert activations to channels-last after the stem (outputs are returned
            in the default layout).
    """

    def __init__(self, checkpointing: bool = False, channels_last: bool = False) -> None:
        self.checkpointing = checkpointing
        self.channels_last = channels_last

    def block(self, block: nn.Module, x: torch.Tensor) -> torch.Tensor:
        """One MedNeXt block (constant-resolution, down or up) of ``x``.

        Args:
            block: the block.
            x: its input.
        """
        return block(x)

    def _checkpointed(self, block: nn.Module, x: torch.Tensor) -> torch.Tensor:
        if self.checkpointing:
            return checkpoint(self.block, block, x, use_reentrant=False)
        return self.block(block, x)

    def stem(self, conv: nn.Module, x: torch.Tensor) -> torch.Tensor:
        """The stem's 1x1 conv of the network's input, in the layout the rest of the network runs in.

        Args:
            conv: the stem.
            x: the network's input.
        """
        out = conv(x)
        # With one input channel both layouts coincide, so the conversion comes after the stem.
        return out.contiguous(memory_format=CHANNELS_LAST[out.dim()]) if self.channels_last else out

    def stage(self, blocks: nn.Sequential, x: torch.Tensor) -> torch.Tensor:
        """A stage's blocks in turn.

        Args:
            blocks: the stage.
            x: its input.
        """
        for block in blocks:
            x = self._checkpointed(block, x)
        return x

    def down(self, block: nn.Module, x: torch.Tensor) -> torch.Tensor:
        """A down block of ``x``, whose input stays alive as the skip.

        Args:
            block: the down block.
            x: its input, an encoder stage's output.
        """
        return self._checkpointed(block, x)

    def join(self, skip: torch.Tensor, up: nn.Module, x: torch.Tensor) -> torch.Tensor:
        """``skip + up(x)``, a decoder stage's input: MedNeXt adds skips rather than concatenating them.

        Args:
            skip: the encoder's tensor at this level.
            up: the up block.
            x: its input.
        """
        return skip + self._checkpointed(up, x)

    def head(self, head: nn.Module, x: torch.Tensor) -> torch.Tensor:
        """A segmentation head's output, in the default layout.

        Args:
            head: the head.
            x: its input.
        """
        return head(x).contiguous()


def checkpointing_applies(style: Optional[str], module: nn.Module) -> bool:
    """Whether a network with checkpoint ``style`` recomputes blocks in this forward pass.

    Only training passes that record gradients store activations, so only they checkpoint.

    Args:
        style: ``None`` or ``'outside_block'``.
        module: the network (its ``training`` flag is read).
    """
    return style is not None and module.training and torch.is_grad_enabled()
