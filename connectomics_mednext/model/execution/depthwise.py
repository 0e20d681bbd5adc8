"""Depthwise convolution with faster CPU paths.

On CPU, PyTorch's backward for depthwise 3D convolution runs several times slower than its
forward, and its transposed depthwise kernel is slow (figures in benchmarks/README.md). Every piece can be written as
depthwise convolutions that the fast forward kernel computes:

- grad_input of a stride-1 conv is the gradient correlated with the flipped kernel;
- grad_input of a strided conv is a transposed conv of the gradient, and a transposed conv
  is, for each output phase (position modulo the stride), a small conv on the input grid;
- grad_weight is the (padded) input correlated with the gradient, which acts as a kernel the
  size of the volume; with a stride, each input phase correlates with it separately.

No multiply-add is spent on the zeros a stride would otherwise insert. The results equal
PyTorch's up to float rounding.
"""

import itertools
from typing import Iterator, List, Optional, Tuple

import torch
import torch.nn.functional as F
from torch import nn
from torch.autograd.function import once_differentiable

from .layout import memory_format_of

CONV_FUNCTIONS = {2: F.conv2d, 3: F.conv3d}


def _as_kernel(x: torch.Tensor, b: int) -> torch.Tensor:
    """Sample ``b`` of a (B, C, *spatial) tensor as a contiguous (C, 1, *spatial) conv weight.

    Copied one leading-axis plane at a time: from channels-last, a single copy measured slower.
    """
    sample = x[b]
    kernel = torch.empty((sample.shape[0], 1) + sample.shape[1:], dtype=x.dtype, device=x.device)
    for plane in range(sample.shape[1]):
        kernel[:, 0, plane].copy_(sample[:, plane])
    return kernel


def _zero_padded(x: torch.Tensor, pads: List[Tuple[int, int]]) -> torch.Tensor:
    """``x`` with (before, after) zeros per spatial axis (F.pad lists the last axis first)."""
    return F.pad(x, tuple(v for pair in reversed(pads) for v in pair))


def _conv_with_pads(x: torch.Tensor, weight: torch.Tensor, bias, pads: List[Tuple[int, int]]) -> torch.Tensor:
    """Depthwise conv of ``x`` with (before, after) zero padding per axis, for small kernels.

    Symmetric padding is left to the conv, which saves F.pad's copy of the input. Not for
    volume-sized kernels: there oneDNN's padded conv takes a scratch buffer several times the
    input's size (see benchmarks/README.md).
    """
    conv = CONV_FUNCTIONS[x.dim() - 2]
    if all(before == after >= 0 for before, after in pads):
        return conv(x, weight, bias, padding=tuple(before for before, _ in pads), groups=x.shape[1])
    return conv(_zero_padded(x, pads), weight, bias, groups=x.shape[1])


def _phase_taps(phase: int, stride: int, kernel: int, padding: int) -> Tuple[slice, int]:
    """For outputs ``phase + stride * t`` of a transposed conv along one axis: the kernel taps that reach
    them (a slice, to be reversed) and how many input voxels before ``t`` the first tap reads."""
    first = (phase + padding) % stride
    taps = (kernel - 1 - first) // stride + 1
    reach = (phase + padding - first) // stride  # the input offset of tap ``first``
    return slice(first, first + (taps - 1) * stride + 1, stride), taps - 1 - reach


def _transposed_phases(in_size, out_size, kernel, stride, padding) -> Iterator[Tuple[tuple, tuple, list]]:
    """For each output phase of a depthwise transposed conv with odd kernels ``>= stride``: the output
    slices, the kernel taps (per axis, to be flipped) and the input's (before, after) zero padding."""
    for phases in itertools.product(*(range(s) for s in stride)):
        taps, before = zip(*(_phase_taps(f, s, k, p) for f, s, k, p in zip(phases, stride, kernel, padding)))
        lengths = [len(range(f, n, s)) for f, n, s in zip(phases, out_size, stride)]
        if 0 in lengths:
            continue  # this phase has no outputs (an axis of one voxel)
        counts = [len(range(t.start, t.stop, t.step)) for t in taps]
        # Zeros before, and enough after for the last output of the phase.
        pads = [(b, c - 1 - b + m - n) for b, c, m, n in zip(before, counts, lengths, in_size)]
        yield tuple(slice(f, None, s) for f, s in zip(phases, stride)), taps, pads


