"""connectomics-mednext: MedNeXt for volumetric EM segmentation, standalone or as a PyTC plugin."""
from .model import (
    LayerNorm,
    MedNeXt,
    MedNeXtBlock,
    MedNeXtDownBlock,
    MedNeXtUpBlock,
    OutBlock,
    create_mednext_v1,
    load_reference_weights,
    read_checkpoint,
    upkern_load_weights,
)

__version__ = "0.1.0"

__all__ = [
    "LayerNorm",
    "MedNeXt",
    "MedNeXtBlock",
    "MedNeXtDownBlock",
    "MedNeXtUpBlock",
    "OutBlock",
    "create_mednext_v1",
    "load_reference_weights",
    "read_checkpoint",
    "upkern_load_weights",
]
