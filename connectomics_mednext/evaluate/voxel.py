"""Voxel metrics of a probability map: foreground IoU and Dice at a threshold, and the best threshold."""

from typing import Dict, Optional, Sequence

import numpy as np

from ..io import to_output_values

# Lucchi-style sweep: 0.05, 0.10, ..., 0.95.
SWEEP = tuple(round(0.05 * i, 2) for i in range(1, 20))


def _iou_dice(true_positive: float, predicted: float, actual: float) -> Dict[str, float]:
    union = predicted + actual - true_positive
    total = predicted + actual
    return {"iou": true_positive / union if union else 1.0, "dice": 2 * true_positive / total if total else 1.0}


def overlap_scores(prediction: np.ndarray, truth: np.ndarray) -> Dict[str, float]:
    """IoU and Dice of a boolean prediction against a boolean truth (1.0 when both are empty).

    Args:
        prediction: the predicted foreground.
        truth: the true foreground.
    """
    true_positive = float(np.logical_and(prediction, truth).sum())
    return _iou_dice(true_positive, float(np.count_nonzero(prediction)), float(np.count_nonzero(truth)))


def voxel_scores(
    probability: np.ndarray,
    truth: np.ndarray,
    mask: Optional[np.ndarray] = None,
    threshold: float = 0.5,
    sweep: Sequence[float] = SWEEP,
) -> Dict[str, float]:
    """IoU and Dice of ``probability >= threshold`` against ``truth``, and the threshold of the sweep with the best IoU.

    Args:
        probability: uint8 (probability x 255, PyTC's layout) or float in 0..1.
        truth: boolean foreground.
        mask: voxels to score (True) and to ignore (False); None scores all.
        threshold: the probability threshold.
        sweep: the thresholds tried for ``best_threshold``.
    """
    values = probability if probability.dtype == np.uint8 else to_output_values(probability)
    if mask is not None:
        values, truth = values[mask], truth[mask]
    # One histogram of values inside and outside the truth gives every threshold's counts.
    inside = np.bincount(values[truth].ravel(), minlength=256)
    outside = np.bincount(values[~truth].ravel(), minlength=256)
    at_or_above_in = np.cumsum(inside[::-1])[::-1]
    at_or_above_out = np.cumsum(outside[::-1])[::-1]
    actual = float(inside.sum())

    def scores(cut: float) -> Dict[str, float]:
        level = min(255, int(np.ceil(cut * 255 - 1e-9)))
        true_positive = float(at_or_above_in[level])
        return _iou_dice(true_positive, true_positive + float(at_or_above_out[level]), actual)

    result = scores(threshold)
    swept = {cut: scores(cut)["iou"] for cut in sweep}
    best = max(swept, key=lambda cut: (swept[cut], -abs(cut - 0.5)))
    result.update(best_threshold=best, best_iou=swept[best])
    return result
