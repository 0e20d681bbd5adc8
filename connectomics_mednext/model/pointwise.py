"""1x1 convolutions (any stride) computed as matrix products on CPU.

A channels-last (B, C, *spatial) tensor is, in memory, a (voxels, C) matrix, so a 1x1
convolution is one ``F.linear`` over a view, with no copies. On CPU its backward runs about
twice as fast as oneDNN's 1x1 convolution backward, whose weight-gradient kernel also stalled
now and then with two threads (seen in oneDNN's jit_avx2_1x1 bwd_weights), so every 1x1 conv
of the network takes this path on CPU. Strided ones subsample first; transposed strided ones
spread their result onto the finer grid, where uncovered voxels hold only the bias.
"""
import torch
import torch.nn.functional as F
from torch import nn

from .layout import spread_zeros


def _linear_on_channels(x: torch.Tensor, weight: torch.Tensor, bias) -> torch.Tensor:
    return F.linear(x.movedim(1, -1), weight, bias).movedim(-1, 1)


class _PointwiseConvMixin:
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if x.device.type != "cpu":
            return super().forward(x)
        if any(s > 1 for s in self.stride):
            x = x[(slice(None), slice(None)) + tuple(slice(None, None, s) for s in self.stride)]
        return _linear_on_channels(x, self.weight.flatten(1), self.bias)


class _PointwiseConvTransposeMixin:
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if x.device.type != "cpu":
            return super().forward(x)
        matrix = self._matrix()
        stride = tuple(self.stride)
        if all(s == 1 for s in stride):
            return _linear_on_channels(x, matrix, self.bias)
        out = spread_zeros(_linear_on_channels(x, matrix, None), stride)
        return out if self.bias is None else out + self.bias.view((1, -1) + (1,) * len(stride))

    def _matrix(self) -> torch.Tensor:
        # The weight is stored (in, out, 1, ...): transpose it to (out, in). A contiguous copy makes
        # autograd take the weight gradient as (out, voxels) @ (voxels, in), which MKL runs several
        # times faster than the transposed product for a few output channels.
        return self.weight.flatten(1).t().contiguous()

    def add_product_to(self, out: torch.Tensor, x: torch.Tensor) -> None:
        """Add this conv of ``x``, without its bias, into ``out`` in place (no autograd).

        The product lands only on the voxels the stride reaches; the caller accounts for the bias.

        Args:
            out: a tensor of this conv's output shape.
            x: the conv's input.
        """
        reached = (slice(None), slice(None)) + tuple(slice(None, None, s) for s in self.stride)
        out[reached] += _linear_on_channels(x, self._matrix(), None)


class PointwiseConv3d(_PointwiseConvMixin, nn.Conv3d):
    """``nn.Conv3d`` with ``kernel_size=1`` (same parameters), computed by ``F.linear`` on CPU."""


class PointwiseConv2d(_PointwiseConvMixin, nn.Conv2d):
    """``nn.Conv2d`` with ``kernel_size=1`` (same parameters), computed by ``F.linear`` on CPU."""


class PointwiseConvTranspose3d(_PointwiseConvTransposeMixin, nn.ConvTranspose3d):
    """``nn.ConvTranspose3d`` with ``kernel_size=1`` (same parameters), computed by ``F.linear`` on CPU."""


class PointwiseConvTranspose2d(_PointwiseConvTransposeMixin, nn.ConvTranspose2d):
    """``nn.ConvTranspose2d`` with ``kernel_size=1`` (same parameters), computed by ``F.linear`` on CPU."""
