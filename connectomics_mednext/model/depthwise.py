"""Depthwise convolution with a faster CPU backward pass.

On CPU, PyTorch's backward for depthwise 3D convolution runs 3-4x slower than its
forward. Both gradients of a stride-1 depthwise convolution are themselves depthwise
convolutions that the fast forward kernel can compute:

- grad_input is the gradient correlated with the spatially flipped kernel;
- grad_weight is the padded input correlated with the gradient, which acts as a
  kernel the size of the volume and yields a ``k``-sized output.

The results equal PyTorch's gradients up to float rounding.
"""
import itertools
from typing import Tuple

import torch
import torch.nn.functional as F
from torch import nn
from torch.autograd.function import once_differentiable

from .layout import memory_format_of, spread_zeros

CONV_FUNCTIONS = {2: F.conv2d, 3: F.conv3d}


class _DepthwiseConvFunction(torch.autograd.Function):
    """Depthwise conv (odd kernel, padding ``k // 2``, any stride) whose backward is two depthwise convs.

    For stride ``s``, the gradient is first spread onto the input grid (``s - 1`` zeros after
    every value), which turns both gradients into stride-1 correlations.
    """

    @staticmethod
    def forward(ctx, x, weight, bias, padding: Tuple[int, ...], stride: Tuple[int, ...]):
        conv = CONV_FUNCTIONS[x.dim() - 2]
        ctx.save_for_backward(x, weight)
        ctx.padding = padding
        ctx.stride = stride
        ctx.has_bias = bias is not None
        return conv(x, weight, bias, stride=stride, padding=padding, groups=x.shape[1])

    @staticmethod
    @once_differentiable
    def backward(ctx, grad: torch.Tensor):
        x, weight = ctx.saved_tensors
        ndim = x.dim() - 2
        conv = CONV_FUNCTIONS[ndim]
        channels = x.shape[1]
        grad_x = grad_w = grad_b = None
        if ctx.has_bias and ctx.needs_input_grad[2]:
            grad_b = grad.sum(dim=(0,) + tuple(range(2, 2 + ndim)))
        if any(s > 1 for s in ctx.stride):
            # Zeros up to the input size: gradients at positions the stride skipped.
            grad = spread_zeros(grad, ctx.stride, size=tuple(x.shape[2:]))
        if ctx.needs_input_grad[0]:
            flipped = weight.flip(tuple(range(2, 2 + ndim)))
            grad_x = conv(grad, flipped, padding=ctx.padding, groups=channels)
        if ctx.needs_input_grad[1]:
            # F.pad lists the last axis first.
            pads = tuple(p for pad in reversed(ctx.padding) for p in (pad, pad))
            padded = F.pad(x, pads)
            grad_w = sum(
                conv(padded[b : b + 1], grad[b].unsqueeze(1), groups=channels)[0].unsqueeze(1)
                for b in range(x.shape[0])
            )
        return grad_x, grad_w, grad_b, None, None


def cpu_fp32_training(x: torch.Tensor) -> bool:
    """Whether ``x`` is a float32 CPU tensor whose forward pass records gradients, without autocast."""
    return (
        x.device.type == "cpu"
        and x.dtype == torch.float32
        and torch.is_grad_enabled()
        and not torch.is_autocast_enabled("cpu")
    )


