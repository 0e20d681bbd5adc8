"""The pointwise half of a MedNeXt block, fused over cache-sized row tiles on CPU.

After the depthwise conv, a block is per-voxel work: per-channel norm, 1x1 expand, GELU, 1x1
compress, plus a residual. Run op by op, each step writes a full tensor, up to ``exp_r`` times
the block's channels, and reads it back; on a CPU that is memory traffic and page faults, not
arithmetic. A channels-last tensor is a (voxels, C) matrix, so the whole chain runs on tiles of
rows that stay in cache, and only the block's input and output touch memory.

For training, the backward recomputes the tile's expansion and GELU instead of saving them, so
the chain keeps one (voxels, C) tensor for backward where op-by-op autograd keeps
``2C + 2 * exp_r * C`` values per voxel. The norm's statistics are exact two-pass ones, as in
:mod:`.norm`.
"""

from typing import Optional, Tuple

import torch
import torch.nn.functional as F
from torch.autograd.function import once_differentiable

from .layout import CHANNELS_LAST, is_channels_last

# Rows (voxels) per tile: 4096 x (exp_r * C) floats stay within a core's L2 for MedNeXt's widths.
TILE_ROWS = 4096
# Without a backward to share the cache with, twice as many rows measured faster (benchmarks/README.md).
INFERENCE_TILE_ROWS = 8192


def _rows(x: torch.Tensor) -> torch.Tensor:
    """A channels-last (B, C, *spatial) tensor as its (B, voxels, C) matrix view."""
    return x.movedim(1, -1).reshape(x.shape[0], -1, x.shape[1])


def _tiles(count: int, rows: Optional[int] = None):
    rows = rows or TILE_ROWS
    return [slice(start, min(start + rows, count)) for start in range(0, count, rows)]


def _channel_stats(
    rows: torch.Tensor, eps: float, centre: bool = False, tile_rows: Optional[int] = None
) -> Tuple[torch.Tensor, torch.Tensor]:
    """Per-channel mean and 1 / std of a (voxels, C) matrix, in two passes (exact for large means).

    Args:
        rows: the matrix.
        eps: added to the variance.
        centre: subtract the mean from ``rows`` in place on the second pass (no autograd).
        tile_rows: rows per tile of the second pass (default :data:`TILE_ROWS`).
    """
    mean = rows.mean(0)
    square_sum = torch.zeros_like(mean)
    for tile in _tiles(rows.shape[0], tile_rows):
        if centre:
            square_sum += rows[tile].sub_(mean).square().sum(0)
        else:
            square_sum += (rows[tile] - mean).square_().sum(0)
    return mean, torch.rsqrt(square_sum / rows.shape[0] + eps)


def _compress_into(
    target: torch.Tensor, hidden: torch.Tensor, w3t: torch.Tensor, b3: torch.Tensor, shortcut: Optional[torch.Tensor]
) -> None:
    """``target = hidden @ w3t + b3 (+ shortcut)``; ``shortcut`` may be (a view of) ``target`` itself."""
    if shortcut is None:
        torch.addmm(b3, hidden, w3t, out=target)
    elif shortcut.data_ptr() == target.data_ptr():
        target.addmm_(hidden, w3t).add_(b3)
    else:
        torch.addmm(shortcut, hidden, w3t, out=target).add_(b3)


