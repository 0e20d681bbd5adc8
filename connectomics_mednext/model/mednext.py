"""The MedNeXt encoder-decoder (Roy et al., MICCAI 2023), weight-compatible with MIC-DKFZ/MedNeXt.

Beyond the reference it takes per-stage strides and per-stage, per-axis kernels for
anisotropic EM volumes, validates input sizes up front, and returns deep-supervision
outputs in a container that PyTorch Connectomics can consume. ``forward`` says what the network
computes; :mod:`.execution` chooses how each part runs (plain modules, or the CPU kernels).
"""

import math
from collections import OrderedDict
from typing import Callable, Dict, List, Optional, Sequence, Tuple, Union

import torch
from torch import nn

from ..errors import look_up_option
from .blocks import (
    CONV,
    IntOrSeq,
    MedNeXtBlock,
    MedNeXtDownBlock,
    MedNeXtUpBlock,
    OutBlock,
    as_tuple,
    check_dim,
    odd_kernel,
)
from .execution import select_execution

NUM_STAGES = 9  # enc0..enc3, bottleneck, dec3..dec0
NUM_LEVELS = 4  # resolution changes
DS_KEYS = ("out_0", "out_1", "out_2", "out_3", "out_4")


def _ordered_dict(outputs: List[torch.Tensor]) -> "OrderedDict[str, torch.Tensor]":
    return OrderedDict(zip(DS_KEYS, outputs))


# Containers for the deep-supervision outputs, full resolution first. PyTC's loss,
# visualizer and test-time augmentor accept a Tensor or an OrderedDict, never a list.
DS_OUTPUTS: Dict[str, Callable[[List[torch.Tensor]], object]] = {"dict": _ordered_dict, "list": list}
# Activation checkpointing (recompute in the backward pass to save memory), not checkpoint files.
ACTIVATION_CHECKPOINTING_STYLES = (None, "outside_block")


def _per_stage(value, count: int, name: str) -> list:
    """A list of ``count`` values: ``value`` itself if it is a list, else ``value`` repeated."""
    if not isinstance(value, list):
        return [value] * count
    if len(value) != count:
        raise ValueError(f"{name} must be a single value or a list of {count} values, got {value!r}.")
    return list(value)


def _stage_kernels(
    kernel_size: Optional[Union[IntOrSeq, list]],
    enc_kernel_size: Optional[IntOrSeq],
    dec_kernel_size: Optional[IntOrSeq],
    ndim: int,
) -> List[Tuple[int, ...]]:
    """Resolve the three kernel arguments to one per-axis kernel per stage (9 stages)."""
    if kernel_size is not None:
        if isinstance(kernel_size, list) and len(kernel_size) == NUM_STAGES:
            return [odd_kernel(k, ndim, f"kernel_size[{i}]") for i, k in enumerate(kernel_size)]
        enc_kernel_size = dec_kernel_size = kernel_size
    if enc_kernel_size is None or dec_kernel_size is None:
        raise ValueError("Give kernel_size, or both enc_kernel_size and dec_kernel_size.")
    enc = odd_kernel(enc_kernel_size, ndim, "enc_kernel_size")
    dec = odd_kernel(dec_kernel_size, ndim, "dec_kernel_size")
    # The bottleneck runs with the decoder kernel in the reference.
    return [enc] * NUM_LEVELS + [dec] * (NUM_STAGES - NUM_LEVELS)


