"""MedNeXt building blocks: inverted-bottleneck ConvNeXt units for 2D and 3D.

Every block keeps the reference's module names (``conv1``, ``norm``, ``conv2``,
``conv3``, ``res_conv``, ``grn_beta``, ``grn_gamma``) so reference state dicts load
unchanged. Kernels and strides may be per axis, which the reference does not allow.
"""
from typing import Callable, Dict, Optional, Sequence, Tuple, Union

import torch
import torch.nn.functional as F
from torch import nn

from .depthwise import (
    DepthwiseConv2d,
    DepthwiseConv3d,
    DepthwiseConvTranspose2d,
    DepthwiseConvTranspose3d,
)
from .fused import can_fuse, fused_pointwise, fused_pointwise_inference
from .layout import is_channels_last
from .norm import PerChannelGroupNorm
from .pointwise import (
    PointwiseConv2d,
    PointwiseConv3d,
    PointwiseConvTranspose2d,
    PointwiseConvTranspose3d,
)

IntOrSeq = Union[int, Sequence[int]]

DEPTHWISE_CONV: Dict[str, type] = {"2d": DepthwiseConv2d, "3d": DepthwiseConv3d}
DEPTHWISE_CONV_TRANSPOSE: Dict[str, type] = {"2d": DepthwiseConvTranspose2d, "3d": DepthwiseConvTranspose3d}
POINTWISE_CONV: Dict[str, type] = {"2d": PointwiseConv2d, "3d": PointwiseConv3d}
POINTWISE_CONV_TRANSPOSE: Dict[str, type] = {"2d": PointwiseConvTranspose2d, "3d": PointwiseConvTranspose3d}
SPATIAL_DIMS: Dict[str, int] = {"2d": 2, "3d": 3}


def check_dim(dim: str) -> int:
    """Return the number of spatial axes of ``dim`` ('2d' or '3d').

    Args:
        dim: the spatial dimensionality name.
    """
    if dim not in SPATIAL_DIMS:
        raise ValueError(f"dim must be one of {sorted(SPATIAL_DIMS)}, got {dim!r}.")
    return SPATIAL_DIMS[dim]


def as_tuple(value: IntOrSeq, ndim: int, name: str) -> Tuple[int, ...]:
    """Expand an int to ``ndim`` values, or check a per-axis sequence has ``ndim`` values.

    Args:
        value: an int or one int per spatial axis.
        ndim: number of spatial axes.
        name: argument name used in the error message.
    """
    if isinstance(value, int) and not isinstance(value, bool):
        return (value,) * ndim
    values = tuple(value)
    if len(values) != ndim or not all(isinstance(v, int) and not isinstance(v, bool) for v in values):
        raise ValueError(f"{name} must be an int or {ndim} ints (one per spatial axis), got {value!r}.")
    return values


def odd_kernel(kernel_size: IntOrSeq, ndim: int, name: str = "kernel_size") -> Tuple[int, ...]:
    """Return a per-axis kernel after checking every entry is a positive odd int.

    Odd kernels with padding ``k // 2`` keep the spatial size, which the skip additions need.

    Args:
        kernel_size: an int or one int per spatial axis.
        ndim: number of spatial axes.
        name: argument name used in the error message.
    """
    kernel = as_tuple(kernel_size, ndim, name)
    if any(k < 1 or k % 2 == 0 for k in kernel):
        raise ValueError(f"{name} must hold positive odd sizes (1, 3, 5, 7, ...), got {kernel_size!r}.")
    return kernel


class LayerNorm(nn.Module):
    """LayerNorm over the channel axis of a channels-first tensor of any spatial rank.

    Args:
        normalized_shape: number of channels.
        eps: added to the variance for numerical stability.
        data_format: only ``'channels_first'`` is meaningful here; ``'channels_last'``
            falls back to :func:`torch.nn.functional.layer_norm` on the last axis.
    """

    def __init__(self, normalized_shape: int, eps: float = 1e-5, data_format: str = "channels_first") -> None:
        super().__init__()
        if data_format not in ("channels_first", "channels_last"):
            raise ValueError(f"data_format must be 'channels_first' or 'channels_last', got {data_format!r}.")
        self.weight = nn.Parameter(torch.ones(normalized_shape))
        self.bias = nn.Parameter(torch.zeros(normalized_shape))
        self.eps = eps
        self.data_format = data_format
        self.normalized_shape = (normalized_shape,)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.data_format == "channels_last":
            return F.layer_norm(x, self.normalized_shape, self.weight, self.bias, self.eps)
        mean = x.mean(1, keepdim=True)
        centred = x - mean
        var = centred.pow(2).mean(1, keepdim=True)
        affine_shape = (1, -1) + (1,) * (x.dim() - 2)
        scale = self.weight.view(affine_shape) * torch.rsqrt(var + self.eps)
        return torch.addcmul(self.bias.view(affine_shape), centred, scale)


