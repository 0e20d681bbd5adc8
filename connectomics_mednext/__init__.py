"""connectomics-mednext: MedNeXt for volumetric EM segmentation, standalone or as a PyTC plugin.

The Python API is as short as the command line::

    from connectomics_mednext import Predictor, evaluate, segment

    predictor = Predictor.from_checkpoint("outputs/run/checkpoint_00200.pth.tar")
    probabilities = predictor.predict(volume)  # (Z, Y, X) uint8 -> (C, Z, Y, X) float32
    labels = segment(probabilities, "binary")
    scores = evaluate(truth, segmentation=labels, prediction=probabilities)
"""

from .build import build_mednext
from .config import add_mednext_config
from .engine.predictor import Predictor, SlidingWindow
from .evaluate import evaluate
from .losses import DeepSupervisionLoss
from .model import (
    LayerNorm,
    MedNeXt,
    MedNeXtBlock,
    MedNeXtDownBlock,
    MedNeXtUpBlock,
    OutBlock,
    create_mednext_v1,
    load_weights,
    read_checkpoint,
    upkern_load_weights,
)
from .segment import segment
from .version import __version__

__all__ = [
    "DeepSupervisionLoss",
    "LayerNorm",
    "MedNeXt",
    "MedNeXtBlock",
    "MedNeXtDownBlock",
    "MedNeXtUpBlock",
    "OutBlock",
    "Predictor",
    "SlidingWindow",
    "__version__",
    "add_mednext_config",
    "build_mednext",
    "create_mednext_v1",
    "evaluate",
    "load_weights",
    "read_checkpoint",
    "segment",
    "upkern_load_weights",
]
