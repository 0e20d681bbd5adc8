"""Score a segmentation and/or a probability map against a label volume; a table and flat JSON."""

import json
import math
import os
from typing import Dict, Optional

import numpy as np

from ..data.targets import make_target, target_foreground
from ..errors import InputError
from ..io import close_volume, open_prediction, open_volume, read_whole, split_names
from .instance import instance_scores, mean_probability
from .neuron import neuron_scores
from .voxel import voxel_scores

# The JSON's keys, in the table's order.
METRIC_KEYS = (
    "iou",
    "dice",
    "best_threshold",
    "best_iou",
    "precision",
    "recall",
    "f1",
    "ap50",
    "ap75",
    "ap",
    "voi_split",
    "voi_merge",
    "arand",
)


def _read(path: str, flag: str) -> np.ndarray:
    (checked,) = split_names(path, "", flag)  # a missing file or container is named with its flag
    return read_whole(open_volume(checked))


def _same_shape(name: str, array: np.ndarray, label: np.ndarray) -> None:
    if array.shape != label.shape:
        raise InputError(
            f"{name} has shape {array.shape} but --label has {label.shape}; they must cover the same voxels."
        )


def evaluate_arrays(
    label: np.ndarray,
    segmentation: Optional[np.ndarray] = None,
    probability: Optional[np.ndarray] = None,
    mask: Optional[np.ndarray] = None,
    threshold: float = 0.5,
    target_opt: str = "0",
) -> Dict[str, float]:
    """Every metric the given arrays allow, as a flat dict (keys of :data:`METRIC_KEYS`).

    Args:
        label: ground-truth instance (or binary) labels.
        segmentation: instance labels to score (instance and neuron metrics).
        probability: one channel of a prediction, uint8 (x 255) or float in 0..1 (voxel metrics;
            also ranks instances for AP).
        mask: boolean, False where voxels are ignored by every metric.
        threshold: probability threshold of the voxel metrics.
        target_opt: PyTC TARGET_OPT code that turns the label into the voxel target (0: label > 0).
    """
    if segmentation is None and probability is None:
        raise InputError("Give --segmentation, --prediction or both to score against --label.")
    if not 0.0 <= threshold <= 1.0:
        raise InputError(f"--threshold is {threshold}, but must lie in 0..1.")
    results: Dict[str, float] = {}
    if probability is not None:
        truth = target_foreground(make_target(label, target_opt))
        results.update(voxel_scores(probability, truth, mask, threshold))
    if segmentation is not None:
        truth_ids, segment_ids = (label, segmentation) if mask is None else (label * mask, segmentation * mask)
        scores = None if probability is None else mean_probability(segment_ids, probability)
        results.update(instance_scores(truth_ids, segment_ids, scores))
        results.update(neuron_scores(truth_ids, segment_ids))
    return {key: results[key] for key in METRIC_KEYS if key in results}


def evaluate_files(
    label_path: str,
    segmentation_path: Optional[str] = None,
    prediction_path: Optional[str] = None,
    mask_path: Optional[str] = None,
    dataset: str = "vol0",
    channel: int = 0,
    threshold: float = 0.5,
    target_opt: str = "0",
) -> Dict[str, float]:
    """:func:`evaluate_arrays` of files: labels, segmentation and mask as any volume :mod:`connectomics_mednext.io`
    reads, the prediction in PyTC's layout (HDF5 or zarr).

    Args:
        label_path: ground-truth labels.
        segmentation_path: instance labels to score.
        prediction_path: a probability map in PyTC's layout to score.
        mask_path: voxels where this volume is 0 are ignored by every metric.
        dataset: the prediction's dataset.
        channel: the prediction's channel.
        threshold: probability threshold of the voxel metrics.
        target_opt: PyTC TARGET_OPT code that turns the label into the voxel target.
    """
    label = _read(label_path, "--label")
    mask = segmentation = probability = None
    if mask_path is not None:
        mask = _read(mask_path, "--mask") > 0
        _same_shape(f"--mask {mask_path!r}", mask, label)
    if prediction_path is not None:
        prediction = open_prediction(prediction_path, dataset)
        if not 0 <= channel < prediction.shape[0]:
            raise InputError(
                f"--channel {channel} does not exist: {prediction_path!r} has {prediction.shape[0]} channels."
            )
        probability = prediction[channel]
        close_volume(prediction)
        _same_shape(f"--prediction {prediction_path!r}", probability, label)
    if segmentation_path is not None:
        segmentation = _read(segmentation_path, "--segmentation")
        _same_shape(f"--segmentation {segmentation_path!r}", segmentation, label)
    return evaluate_arrays(label, segmentation, probability, mask, threshold, target_opt)


def format_table(results: Dict[str, float]) -> str:
    """The metrics as a two-column text table."""
    lines = [f"{'metric':<16}value"]
    lines += [f"{key:<16}{'n/a' if math.isnan(value) else f'{value:.4f}'}" for key, value in results.items()]
    return "\n".join(lines)


def write_json(results: Dict[str, float], path: str) -> None:
    """Write the flat JSON (NaN, for a metric without instances, as null), atomically."""
    clean = {key: (None if isinstance(value, float) and math.isnan(value) else value) for key, value in results.items()}
    partial = path + ".partial"
    with open(partial, "w", encoding="utf-8") as handle:
        json.dump(clean, handle, indent=2)
    os.replace(partial, path)
