"""MedNeXt network, its sizes and weight loading; no config or PyTC imports."""

from .blocks import (
    LayerNorm,
    MedNeXtBlock,
    MedNeXtDownBlock,
    MedNeXtUpBlock,
    OutBlock,
    global_response_norm,
)
from .mednext import MedNeXt
from .sizes import SIZES, create_mednext_v1, size_kwargs
from .weights import LAYOUTS, load_weights, read_checkpoint, read_weights, upkern_load_weights

__all__ = [
    "LAYOUTS",
    "LayerNorm",
    "MedNeXt",
    "MedNeXtBlock",
    "MedNeXtDownBlock",
    "MedNeXtUpBlock",
    "OutBlock",
    "SIZES",
    "create_mednext_v1",
    "global_response_norm",
    "load_weights",
    "size_kwargs",
    "read_checkpoint",
    "read_weights",
    "upkern_load_weights",
]
