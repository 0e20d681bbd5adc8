"""Voxel, instance and neuron metrics (IoU/Dice, AP, VOI, adapted Rand) for either engine's output."""

from .instance import instance_scores
from .neuron import neuron_scores
from .run import METRIC_KEYS, evaluate_arrays, evaluate_files
from .voxel import voxel_scores

__all__ = ["METRIC_KEYS", "evaluate_arrays", "evaluate_files", "instance_scores", "neuron_scores", "voxel_scores"]
