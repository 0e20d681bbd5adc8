"""connectomics-mednext: MedNeXt for volumetric EM segmentation, standalone or as a PyTC plugin."""
from .build import build_mednext
from .config import add_mednext_config
from .losses import DeepSupervisionLoss
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
    "DeepSupervisionLoss",
    "LayerNorm",
    "MedNeXt",
    "MedNeXtBlock",
    "MedNeXtDownBlock",
    "MedNeXtUpBlock",
    "OutBlock",
    "add_mednext_config",
    "build_mednext",
    "create_mednext_v1",
    "load_reference_weights",
    "read_checkpoint",
    "upkern_load_weights",
]
