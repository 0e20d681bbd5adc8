"""Voxel, instance and neuron metrics (IoU/Dice, AP, VOI, adapted Rand) for either engine's output."""

from .instance import instance_scores
from .neuron import neuron_scores
from .run import METRIC_KEYS, evaluate, evaluate_arrays
from .voxel import overlap_scores, voxel_scores

__all__ = [
    "METRIC_KEYS",
    "evaluate",
    "evaluate_arrays",
    "instance_scores",
    "neuron_scores",
    "overlap_scores",
    "voxel_scores",
]
