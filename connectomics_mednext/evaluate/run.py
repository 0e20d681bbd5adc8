"""Score a segmentation and/or a probability map against a label volume; a table and flat JSON.

In Python, arrays or files alike::

    from connectomics_mednext import evaluate
    scores = evaluate(label, segmentation=labels, prediction=probabilities)
"""

import math
import os
from typing import TYPE_CHECKING, Dict, Optional, Union

import numpy as np

if TYPE_CHECKING:
    import torch

from ..arrays import as_numpy
from ..data.targets import make_target, target_foreground
from ..errors import InputError, argument
from ..io import close_volume, open_prediction, open_volume, read_whole, split_names
from ..io.json_files import write_json_atomically
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


VolumeSource = Union[str, "os.PathLike[str]", np.ndarray, "torch.Tensor"]


def _volume(source: VolumeSource, name: str) -> np.ndarray:
    """A (Z, Y, X) array from an array or from any volume file :mod:`connectomics_mednext.io` reads."""
    if isinstance(source, (str, os.PathLike)):
        (checked,) = split_names(os.fspath(source), "", argument(name))  # a missing file is named with its argument
        return read_whole(open_volume(checked))
    return as_numpy(source)


def _probability(prediction: VolumeSource, dataset: str, channel: int) -> np.ndarray:
    """One channel of a prediction file in PyTC's layout, or of a (C, Z, Y, X) array; a (Z, Y, X) array as it is."""
    if isinstance(prediction, (str, os.PathLike)):
        volume, source = open_prediction(os.fspath(prediction), dataset), repr(os.fspath(prediction))
    else:
        volume = _volume(prediction, "prediction")
        if volume.ndim == 3:
            return volume
        source = argument("prediction")
    try:
        if not 0 <= channel < volume.shape[0]:
            raise InputError(
                f"{argument('channel')} {channel} does not exist: {source} has {volume.shape[0]} channels."
            )
        return np.asarray(volume[channel])
    finally:
        close_volume(volume)


def _path(source: VolumeSource) -> str:
    """`` 'file'`` for a source that is a file, for messages; '' for an array."""
    return f" {os.fspath(source)!r}" if isinstance(source, (str, os.PathLike)) else ""


def _ids(array: np.ndarray, name: str, source: VolumeSource) -> np.ndarray:
    """Instance ids as consecutive int64 (0 stays 0), so that any id, uint64 above 2**53 too, is scored exactly.

    Args:
        array: the ids.
        name: the argument, for messages.
        source: where they came from, for messages.
    """
    if not (np.issubdtype(array.dtype, np.integer) or array.dtype == bool):
        raise InputError(f"{argument(name)}{_path(source)} is {array.dtype}; expected integer ids (0 is background).")
    if np.issubdtype(array.dtype, np.signedinteger) and array.size and array.min() < 0:
        raise InputError(f"{argument(name)}{_path(source)} holds the negative id {array.min()}; ids must be 0 or more.")
    values, inverse = np.unique(array, return_inverse=True)
    shift = 0 if values.size and values[0] == 0 else 1
    return (inverse.reshape(array.shape) + shift).astype(np.int64)


def _same_shape(name: str, source: VolumeSource, array: np.ndarray, label: np.ndarray) -> None:
    if array.shape != label.shape:
        path = _path(source)
        raise InputError(
            f"{argument(name)}{path} has shape {array.shape} but {argument('label')} has {label.shape}; they must "
            "cover the same voxels."
        )


def evaluate(
    label: VolumeSource,
    segmentation: Optional[VolumeSource] = None,
    prediction: Optional[VolumeSource] = None,
    mask: Optional[VolumeSource] = None,
    dataset: str = "vol0",
    channel: int = 0,
    threshold: float = 0.5,
    target_opt: str = "0",
) -> Dict[str, float]:
    """Scores of a segmentation and/or a prediction against labels, as a flat dict (keys of :data:`METRIC_KEYS`).

    Each volume is an array (numpy or torch) or a file: labels, segmentation and mask any volume
    :mod:`connectomics_mednext.io` reads, the prediction in PyTC's layout (HDF5 or zarr).

    Args:
        label: ground-truth instance (or binary) labels.
        segmentation: instance labels to score (instance and neuron metrics).
        prediction: probabilities to score (voxel metrics; they also rank instances for AP): a
            prediction file or (C, Z, Y, X) array, of which ``channel`` is read, or one (Z, Y, X)
            channel; uint8 (x 255) or float in 0..1.
        mask: voxels where it is 0 are ignored by every metric.
        dataset: the prediction file's dataset.
        channel: the prediction's channel.
        threshold: probability threshold of the voxel metrics.
        target_opt: PyTC TARGET_OPT code that turns the label into the voxel target (0: label > 0).
    """
    truth = _ids(_volume(label, "label"), "label", label)
    arrays = {}
    for name, source in (("mask", mask), ("prediction", prediction), ("segmentation", segmentation)):
        if source is not None:
            arrays[name] = _probability(source, dataset, channel) if name == "prediction" else _volume(source, name)
            _same_shape(name, source, arrays[name], truth)
    if "segmentation" in arrays:
        arrays["segmentation"] = _ids(arrays["segmentation"], "segmentation", segmentation)
    valid = arrays["mask"] > 0 if "mask" in arrays else None
    if valid is not None and not valid.any():
        raise InputError(f"{argument('mask')}{_path(mask)} is 0 everywhere: no voxel would be scored.")
    return evaluate_arrays(truth, arrays.get("segmentation"), arrays.get("prediction"), valid, threshold, target_opt)


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
        raise InputError(
            f"Give {argument('segmentation')}, {argument('prediction')} or both to score against {argument('label')}."
        )
    if not 0.0 <= threshold <= 1.0:
        raise InputError(f"{argument('threshold')} is {threshold}, but must lie in 0..1.")
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


def format_table(results: Dict[str, float]) -> str:
    """The metrics as a two-column text table."""
    lines = [f"{'metric':<16}value"]
    lines += [f"{key:<16}{'n/a' if math.isnan(value) else f'{value:.4f}'}" for key, value in results.items()]
    return "\n".join(lines)


def write_json(results: Dict[str, float], path: str) -> None:
    """Write the flat JSON (NaN, for a metric without instances, as null), atomically, in the table's order."""
    clean = {key: (None if isinstance(value, float) and math.isnan(value) else value) for key, value in results.items()}
    write_json_atomically(path, clean, indent=2, sort_keys=False)