class _FusedPointwise(torch.autograd.Function):
    """The autograd form. The norm's scale rides on the expansion weight here too:
    ``W (g * (y - m) * r + beta) + b == (W * g * r)(y - m) + (W beta + b)``, so no tile ever holds
    the normalised tensor, and the backward gets the norm's and the expansion's gradients from
    two small sums per tile (the expansion's gradient against the centred rows, and its column
    sums) instead of from per-tile products."""

    @staticmethod
    def forward(ctx, y, residual, norm_weight, norm_bias, w2, b2, w3, b3, eps):
        out = torch.empty((y.shape[0], w3.shape[0]) + y.shape[2:], dtype=y.dtype, memory_format=CHANNELS_LAST[y.dim()])
        y_rows, out_rows = _rows(y), _rows(out)
        res_rows = None if residual is None else _rows(residual.contiguous(memory_format=CHANNELS_LAST[y.dim()]))
        w3t = w3.t()
        shift = torch.addmv(b2, w2, norm_bias)
        means, rstds = [], []
        for b in range(y.shape[0]):
            rows = y_rows[b]
            mean, rstd = _channel_stats(rows, eps)
            means.append(mean)
            rstds.append(rstd)
            w2t = (w2 * (norm_weight * rstd)).t()
            for tile in _tiles(rows.shape[0]):
                hidden = F.gelu(torch.addmm(shift, rows[tile] - mean, w2t))
                _compress_into(out_rows[b, tile], hidden, w3t, b3, None if res_rows is None else res_rows[b, tile])
        ctx.save_for_backward(y, norm_weight, norm_bias, w2, b2, w3, torch.stack(means), torch.stack(rstds))
        ctx.has_residual = residual is not None
        return out

    @staticmethod
    @once_differentiable
    def backward(ctx, grad):
        y, norm_weight, norm_bias, w2, b2, w3, means, rstds = ctx.saved_tensors
        grad = grad.contiguous(memory_format=CHANNELS_LAST[y.dim()])
        y_rows, grad_rows = _rows(y), _rows(grad)
        grad_y = torch.empty_like(y)
        grad_y_rows = _rows(grad_y)
        grads = {
            name: torch.zeros_like(t)
            for name, t in (("w2", w2), ("b2", b2), ("w3", w3), ("norm_weight", norm_weight), ("norm_bias", norm_bias))
        }
        shift = torch.addmv(b2, w2, norm_bias)
        count = y_rows.shape[1]
        for b in range(y.shape[0]):
            rows, g_rows, mean, rstd = y_rows[b], grad_rows[b], means[b], rstds[b]
            scale = norm_weight * rstd
            scaled_w2 = w2 * scale
            # Sums over the voxels: grad_pre^T (y - m), and grad_pre's column sums.
            pre_by_centred = torch.zeros_like(w2)
            pre_sum = torch.zeros_like(b2)
            for tile in _tiles(count):
                centred = rows[tile] - mean
                pre = torch.addmm(shift, centred, scaled_w2.t())
                g = g_rows[tile]
                grads["w3"].addmm_(g.t(), F.gelu(pre))
                grad_pre = torch.ops.aten.gelu_backward(g @ w3, pre)
                pre_by_centred.addmm_(grad_pre.t(), centred)
                pre_sum += grad_pre.sum(0)
                # scale * dt, where dt = grad_pre @ w2 is the gradient at the norm's output.
                torch.mm(grad_pre, scaled_w2, out=grad_y_rows[b, tile])
            # With t = g * (y - m) * r + beta: sum(dt) = pre_sum @ w2, and
            # sum(dt * (y - m) * r) = r * (w2 * pre_by_centred).sum(0).
            sum_dt = pre_sum @ w2
            sum_dt_xhat = rstd * (w2 * pre_by_centred).sum(0)
            grads["w2"] += pre_by_centred * scale + torch.outer(pre_sum, norm_bias)
            grads["b2"] += pre_sum
            grads["norm_bias"] += sum_dt
            grads["norm_weight"] += sum_dt_xhat
            # d/dy = scale * (dt - mean(dt) - xhat * mean(dt * xhat)); grad_y holds scale * dt.
            offset = scale * sum_dt / count
            slope = scale * rstd * sum_dt_xhat / count
            for tile in _tiles(count):
                grad_y_rows[b, tile].sub_(offset).addcmul_(rows[tile] - mean, slope, value=-1.0)
        grad_b3 = grad_rows.sum((0, 1))
        return (
            grad_y,
            grad if ctx.has_residual else None,
            grads["norm_weight"],
            grads["norm_bias"],
            grads["w2"],
            grads["b2"],
            grads["w3"],
            grad_b3,
            None,
        )