def _transposed_by_phases(
    x: torch.Tensor,
    weight: torch.Tensor,
    bias,
    stride: Tuple[int, ...],
    padding: Tuple[int, ...],
    size: Optional[Tuple[int, ...]] = None,
) -> torch.Tensor:
    """A depthwise transposed conv (odd kernel ``>= stride``, padding ``k // 2``) as one small depthwise
    conv per output phase, each on the input grid: ``prod(stride)`` times fewer multiply-adds than
    zero-stuffing. ``size`` is the output's (default ``(n - 1) * s + 1``; one more adds output padding)."""
    ndim = x.dim() - 2
    if size is None:
        size = tuple((n - 1) * s + 1 for n, s in zip(x.shape[2:], stride))
    out = torch.empty(x.shape[:2] + tuple(size), dtype=x.dtype, memory_format=memory_format_of(x))
    for where, taps, pads in _transposed_phases(x.shape[2:], size, weight.shape[2:], stride, padding):
        sub = weight[(slice(None), slice(None)) + taps].flip(tuple(range(2, 2 + ndim)))
        out[(slice(None), slice(None)) + where] = _conv_with_pads(x, sub, bias, pads)
    return out


def _transposed_weight_grad(x: torch.Tensor, grad: torch.Tensor, weight: torch.Tensor, stride, padding) -> torch.Tensor:
    """Weight gradient of :func:`_transposed_by_phases`: each phase's taps correlate the padded input
    with that phase of the gradient."""
    ndim = x.dim() - 2
    grad_w = torch.zeros_like(weight)
    for where, taps, pads in _transposed_phases(x.shape[2:], grad.shape[2:], weight.shape[2:], stride, padding):
        phase = grad[(slice(None), slice(None)) + where]
        for b in range(x.shape[0]):
            padded = _zero_padded(x[b : b + 1], pads)
            taps_grad = CONV_FUNCTIONS[ndim](padded, _as_kernel(phase, b), groups=x.shape[1])[0]
            grad_w[(slice(None), 0) + taps] += taps_grad.flip(tuple(range(1, 1 + ndim)))
    return grad_w


def _weight_grad(x: torch.Tensor, grad: torch.Tensor, kernel: Tuple[int, ...], stride, padding) -> torch.Tensor:
    """Weight gradient of a depthwise conv: the padded input correlated with the gradient as a kernel.

    With a stride, tap ``s * q + r`` only meets input phase ``r``: each input phase is correlated
    with the gradient on its own grid.
    """
    ndim = x.dim() - 2
    conv = CONV_FUNCTIONS[ndim]
    channels = x.shape[1]
    grad_w = x.new_zeros((channels, 1) + tuple(kernel))
    for b in range(x.shape[0]):
        grad_kernel = _as_kernel(grad, b)
        # F.pad, not the conv's padding, for the reason in _conv_with_pads.
        padded = _zero_padded(x[b : b + 1], [(p, p) for p in padding])
        for phases in itertools.product(*(range(s) for s in stride)):
            counts = [len(range(r, k, s)) for r, k, s in zip(phases, kernel, stride)]
            if 0 in counts:
                continue
            phase_input = padded[(slice(None), slice(None)) + tuple(slice(r, None, s) for r, s in zip(phases, stride))]
            taps_grad = conv(phase_input, grad_kernel, groups=channels)[0]
            grad_w[(slice(None), 0) + tuple(slice(r, None, s) for r, s in zip(phases, stride))] += taps_grad[
                (slice(None),) + tuple(slice(0, c) for c in counts)
            ]
    return grad_w


def _input_grad(
    grad: torch.Tensor, weight: torch.Tensor, size: Tuple[int, ...], stride, padding, transposed: bool
) -> torch.Tensor:
    """Input gradient of a depthwise conv (or transposed conv) of an input of spatial ``size``.

    The adjoint of a transposed conv is the strided conv; that of a strided conv is the transposed
    conv, out to the input's size; that of a stride-1 conv is the conv with the flipped kernel.
    """
    ndim = grad.dim() - 2
    conv = CONV_FUNCTIONS[ndim]
    if transposed:
        return conv(grad, weight, stride=stride, padding=padding, groups=grad.shape[1])
    if any(s > 1 for s in stride):
        return _transposed_by_phases(grad, weight, None, stride, padding, size=size)
    return conv(grad, weight.flip(tuple(range(2, 2 + ndim))), padding=padding, groups=grad.shape[1])