def _layer_norm(channels: int) -> nn.Module:
    return LayerNorm(channels, data_format="channels_first")


# 'group' is GroupNorm with one group per channel, as in the reference.
NORMS: Dict[str, Callable[[int], nn.Module]] = {"group": PerChannelGroupNorm, "layer": _layer_norm}


def global_response_norm(x: torch.Tensor, gamma: torch.Tensor, beta: torch.Tensor) -> torch.Tensor:
    """ConvNeXt-V2 GRN on a channels-first tensor: ``gamma * (x * nx) + beta + x``.

    ``gx`` is the L2 norm of each channel over space and ``nx = gx / (mean_c gx + 1e-6)``.

    Args:
        x: tensor of shape (B, C, *spatial).
        gamma: scale of shape (1, C, 1, ...).
        beta: shift of shape (1, C, 1, ...).
    """
    spatial = tuple(range(2, x.dim()))
    gx = torch.linalg.vector_norm(x, ord=2, dim=spatial, keepdim=True)
    nx = gx / (gx.mean(dim=1, keepdim=True) + 1e-6)
    # x * (gamma * nx + 1) + beta folds the two products into one pass over x.
    return torch.addcmul(beta, x, torch.addcmul(torch.ones_like(nx), gamma, nx))


class _InvertedBottleneck(nn.Module):
    """Depthwise conv -> norm -> 1x1 expand -> GELU -> (GRN) -> 1x1 compress.

    Args:
        depthwise: the first, depthwise (possibly strided or transposed) convolution.
        in_channels: channels entering the block.
        out_channels: channels leaving the block.
        exp_r: expansion ratio of the 1x1 convolutions.
        norm_type: a key of ``NORMS``.
        dim: '2d' or '3d'.
        grn: whether to apply global response normalisation after GELU.
    """

    def __init__(
        self,
        depthwise: nn.Module,
        in_channels: int,
        out_channels: int,
        exp_r: int,
        norm_type: str,
        dim: str,
        grn: bool,
    ) -> None:
        super().__init__()
        ndim = check_dim(dim)
        if norm_type not in NORMS:
            raise ValueError(f"norm_type must be one of {sorted(NORMS)}, got {norm_type!r}.")
        if not isinstance(exp_r, int) or exp_r < 1:
            raise ValueError(f"exp_r must be a positive int, got {exp_r!r}.")
        conv = POINTWISE_CONV[dim]
        hidden = exp_r * in_channels
        self.dim = dim
        self.grn = grn
        if grn:
            # Parameters precede submodules in the state_dict, as in the reference.
            param_shape = (1, hidden) + (1,) * ndim
            self.grn_beta = nn.Parameter(torch.zeros(param_shape))
            self.grn_gamma = nn.Parameter(torch.zeros(param_shape))
        self.conv1 = depthwise
        self.norm = NORMS[norm_type](in_channels)
        self.conv2 = conv(in_channels, hidden, kernel_size=1)
        self.act = nn.GELU()
        self.conv3 = conv(hidden, out_channels, kernel_size=1)
        # GRN needs statistics of the whole expanded tensor, so it cannot run tile by tile.
        self._fusable = not grn and type(self.norm) is PerChannelGroupNorm

    def transform(self, x: torch.Tensor, shortcut: Optional[torch.Tensor] = None,
                  into_shortcut: bool = False) -> torch.Tensor:
        """The block's branch, plus ``shortcut`` when given.

        Args:
            x: the block's input.
            shortcut: what the block adds to its branch (its input, or a 1x1 conv of it).
            into_shortcut: without autograd, the result may be written into ``shortcut``, which
                the caller no longer needs.
        """
        return self._after_depthwise(self.conv1(x), shortcut, into_shortcut)

    def _fuses_inference(self, y: torch.Tensor) -> bool:
        return self._fusable and can_fuse(y) and not torch.is_grad_enabled()

    def _after_depthwise(self, y: torch.Tensor, shortcut: Optional[torch.Tensor], into_shortcut: bool) -> torch.Tensor:
        if self._fusable and can_fuse(y):
            if not torch.is_grad_enabled():
                return fused_pointwise_inference(y, shortcut, self.norm, self.conv2, self.conv3, into_shortcut)
            return fused_pointwise(y, shortcut, self.norm, self.conv2, self.conv3)
        y = self.act(self.conv2(self.norm(y)))
        if self.grn:
            y = global_response_norm(y, self.grn_gamma, self.grn_beta)
        y = self.conv3(y)
        return y if shortcut is None else y + shortcut


