"""Neuron metrics: variation of information (split and merge, in bits) and adapted Rand error.

Both come from scikit-image. Voxels whose ground-truth label is 0 are left out (the SNEMI3D
and CREMI convention: 0 is unlabelled, e.g. the boundary between neurons); the segmentation's
0 counts as one more segment. ``voi_split`` is H(segmentation | truth): how much a true neuron
is cut into pieces; ``voi_merge`` is H(truth | segmentation): how much neurons are joined.
``arand`` is 1 - F-score of the Rand precision and recall over pairs of distinct voxels, as in
SNEMI3D.
"""

from typing import Dict

import numpy as np

from ..errors import import_extra
from ..segment.components import SEGMENT_EXTRA


def neuron_scores(truth: np.ndarray, segmentation: np.ndarray) -> Dict[str, float]:
    """``voi_split``, ``voi_merge`` and ``arand`` of a segmentation against ground truth.

    Args:
        truth: ground-truth ids, 0 unlabelled.
        segmentation: predicted ids.
    """
    metrics = import_extra("skimage.metrics", f"Neuron metrics need scikit-image: {SEGMENT_EXTRA}.")
    adapted_rand_error, variation_of_information = metrics.adapted_rand_error, metrics.variation_of_information
    truth, segmentation = truth.ravel(), segmentation.ravel()
    labelled = truth > 0
    truth, segmentation = truth[labelled], segmentation[labelled]
    if truth.size == 0:
        return {"voi_split": float("nan"), "voi_merge": float("nan"), "arand": float("nan")}
    # A segmentation of single voxels has no pair inside a segment; skimage then divides 0 by 0
    # on its way to the right answer (error 1).
    with np.errstate(invalid="ignore", divide="ignore"):
        split, merge = variation_of_information(truth, segmentation)
        error, _, _ = adapted_rand_error(truth, segmentation, ignore_labels=())
    return {"voi_split": float(split), "voi_merge": float(merge), "arand": float(error)}
