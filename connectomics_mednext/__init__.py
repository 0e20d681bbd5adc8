"""connectomics-mednext: MedNeXt for volumetric EM segmentation, standalone or as a PyTC plugin."""

# Defined first: engine/checkpoint.py records it in every checkpoint and may be imported while this
# package is still initialising.
__version__ = "0.2.0"

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