class MedNeXtBlock(_InvertedBottleneck):
    """The MedNeXt block at constant resolution.

    Args:
        in_channels: input channels (also the depthwise conv's channels).
        out_channels: output channels; must equal ``in_channels`` when ``do_res``.
        exp_r: expansion ratio.
        kernel_size: depthwise kernel, an odd int or one odd int per axis.
        do_res: add the input to the output.
        norm_type: 'group' (GroupNorm with one group per channel) or 'layer'.
        n_groups: groups of the first conv; ``None`` makes it depthwise.
        dim: '2d' or '3d'.
        grn: apply GRN after GELU.
    """

    def __init__(
        self,
        in_channels: int,
        out_channels: int,
        exp_r: int = 4,
        kernel_size: IntOrSeq = 7,
        do_res: bool = True,
        norm_type: str = "group",
        n_groups: Optional[int] = None,
        dim: str = "3d",
        grn: bool = False,
    ) -> None:
        kernel = odd_kernel(kernel_size, check_dim(dim))
        if do_res and in_channels != out_channels:
            raise ValueError(
                f"do_res needs in_channels == out_channels, got {in_channels} and {out_channels}."
            )
        depthwise = DEPTHWISE_CONV[dim](
            in_channels,
            in_channels,
            kernel_size=kernel,
            padding=tuple(k // 2 for k in kernel),
            groups=in_channels if n_groups is None else n_groups,
        )
        super().__init__(depthwise, in_channels, out_channels, exp_r, norm_type, dim, grn)
        self.do_res = do_res

    def forward(self, x: torch.Tensor, overwrite_input: bool = False) -> torch.Tensor:
        """Apply the block.

        Args:
            x: input of shape (B, in_channels, *spatial).
            overwrite_input: without autograd, the result may be written over ``x``, which saves
                an allocation and a copy when the caller no longer needs ``x``.
        """
        return self.transform(x, x if self.do_res else None, into_shortcut=overwrite_input)


class MedNeXtDownBlock(_InvertedBottleneck):
    """A MedNeXt block whose depthwise conv is strided: halves (or keeps) each axis.

    Args:
        in_channels: input channels.
        out_channels: output channels.
        exp_r: expansion ratio.
        kernel_size: depthwise kernel, an odd int or one odd int per axis.
        do_res: add a strided 1x1 conv of the input (``res_conv``).
        norm_type: 'group' or 'layer'.
        dim: '2d' or '3d'.
        grn: apply GRN after GELU.
        stride: downsampling factor, an int or one int per axis (1 keeps an axis).
    """

    def __init__(
        self,
        in_channels: int,
        out_channels: int,
        exp_r: int = 4,
        kernel_size: IntOrSeq = 7,
        do_res: bool = False,
        norm_type: str = "group",
        dim: str = "3d",
        grn: bool = False,
        stride: IntOrSeq = 2,
    ) -> None:
        ndim = check_dim(dim)
        kernel = odd_kernel(kernel_size, ndim)
        strides = as_tuple(stride, ndim, "stride")
        depthwise = DEPTHWISE_CONV[dim](
            in_channels,
            in_channels,
            kernel_size=kernel,
            stride=strides,
            padding=tuple(k // 2 for k in kernel),
            groups=in_channels,
        )
        super().__init__(depthwise, in_channels, out_channels, exp_r, norm_type, dim, grn)
        self.resample_do_res = do_res
        if do_res:
            self.res_conv = POINTWISE_CONV[dim](in_channels, out_channels, kernel_size=1, stride=strides)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        # The shortcut is this block's own tensor, free to hold the result.
        return self.transform(x, self.res_conv(x) if self.resample_do_res else None, into_shortcut=True)


class MedNeXtUpBlock(_InvertedBottleneck):
    """A MedNeXt block whose depthwise conv is transposed and strided: doubles (or keeps) each axis.

    A transposed conv with odd kernel ``k``, stride ``s`` and padding ``k // 2`` maps ``n``
    voxels to ``(n - 1) * s + 1``. As in the reference, the missing ``s - 1`` voxels are
    zeros added at the *start* of each axis; trained weights depend on that placement.

    Args:
        in_channels: input channels.
        out_channels: output channels.
        exp_r: expansion ratio.
        kernel_size: depthwise kernel, an odd int or one odd int per axis.
        do_res: add a transposed strided 1x1 conv of the input (``res_conv``).
        norm_type: 'group' or 'layer'.
        dim: '2d' or '3d'.
        grn: apply GRN after GELU.
        stride: upsampling factor, an int or one int per axis (1 keeps an axis).
    """

    def __init__(
        self,
        in_channels: int,
        out_channels: int,
        exp_r: int = 4,
        kernel_size: IntOrSeq = 7,
        do_res: bool = False,
        norm_type: str = "group",
        dim: str = "3d",
        grn: bool = False,
        stride: IntOrSeq = 2,
    ) -> None:
        ndim = check_dim(dim)
        kernel = odd_kernel(kernel_size, ndim)
        strides = as_tuple(stride, ndim, "stride")
        depthwise = DEPTHWISE_CONV_TRANSPOSE[dim](
            in_channels,
            in_channels,
            kernel_size=kernel,
            stride=strides,
            padding=tuple(k // 2 for k in kernel),
            groups=in_channels,
        )
        super().__init__(depthwise, in_channels, out_channels, exp_r, norm_type, dim, grn)
        self.resample_do_res = do_res
        if do_res:
            self.res_conv = POINTWISE_CONV_TRANSPOSE[dim](in_channels, out_channels, kernel_size=1, stride=strides)
        # F.pad lists the last axis first: (x_before, x_after, y_before, y_after, ...).
        self._pad = tuple(p for s in reversed(strides) for p in (s - 1, 0))
        self._needs_pad = any(s > 1 for s in strides)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        # pad(a) + pad(b) == pad(a + b): the shortcut joins before the one padded copy.
        return self._padded(self.transform(x, self.res_conv(x) if self.resample_do_res else None, into_shortcut=True))

    def _padded(self, out: torch.Tensor) -> torch.Tensor:
        return F.pad(out, self._pad) if self._needs_pad else out

    def add_to(self, skip: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
        """``skip + self(x)``, the decoder's input. Without autograd it is computed into ``skip``.

        Without autograd on CPU, the block's output is added straight into the part of ``skip``
        that the padding leaves, and the strided ``res_conv`` adds its bias through the branch's
        last bias and its product only at the voxels its stride reaches: no padded copy and no
        mostly-zero shortcut tensor.

        Args:
            skip: the encoder's tensor at this block's output size. Overwritten without autograd.
            x: the block's input.
        """
        if torch.is_grad_enabled():
            return skip + self(x)
        y = self.conv1(x)
        if self._fuses_inference(y) and is_channels_last(skip):
            fold_bias = self.resample_do_res and self.res_conv.bias is not None
            out = fused_pointwise_inference(y, None, self.norm, self.conv2, self.conv3,
                                            extra_bias=self.res_conv.bias if fold_bias else None)
            if self.resample_do_res:
                self.res_conv.add_product_to(out, x)
        else:
            out = self._after_depthwise(y, self.res_conv(x) if self.resample_do_res else None, into_shortcut=True)
        if out.dtype != skip.dtype:
            # Under autocast the plain sum promotes; an in-place one would round to the skip's dtype.
            return skip + self._padded(out)
        # The reference's padding puts the missing voxels at the start of each axis.
        interior = (slice(None), slice(None)) + tuple(slice(s - 1, None) for s in self.conv1.stride)
        skip[interior] += out
        return skip


class OutBlock(nn.Module):
    """A 1x1 transposed-conv segmentation head (transposed only to match reference weights).

    Args:
        in_channels: input channels.
        n_classes: output channels.
        dim: '2d' or '3d'.
    """

    def __init__(self, in_channels: int, n_classes: int, dim: str) -> None:
        super().__init__()
        check_dim(dim)
        self.conv_out = POINTWISE_CONV_TRANSPOSE[dim](in_channels, n_classes, kernel_size=1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.conv_out(x)