def _fits_fast_path(conv: nn.Module) -> bool:
    """Depthwise, undilated, zero-padded, odd kernel with padding ``k // 2`` and no output padding."""
    return (
        conv.groups == conv.in_channels == conv.out_channels
        and all(d == 1 for d in conv.dilation)
        and conv.padding_mode == "zeros"
        and all(o == 0 for o in conv.output_padding)
        and all(k % 2 == 1 and p == k // 2 for p, k in zip(conv.padding, conv.kernel_size))
    )


class _FastPathModule:
    """Records at construction whether the conv fits the fast path (``self._fast``)."""

    def __init__(self, *args, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        self._fast = _fits_fast_path(self)


class _FastDepthwiseMixin(_FastPathModule):
    """Route CPU training through :class:`_DepthwiseConvFunction`; otherwise behave as the parent conv."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self._fast and cpu_fp32_training(x):
            return _DepthwiseConvFunction.apply(x, self.weight, self.bias, tuple(self.padding), tuple(self.stride))
        return super().forward(x)


class DepthwiseConv3d(_FastDepthwiseMixin, nn.Conv3d):
    """``nn.Conv3d`` (same arguments and parameters) with a faster CPU backward when depthwise."""


class DepthwiseConv2d(_FastDepthwiseMixin, nn.Conv2d):
    """``nn.Conv2d`` (same arguments and parameters) with a faster CPU backward when depthwise."""


def _phase_taps(phase: int, stride: int, kernel: int, padding: int) -> Tuple[slice, int]:
    """For outputs ``phase + stride * t`` of a transposed conv along one axis: the kernel taps that reach
    them (a slice, to be reversed) and how many input voxels before ``t`` the first tap reads."""
    first = (phase + padding) % stride
    taps = (kernel - 1 - first) // stride + 1
    reach = (phase + padding - first) // stride  # the input offset of tap ``first``
    return slice(first, first + (taps - 1) * stride + 1, stride), taps - 1 - reach


def _transposed_by_phases(x: torch.Tensor, weight: torch.Tensor, bias, stride: Tuple[int, ...],
                          padding: Tuple[int, ...]) -> torch.Tensor:
    """A depthwise transposed conv (odd kernel, padding ``k // 2``) as one small depthwise conv per
    output phase, each on the input grid: no multiplications by stuffed zeros, ``prod(stride)``
    times fewer than zero-stuffing. Forward only."""
    ndim = x.dim() - 2
    kernel = weight.shape[2:]
    size = tuple((n - 1) * s + 1 for n, s in zip(x.shape[2:], stride))
    out = torch.empty(x.shape[:2] + size, dtype=x.dtype, memory_format=memory_format_of(x))
    for phases in itertools.product(*(range(s) for s in stride)):
        taps, before = zip(*(_phase_taps(f, s, k, p) for f, s, k, p in zip(phases, stride, kernel, padding)))
        lengths = [len(range(f, n, s)) for f, n, s in zip(phases, size, stride)]
        if 0 in lengths:
            continue  # this phase has no outputs (an axis of one voxel)
        sub = weight[(slice(None), slice(None)) + taps].flip(tuple(range(2, 2 + ndim)))
        # F.pad lists the last axis first; enough zeros after for the last output of the phase.
        pads = [(b, t - 1 - b + m - n) for b, t, m, n in zip(before, sub.shape[2:], lengths, x.shape[2:])]
        padded = F.pad(x, tuple(v for pair in reversed(pads) for v in pair))
        phase_out = CONV_FUNCTIONS[ndim](padded, sub, bias, groups=x.shape[1])
        out[(slice(None), slice(None)) + tuple(slice(f, None, s) for f, s in zip(phases, stride))] = phase_out
    return out


class _DepthwiseTransposeMixin(_FastPathModule):
    """On CPU, compute a strided depthwise transposed conv as zero-stuffing plus a stride-1 depthwise conv
    in training, and by output phases (:func:`_transposed_by_phases`) without gradients.

    ``conv_transpose(x, w, stride=s, padding=k // 2)`` equals ``conv(stuff(x, s), flip(w),
    padding=k - 1 - k // 2)``. PyTorch's CPU transposed depthwise kernel is slow, above all in
    channels_last, while the stride-1 depthwise path (and its backward above) is fast.
    """

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if not (self._fast and x.device.type == "cpu"):
            return super().forward(x)
        if not torch.is_grad_enabled() and all(k >= s for k, s in zip(self.kernel_size, self.stride)):
            return _transposed_by_phases(x, self.weight, self.bias, tuple(self.stride), tuple(self.padding))
        ndim = x.dim() - 2
        flipped = self.weight.flip(tuple(range(2, 2 + ndim)))
        padding = tuple(k - 1 - p for k, p in zip(self.kernel_size, self.padding))
        stuffed = spread_zeros(x, tuple(self.stride))
        if cpu_fp32_training(x):
            return _DepthwiseConvFunction.apply(stuffed, flipped, self.bias, padding, (1,) * ndim)
        return CONV_FUNCTIONS[ndim](stuffed, flipped, self.bias, padding=padding, groups=x.shape[1])


class DepthwiseConvTranspose3d(_DepthwiseTransposeMixin, nn.ConvTranspose3d):
    """``nn.ConvTranspose3d`` (same arguments and parameters) with a faster CPU path when depthwise."""


class DepthwiseConvTranspose2d(_DepthwiseTransposeMixin, nn.ConvTranspose2d):
    """``nn.ConvTranspose2d`` (same arguments and parameters) with a faster CPU path when depthwise."""
