"""MedNeXt v1 sizes S/B/M/L (``MODEL.MEDNEXT_SIZE``) and the reference factory ``create_mednext_v1``.

The reference calls a size a "model id" (``create_mednext_v1``'s third argument); here it is a
size everywhere, as in the config key.
"""

from typing import Any, Dict, Optional, Sequence, Union

from ..errors import look_up_option
from .mednext import MedNeXt

# Every size uses 32 base channels, GroupNorm and all residual connections.
SIZES: Dict[str, Dict[str, Any]] = {
    "S": dict(exp_r=2, block_counts=[2] * 9, checkpoint_style=None),
    "B": dict(exp_r=[2, 3, 4, 4, 4, 4, 4, 3, 2], block_counts=[2] * 9, checkpoint_style=None),
    "M": dict(
        exp_r=[2, 3, 4, 4, 4, 4, 4, 3, 2],
        block_counts=[3, 4, 4, 4, 4, 4, 4, 4, 3],
        checkpoint_style="outside_block",
    ),
    "L": dict(
        exp_r=[3, 4, 8, 8, 8, 8, 8, 4, 3],
        block_counts=[3, 4, 8, 8, 8, 8, 8, 4, 3],
        checkpoint_style="outside_block",
    ),
}
SIZE_COMMON: Dict[str, Any] = dict(n_channels=32, do_res=True, do_res_up_down=True, norm_type="group")


def size_kwargs(size: str) -> Dict[str, Any]:
    """The MedNeXt keyword arguments of size ``size``.

    Args:
        size: 'S', 'B', 'M' or 'L'.
    """
    return {**SIZE_COMMON, **look_up_option("size", size, SIZES)}


def create_mednext_v1(
    num_input_channels: Optional[int] = None,
    num_classes: Optional[int] = None,
    size: str = "S",
    kernel_size: Union[int, Sequence[int], list] = 3,
    deep_supervision: bool = False,
    num_channels: Optional[int] = None,
    **overrides: Any,
) -> MedNeXt:
    """Build a MedNeXt v1 of one size, as the reference's ``create_mednext_v1`` does.

    Args:
        num_input_channels: input image channels.
        num_classes: output channels.
        size: 'S', 'B', 'M' or 'L' (the reference's ``model_id``).
        kernel_size: depthwise kernel (3, 5, 7, a per-axis tuple, or 9 per-stage values).
        deep_supervision: add the 1/2..1/16 heads.
        num_channels: alias of ``num_input_channels`` (the MedNeXt README uses it).
        **overrides: any other :class:`MedNeXt` argument, e.g. ``checkpoint_style=None``
            or ``strides=[(1, 2, 2), (1, 2, 2), 2, 2]``.
    """
    if num_channels is not None:
        if num_input_channels is not None and num_input_channels != num_channels:
            raise ValueError(
                f"num_channels ({num_channels}) is an alias of num_input_channels ({num_input_channels}); give one."
            )
        num_input_channels = num_channels
    if num_input_channels is None or num_classes is None:
        raise ValueError("create_mednext_v1 needs num_input_channels (or num_channels) and num_classes.")
    kwargs = size_kwargs(size)
    kwargs.update(kernel_size=kernel_size, deep_supervision=deep_supervision)
    kwargs.update(overrides)
    return MedNeXt(in_channels=num_input_channels, n_classes=num_classes, **kwargs)