class MedNeXt(nn.Module):
    """MedNeXt: a fully ConvNeXt 3D (or 2D) U-Net with additive skips.

    Stages are ordered as in the reference: encoder 0-3, bottleneck, decoder 3-0.
    ``down_i`` leaves encoder stage ``i`` with ``exp_r[i + 1]`` and that stage's kernel;
    ``up_i`` enters decoder stage ``i`` with ``exp_r[8 - i]`` and that stage's kernel.

    Args:
        in_channels: input image channels.
        n_channels: channels of the first stage; stage ``i`` has ``n_channels * 2**i``.
        n_classes: output channels of every head.
        exp_r: expansion ratio, an int or 9 ints (one per stage).
        kernel_size: depthwise kernel for every stage; overrides ``enc_kernel_size`` and
            ``dec_kernel_size``. An odd int, one odd int per axis (e.g. ``(1, 5, 5)``), or a
            list of 9 such values, one per stage.
        enc_kernel_size: encoder kernel, used when ``kernel_size`` is ``None``.
        dec_kernel_size: bottleneck and decoder kernel, used when ``kernel_size`` is ``None``.
        deep_supervision: add heads ``out_1..out_4`` at 1/2..1/16 resolution.
        do_res: residual connections inside blocks.
        do_res_up_down: residual 1x1 convs in the down and up blocks.
        checkpoint_style: ``None`` or ``'outside_block'`` (gradient checkpointing of every
            block, used only when gradients are being recorded in training mode).
        block_counts: number of blocks in each of the 9 stages.
        norm_type: 'group' or 'layer'.
        dim: '2d' or '3d'.
        grn: global response normalisation in every block but ``down_0``.
        strides: downsampling factor of each of the 4 levels, an int or one int per axis;
            for example ``[(1, 2, 2), (1, 2, 2), 2, 2]`` for 4x4x40 nm EM.
        ds_output: 'dict' returns an ``OrderedDict`` (``out_0`` first) in training mode and the
            full-resolution tensor in eval mode; 'list' returns a list in both, like the reference.
        channels_last: run the network on channels-last activations. ``None`` (default) does so
            on CPU, with the CPU kernels of :mod:`.execution`; ``False`` on CPU runs the plain
            modules. Outputs are always returned in the default layout.
    """

    def __init__(
        self,
        in_channels: int,
        n_channels: int,
        n_classes: int,
        exp_r: Union[int, Sequence[int]] = 4,
        kernel_size: Optional[Union[IntOrSeq, list]] = 7,
        enc_kernel_size: Optional[IntOrSeq] = None,
        dec_kernel_size: Optional[IntOrSeq] = None,
        deep_supervision: bool = False,
        do_res: bool = False,
        do_res_up_down: bool = False,
        checkpoint_style: Optional[str] = None,
        block_counts: Sequence[int] = (2, 2, 2, 2, 2, 2, 2, 2, 2),
        norm_type: str = "group",
        dim: str = "3d",
        grn: bool = False,
        strides: Union[IntOrSeq, list] = 2,
        ds_output: str = "dict",
        channels_last: Optional[bool] = None,
    ) -> None:
        super().__init__()
        ndim = check_dim(dim)
        for name, value in (("in_channels", in_channels), ("n_channels", n_channels), ("n_classes", n_classes)):
            if not isinstance(value, int) or value < 1:
                raise ValueError(f"{name} must be a positive int, got {value!r}.")
        look_up_option("checkpoint_style", checkpoint_style, ACTIVATION_CHECKPOINTING_STYLES)
        look_up_option("ds_output", ds_output, DS_OUTPUTS)
        block_counts = list(block_counts)
        if len(block_counts) != NUM_STAGES or not all(isinstance(b, int) and b >= 1 for b in block_counts):
            raise ValueError(f"block_counts must be {NUM_STAGES} positive ints, got {block_counts!r}.")
        exp_r = _per_stage(exp_r if isinstance(exp_r, int) else list(exp_r), NUM_STAGES, "exp_r")
        if not all(isinstance(r, int) and r >= 1 for r in exp_r):
            raise ValueError(f"exp_r must hold positive ints, got {exp_r!r}.")
        kernels = _stage_kernels(kernel_size, enc_kernel_size, dec_kernel_size, ndim)
        # A list means one entry per level; an int or a tuple applies to every level.
        level_strides = [
            as_tuple(s, ndim, f"strides[{i}]") for i, s in enumerate(_per_stage(strides, NUM_LEVELS, "strides"))
        ]
        if any(s < 1 for level in level_strides for s in level):
            raise ValueError(f"strides must be positive, got {strides!r}.")

        self.in_channels = in_channels
        self.n_classes = n_classes
        self.dim = dim
        self.do_ds = deep_supervision
        self.checkpoint_style = checkpoint_style
        self.ds_output = ds_output
        self.channels_last = channels_last
        self.block_counts = block_counts
        self.strides = level_strides
        self.total_stride = tuple(math.prod(level[axis] for level in level_strides) for axis in range(ndim))

        common = dict(do_res=do_res, norm_type=norm_type, dim=dim, grn=grn)
        resample = dict(do_res=do_res_up_down, norm_type=norm_type, dim=dim)

        def stage(channels: int, index: int) -> nn.Sequential:
            return nn.Sequential(
                *[
                    MedNeXtBlock(channels, channels, exp_r[index], kernels[index], **common)
                    for _ in range(block_counts[index])
                ]
            )

        self.stem = CONV[dim](in_channels, n_channels, kernel_size=1)
        # Registration order follows the reference, so parameters() (and optimizer
        # state) line up with reference checkpoints.
        for level in range(NUM_LEVELS):
            width = n_channels * 2**level
            setattr(self, f"enc_block_{level}", stage(width, level))
            setattr(
                self,
                f"down_{level}",
                MedNeXtDownBlock(
                    width,
                    2 * width,
                    exp_r[level + 1],
                    kernels[level],
                    grn=grn and level > 0,  # the reference builds down_0 without GRN
                    stride=level_strides[level],
                    **resample,
                ),
            )
        self.bottleneck = stage(n_channels * 2**NUM_LEVELS, NUM_LEVELS)
        for level in reversed(range(NUM_LEVELS)):
            width = n_channels * 2**level
            index = NUM_STAGES - 1 - level
            setattr(
                self,
                f"up_{level}",
                MedNeXtUpBlock(
                    2 * width,
                    width,
                    exp_r[index],
                    kernels[index],
                    grn=grn,
                    stride=level_strides[level],
                    **resample,
                ),
            )
            setattr(self, f"dec_block_{level}", stage(width, index))
        self.out_0 = OutBlock(n_channels, n_classes, dim)
        # Kept for state_dict compatibility only. Non-reentrant checkpointing does not
        # need it; requires_grad=False keeps DDP from waiting for its gradient.
        self.dummy_tensor = nn.Parameter(torch.tensor([1.0]), requires_grad=False)
        if deep_supervision:
            for level in range(1, NUM_LEVELS + 1):
                setattr(self, f"out_{level}", OutBlock(n_channels * 2**level, n_classes, dim))

    def check_input_size(self, spatial_shape: Sequence[int]) -> None:
        """Raise a ValueError if the network cannot take this spatial size.

        Args:
            spatial_shape: the spatial sizes of the input, without batch and channel axes.
        """
        ndim = len(self.total_stride)
        if len(spatial_shape) != ndim:
            raise ValueError(
                f"MedNeXt(dim={self.dim!r}) expects {ndim} spatial axes, "
                f"got input spatial shape {tuple(spatial_shape)}."
            )
        names = "zyx"[-ndim:]
        bottleneck = 1
        for axis, (size, total) in enumerate(zip(spatial_shape, self.total_stride)):
            if size % total != 0 or size < total:
                raise ValueError(
                    f"Input size {size} along axis {names[axis]} (spatial axis {axis}) is not a positive "
                    f"multiple of that axis's total stride {total}; the nearest valid sizes are "
                    f"{_nearest_multiples(size, total)}."
                )
            bottleneck *= size // total
        if bottleneck <= 1:
            example = (2 * self.total_stride[0],) + tuple(self.total_stride[1:])
            raise ValueError(
                f"Input spatial shape {tuple(spatial_shape)} leaves a one-voxel bottleneck (total stride "
                f"{self.total_stride}), where the per-channel norm is undefined; make one axis twice its "
                f"total stride or more, e.g. {example}."
            )

    def valid_input_sizes(self, axis: int, up_to: int) -> List[int]:
        """Sizes along spatial ``axis`` (0 = first spatial axis) the network accepts, up to ``up_to``.

        Args:
            axis: spatial axis index.
            up_to: largest size to list.
        """
        total = self.total_stride[axis]
        return list(range(total, up_to + 1, total))

    def forward(self, x: torch.Tensor) -> Union[torch.Tensor, List[torch.Tensor], "OrderedDict[str, torch.Tensor]"]:
        """Segment ``x`` of shape (B, in_channels, *spatial).

        Returns the full-resolution logits, or with deep supervision the outputs at
        full, 1/2, 1/4, 1/8 and 1/16 resolution in the container set by ``ds_output``.
        """
        self._check_input(x)
        # Heads below full resolution only matter when their outputs are returned.
        want_heads = self.do_ds and (self.training or self.ds_output == "list")
        run = select_execution(self, x)  # how each part runs; what it computes is written here
        x = run.stem(self.stem, x)
        skips = []
        for level in range(NUM_LEVELS):
            x = run.stage(self.get_submodule(f"enc_block_{level}"), x)
            skips.append(x)
            x = run.down(self.get_submodule(f"down_{level}"), x)
        x = run.stage(self.bottleneck, x)
        heads = [run.head(self.out_4, x)] if want_heads else []
        for level in reversed(range(NUM_LEVELS)):
            x = run.join(skips.pop(), self.get_submodule(f"up_{level}"), x)  # skips are added, not concatenated
            x = run.stage(self.get_submodule(f"dec_block_{level}"), x)
            if want_heads and level > 0:
                heads.append(run.head(self.get_submodule(f"out_{level}"), x))
        outputs = [run.head(self.out_0, x)] + heads[::-1]
        return DS_OUTPUTS[self.ds_output](outputs) if want_heads else outputs[0]

    def _check_input(self, x: torch.Tensor) -> None:
        if x.dim() != 2 + len(self.total_stride) or x.shape[1] != self.in_channels:
            raise ValueError(
                f"MedNeXt expects input of shape (B, {self.in_channels}, {', '.join('*' * len(self.total_stride))}), "
                f"got {tuple(x.shape)}."
            )
        self.check_input_size(x.shape[2:])


def _nearest_multiples(size: int, total: int) -> str:
    lower = (size // total) * total
    upper = lower + total
    if lower < total:
        return f"{upper}"
    return f"{lower} and {upper}" if lower != size else f"{lower}"
