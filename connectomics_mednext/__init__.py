"""connectomics-mednext: MedNeXt for volumetric EM segmentation, standalone or as a PyTC plugin.

The Python API is as short as the command line::

    from connectomics_mednext import Predictor, evaluate, segment

    predictor = Predictor.from_checkpoint("outputs/run/checkpoint_00200.pth.tar")
    probabilities = predictor.predict(volume)  # (Z, Y, X) uint8 -> (C, Z, Y, X) float32
    labels = segment(probabilities, "binary")
    scores = evaluate(truth, segmentation=labels, prediction=probabilities)
"""

from importlib import import_module
from typing import Any

# Named like their subpackages, so imported here: importing a subpackage later must not rebind them.
from .evaluate import evaluate
from .segment import segment
from .version import __version__

# Public name -> the module that defines it. Imported on first use (PEP 562), so that commands
# which never touch a network (segment, evaluate, blockwise workers) start without importing torch.
_EXPORTS = {
    "DeepSupervisionLoss": ".losses",
    "LayerNorm": ".model",
    "MedNeXt": ".model",
    "MedNeXtBlock": ".model",
    "MedNeXtDownBlock": ".model",
    "MedNeXtUpBlock": ".model",
    "OutBlock": ".model",
    "Predictor": ".engine.predictor",
    "SlidingWindow": ".engine.predictor",
    "add_mednext_config": ".config",
    "build_mednext": ".build",
    "create_mednext_v1": ".model",
    "load_weights": ".model",
    "read_checkpoint": ".model",
    "upkern_load_weights": ".model",
}


def __getattr__(name: str) -> Any:
    if name not in _EXPORTS:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    value = getattr(import_module(_EXPORTS[name], __name__), name)
    globals()[name] = value
    return value


def __dir__():
    return sorted(list(globals()) + list(_EXPORTS))


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
