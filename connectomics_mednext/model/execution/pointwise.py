"""1x1 convolutions (any stride) computed as matrix products on CPU.

A channels-last (B, C, *spatial) tensor is, in memory, a (voxels, C) matrix, so a 1x1
convolution is one ``F.linear`` over a view, with no copies. On CPU its backward measured
faster than oneDNN's 1x1 convolution backward, whose weight-gradient kernel also stalled now
and then with two threads (seen in oneDNN's jit_avx2_1x1 bwd_weights), so every 1x1 conv of
the network takes this path on CPU (figures in benchmarks/README.md). Strided ones subsample
first; transposed strided ones spread their result onto the finer grid, where uncovered voxels hold only the bias.
"""

import torch
import torch.nn.functional as F
from torch import nn

from .layout import spread_zeros


def _linear_on_channels(x: torch.Tensor, weight: torch.Tensor, bias) -> torch.Tensor:
    return F.linear(x.movedim(1, -1), weight, bias).movedim(-1, 1)


def pointwise_conv(conv: nn.Module, x: torch.Tensor) -> torch.Tensor:
    """``conv(x)`` for a 1x1 ``nn.Conv2d``/``nn.Conv3d`` of any stride, as ``F.linear`` on CPU.

    Args:
        conv: the module whose parameters and stride are used.
        x: its input.
    """
    if x.device.type != "cpu":
        return conv(x)
    if any(s > 1 for s in conv.stride):
        x = x[(slice(None), slice(None)) + tuple(slice(None, None, s) for s in conv.stride)]
    return _linear_on_channels(x, conv.weight.flatten(1), conv.bias)


def _transposed_matrix(conv: nn.Module) -> torch.Tensor:
    # The weight is stored (in, out, 1, ...): transpose it to (out, in). A contiguous copy makes
    # autograd take the weight gradient as (out, voxels) @ (voxels, in), which MKL runs faster
    # than the transposed product for a few output channels.
    return conv.weight.flatten(1).t().contiguous()


def pointwise_conv_transpose(conv: nn.Module, x: torch.Tensor) -> torch.Tensor:
    """``conv(x)`` for a 1x1 ``nn.ConvTranspose2d``/``3d`` of any stride, as ``F.linear`` on CPU.

    A strided one spreads its product onto the finer grid, where uncovered voxels hold only the bias.

    Args:
        conv: the module whose parameters and stride are used.
        x: its input.
    """
    if x.device.type != "cpu":
        return conv(x)
    matrix = _transposed_matrix(conv)
    stride = tuple(conv.stride)
    if all(s == 1 for s in stride):
        return _linear_on_channels(x, matrix, conv.bias)
    out = spread_zeros(_linear_on_channels(x, matrix, None), stride)
    return out if conv.bias is None else out + conv.bias.view((1, -1) + (1,) * len(stride))


def add_pointwise_transpose_product(conv: nn.Module, out: torch.Tensor, x: torch.Tensor) -> None:
    """Add ``conv(x)`` without its bias into ``out`` in place (no autograd), for a 1x1 transposed conv.

    The product lands only on the voxels the stride reaches; the caller accounts for the bias.

    Args:
        conv: a 1x1 ``nn.ConvTranspose2d``/``3d``.
        out: a tensor of the conv's output shape.
        x: the conv's input.
    """
    reached = (slice(None), slice(None)) + tuple(slice(None, None, s) for s in conv.stride)
    out[reached] += _linear_on_channels(x, _transposed_matrix(conv), None)
