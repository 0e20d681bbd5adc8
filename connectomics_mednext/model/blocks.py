"""MedNeXt building blocks: inverted-bottleneck ConvNeXt units for 2D and 3D.

Every block keeps the reference's module names (``conv1``, ``norm``, ``conv2``,
``conv3``, ``res_conv``, ``grn_beta``, ``grn_gamma``) so reference state dicts load
unchanged. Kernels and strides may be per axis, which the reference does not allow.

These modules are the reference computation, written plainly. How they run fast (fused CPU
kernels, in-place inference) is :mod:`.execution`'s concern, which reads their parameters.
"""

from typing import Callable, Dict, Optional, Sequence, Tuple, Union

import torch
import torch.nn.functional as F
from torch import nn

from ..errors import look_up_option

IntOrSeq = Union[int, Sequence[int]]

CONV: Dict[str, type] = {"2d": nn.Conv2d, "3d": nn.Conv3d}
CONV_TRANSPOSE: Dict[str, type] = {"2d": nn.ConvTranspose2d, "3d": nn.ConvTranspose3d}
SPATIAL_DIMS: Dict[str, int] = {"2d": 2, "3d": 3}


def check_dim(dim: str) -> int:
    """Return the number of spatial axes of ``dim`` ('2d' or '3d').

    Args:
        dim: the spatial dimensionality name.
    """
    return look_up_option("dim", dim, SPATIAL_DIMS)


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
        look_up_option("data_format", data_format, ("channels_first", "channels_last"))
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


def _group_norm(channels: int) -> nn.Module:
    return nn.GroupNorm(num_groups=channels, num_channels=channels)


def _layer_norm(channels: int) -> nn.Module:
    return LayerNorm(channels, data_format="channels_first")


# 'group' is GroupNorm with one group per channel, as in the reference.
NORMS: Dict[str, Callable[[int], nn.Module]] = {"group": _group_norm, "layer": _layer_norm}


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


class MedNeXtBlock(nn.Module):
    """The MedNeXt block at constant resolution: depthwise conv, norm, 1x1 expand, GELU, (GRN),
    1x1 compress, (+ input).

    Args:
        in_channels: input channels (also the depthwise conv's channels).
        out_channels: output channels; must equal ``in_channels`` when ``do_res``.
        exp_r: expansion ratio of the 1x1 convolutions.
        kernel_size: depthwise kernel, an odd int or one odd int per axis.
        do_res: add the input to the output.
        norm_type: 'group' (GroupNorm with one group per channel) or 'layer'.
        n_groups: groups of the first conv; ``None`` makes it depthwise.
        dim: '2d' or '3d'.
        grn: apply global response normalisation after GELU.
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
        super().__init__()
        ndim = check_dim(dim)
        kernel = odd_kernel(kernel_size, ndim)
        if do_res and in_channels != out_channels:
            raise ValueError(f"do_res needs in_channels == out_channels, got {in_channels} and {out_channels}.")
        if not isinstance(exp_r, int) or exp_r < 1:
            raise ValueError(f"exp_r must be a positive int, got {exp_r!r}.")
        make_norm = look_up_option("norm_type", norm_type, NORMS)
        hidden = exp_r * in_channels
        self.dim = dim
        self.do_res = do_res
        self.grn = grn
        if grn:
            # Parameters precede submodules in the state_dict, as in the reference.
            self.grn_beta = nn.Parameter(torch.zeros((1, hidden) + (1,) * ndim))
            self.grn_gamma = nn.Parameter(torch.zeros((1, hidden) + (1,) * ndim))
        self.conv1 = CONV[dim](
            in_channels,
            in_channels,
            kernel_size=kernel,
            padding=tuple(k // 2 for k in kernel),
            groups=in_channels if n_groups is None else n_groups,
        )
        self.norm = make_norm(in_channels)
        self.conv2 = CONV[dim](in_channels, hidden, kernel_size=1)
        self.act = nn.GELU()
        self.conv3 = CONV[dim](hidden, out_channels, kernel_size=1)

    def branch(self, x: torch.Tensor) -> torch.Tensor:
        """The block without its shortcut.

        Args:
            x: input of shape (B, in_channels, *spatial).
        """
        x = self.act(self.conv2(self.norm(self.conv1(x))))
        if self.grn:
            x = global_response_norm(x, self.grn_gamma, self.grn_beta)
        return self.conv3(x)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.branch(x)
        return x + out if self.do_res else out


class MedNeXtDownBlock(MedNeXtBlock):
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

    # The type of the depthwise conv and of res_conv, by dim.
    resampling_conv: Dict[str, type] = CONV

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
        super().__init__(
            in_channels, out_channels, exp_r, kernel_size, do_res=False, norm_type=norm_type, dim=dim, grn=grn
        )
        # As in the reference: the constant-resolution block with its depthwise conv replaced.
        kernel = odd_kernel(kernel_size, check_dim(dim))
        self.stride = as_tuple(stride, check_dim(dim), "stride")
        conv = self.resampling_conv[dim]
        self.conv1 = conv(
            in_channels,
            in_channels,
            kernel_size=kernel,
            stride=self.stride,
            padding=tuple(k // 2 for k in kernel),
            groups=in_channels,
        )
        self.resample_do_res = do_res
        if do_res:
            self.res_conv = conv(in_channels, out_channels, kernel_size=1, stride=self.stride)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.branch(x)
        return out + self.res_conv(x) if self.resample_do_res else out


class MedNeXtUpBlock(MedNeXtDownBlock):
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

    resampling_conv: Dict[str, type] = CONV_TRANSPOSE

    def pad_at_start(self, x: torch.Tensor) -> torch.Tensor:
        """``x`` with ``stride - 1`` zeros before each spatial axis: the block's output size.

        Args:
            x: the block's (branch plus shortcut) result at size ``(n - 1) * s + 1``.
        """
        if all(s == 1 for s in self.stride):
            return x
        # F.pad lists the last axis first: (x_before, x_after, y_before, y_after, ...).
        return F.pad(x, tuple(p for s in reversed(self.stride) for p in (s - 1, 0)))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        # pad(a) + pad(b) == pad(a + b): the shortcut joins before the one padded copy.
        return self.pad_at_start(super().forward(x))


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
        self.conv_out = CONV_TRANSPOSE[dim](in_channels, n_classes, kernel_size=1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.conv_out(x)