class _DepthwiseConvFunction(torch.autograd.Function):
    """A depthwise conv or transposed conv (odd kernel ``>= stride``, padding ``k // 2``) whose
    backward is depthwise convs; the transposed one runs by output phases."""

    @staticmethod
    def forward(ctx, x, weight, bias, stride: Tuple[int, ...], padding: Tuple[int, ...], transposed: bool):
        ctx.save_for_backward(x, weight)
        ctx.stride = stride
        ctx.padding = padding
        ctx.transposed = transposed
        ctx.has_bias = bias is not None
        if transposed:
            return _transposed_by_phases(x, weight, bias, stride, padding)
        return CONV_FUNCTIONS[x.dim() - 2](x, weight, bias, stride=stride, padding=padding, groups=x.shape[1])

    @staticmethod
    @once_differentiable
    def backward(ctx, grad: torch.Tensor):
        x, weight = ctx.saved_tensors
        grad_x = grad_w = grad_b = None
        if ctx.has_bias and ctx.needs_input_grad[2]:
            grad_b = grad.sum(dim=(0,) + tuple(range(2, grad.dim())))
        if ctx.needs_input_grad[0]:
            grad_x = _input_grad(grad, weight, tuple(x.shape[2:]), ctx.stride, ctx.padding, ctx.transposed)
        if ctx.needs_input_grad[1]:
            if ctx.transposed:
                grad_w = _transposed_weight_grad(x, grad, weight, ctx.stride, ctx.padding)
            else:
                grad_w = _weight_grad(x, grad, weight.shape[2:], ctx.stride, ctx.padding)
        return grad_x, grad_w, grad_b, None, None, None


def cpu_fp32_training(x: torch.Tensor) -> bool:
    """Whether ``x`` is a float32 CPU tensor whose forward pass records gradients, without autocast."""
    return (
        x.device.type == "cpu"
        and x.dtype == torch.float32
        and torch.is_grad_enabled()
        and not torch.is_autocast_enabled("cpu")
    )


def fits_fast_path(conv: nn.Module) -> bool:
    """Whether ``conv`` is depthwise, undilated and zero-padded, with odd kernels no smaller than the
    stride, padding ``k // 2`` and no output padding: the convs :class:`_DepthwiseConvFunction` computes."""
    return (
        conv.groups == conv.in_channels == conv.out_channels
        and all(d == 1 for d in conv.dilation)
        and conv.padding_mode == "zeros"
        and all(o == 0 for o in conv.output_padding)
        and all(k % 2 == 1 and p == k // 2 and k >= s for p, k, s in zip(conv.padding, conv.kernel_size, conv.stride))
    )


def depthwise_conv(conv: nn.Module, x: torch.Tensor) -> torch.Tensor:
    """``conv(x)`` for a depthwise ``nn.Conv2d``/``nn.Conv3d`` or ``nn.ConvTranspose2d``/``3d``, faster on CPU.

    Float32 CPU training runs through :class:`_DepthwiseConvFunction` (a backward made of depthwise
    convs); a transposed conv on CPU always runs by output phases, because PyTorch's CPU transposed
    depthwise kernel is slow, above all in channels-last, and spends most of its multiply-adds on
    the zeros a stride inserts. Anything else is ``conv(x)``.

    Args:
        conv: the module whose parameters and settings are used.
        x: its input.
    """
    if not (x.device.type == "cpu" and fits_fast_path(conv)):
        return conv(x)
    stride, padding = tuple(conv.stride), tuple(conv.padding)
    if cpu_fp32_training(x):
        return _DepthwiseConvFunction.apply(x, conv.weight, conv.bias, stride, padding, conv.transposed)
    if conv.transposed:
        return _transposed_by_phases(x, conv.weight, conv.bias, stride, padding)
    return conv(x)