def can_fuse(y: torch.Tensor) -> bool:
    """Whether :func:`fused_pointwise` can take ``y``: a channels-last float32 CPU tensor outside autocast."""
    return (
        y.device.type == "cpu"
        and y.dtype == torch.float32
        and is_channels_last(y)
        and not torch.is_autocast_enabled("cpu")
    )


def fused_pointwise_inference(
    y: torch.Tensor,
    shortcut: Optional[torch.Tensor],
    norm: torch.nn.GroupNorm,
    conv2: torch.nn.Module,
    conv3: torch.nn.Module,
    into_shortcut: bool = False,
    extra_bias: Optional[torch.Tensor] = None,
) -> torch.Tensor:
    """:func:`fused_pointwise` without autograd, with fewer passes over memory.

    The rows of ``y`` are centred in place while the variance is summed, and the norm's scale
    rides on the expansion weight, so each tile is one matrix product, GELU and a second product.
    The centring keeps the statistics exact; folding the scale only reorders a product.

    Args:
        y: the depthwise conv's output, channels-last (see :func:`can_fuse`). It is overwritten.
        shortcut: added to the result (same shape as it), or None.
        norm: a GroupNorm with one group per channel.
        conv2: the 1x1 expansion conv.
        conv3: the 1x1 compression conv.
        into_shortcut: write the result into ``shortcut`` (the caller no longer needs it) instead
            of a new tensor, when the shortcut is channels-last.
        extra_bias: added to ``conv3``'s bias (a shortcut's bias, folded in to save a pass).
    """
    w2 = conv2.weight.flatten(1)
    w3t = conv3.weight.flatten(1).t()
    b3 = conv3.bias if extra_bias is None else conv3.bias + extra_bias
    if into_shortcut and shortcut is not None and is_channels_last(shortcut):
        out = shortcut
    else:
        out = torch.empty((y.shape[0], w3t.shape[1]) + y.shape[2:], dtype=y.dtype, memory_format=CHANNELS_LAST[y.dim()])
        if shortcut is not None:
            shortcut = shortcut.contiguous(memory_format=CHANNELS_LAST[y.dim()])
    y_rows, out_rows = _rows(y), _rows(out)
    shortcut_rows = None if shortcut is None else _rows(shortcut)
    # W (g * (y - m) * r + beta) + b == (W * g * r)(y - m) + (W beta + b).
    shift = torch.addmv(conv2.bias, w2, norm.bias)
    for b in range(y.shape[0]):
        rows = y_rows[b]
        _, rstd = _channel_stats(rows, norm.eps, centre=True, tile_rows=INFERENCE_TILE_ROWS)
        w2t = (w2 * (norm.weight * rstd)).t()
        for tile in _tiles(rows.shape[0], INFERENCE_TILE_ROWS):
            hidden = F.gelu(torch.addmm(shift, rows[tile], w2t))
            _compress_into(
                out_rows[b, tile], hidden, w3t, b3, None if shortcut_rows is None else shortcut_rows[b, tile]
            )
    return out


def fused_pointwise(
    y: torch.Tensor,
    residual: Optional[torch.Tensor],
    norm: torch.nn.GroupNorm,
    conv2: torch.nn.Module,
    conv3: torch.nn.Module,
) -> torch.Tensor:
    """``conv3(gelu(conv2(norm(y)))) + residual`` on row tiles; the same math as the modules.

    Args:
        y: the depthwise conv's output, channels-last (see :func:`can_fuse`).
        residual: added to the result (same shape as it), or None.
        norm: a GroupNorm with one group per channel.
        conv2: the 1x1 expansion conv.
        conv3: the 1x1 compression conv.
    """
    return _FusedPointwise.apply(
        y,
        residual,
        norm.weight,
        norm.bias,
        conv2.weight.flatten(1),
        conv2.bias,
        conv3.weight.flatten(1),
        conv3.bias,
        norm.eps,
    )
