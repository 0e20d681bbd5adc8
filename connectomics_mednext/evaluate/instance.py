"""Instance metrics: one-to-one matching by IoU; precision, recall and F1 at IoU 0.5; AP as in MitoEM.

AP follows the COCO protocol MitoEM uses: predicted instances are ranked by score (the mean
foreground probability inside them when a prediction is given, else all equal, then larger
first), each is matched to the unmatched ground-truth instance of highest IoU at or above the
threshold, and precision is interpolated at 101 recall points. ``ap`` is the mean over IoU
0.50, 0.55, ..., 0.95.
"""

from typing import Dict, Optional, Tuple

import numpy as np

AP_THRESHOLDS = tuple(round(0.5 + 0.05 * i, 2) for i in range(10))
RECALL_POINTS = np.linspace(0.0, 1.0, 101)


def overlaps(truth: np.ndarray, segmentation: np.ndarray) -> Tuple[Dict[int, int], Dict[int, int], np.ndarray]:
    """Instance sizes and the overlap of every touching (truth, segmentation) pair.

    Args:
        truth: ground-truth instance ids (0 is background).
        segmentation: predicted instance ids (0 is background).

    Returns:
        truth sizes, segmentation sizes (id -> voxels) and an (n, 3) array of (truth id,
        segmentation id, shared voxels).
    """
    truth, segmentation = truth.ravel().astype(np.uint64), segmentation.ravel().astype(np.uint64)
    sizes = []
    for labels in (truth, segmentation):
        ids, counts = np.unique(labels[labels > 0], return_counts=True)
        sizes.append(dict(zip(ids.tolist(), counts.tolist())))
    both = (truth > 0) & (segmentation > 0)
    pairs, shared = np.unique(np.stack([truth[both], segmentation[both]], axis=1), axis=0, return_counts=True)
    return sizes[0], sizes[1], np.column_stack([pairs.reshape(-1, 2), shared]).astype(np.int64)


def _iou_table(truth_sizes, segment_sizes, pairs) -> Dict[int, Dict[int, float]]:
    """segmentation id -> {truth id: IoU} over touching pairs."""
    table: Dict[int, Dict[int, float]] = {}
    for t, s, shared in pairs.tolist():
        table.setdefault(s, {})[t] = shared / (truth_sizes[t] + segment_sizes[s] - shared)
    return table


def _ranked(segment_sizes: Dict[int, int], scores: Optional[Dict[int, float]]):
    return sorted(segment_sizes, key=lambda s: (-(scores or {}).get(s, 1.0), -segment_sizes[s], s))


def _match(order, table, threshold: float) -> np.ndarray:
    """Greedy matching in rank order: whether each ranked instance is a true positive at ``threshold``."""
    taken, hits = set(), []
    for s in order:
        candidates = [(iou, t) for t, iou in table.get(s, {}).items() if iou >= threshold and t not in taken]
        if candidates:
            taken.add(max(candidates)[1])
        hits.append(bool(candidates))
    return np.array(hits, dtype=bool)


def average_precision(hits: np.ndarray, positives: int) -> float:
    """COCO's 101-point interpolated AP of a ranked list of hits against ``positives`` ground-truth instances."""
    if positives == 0:
        return float("nan")
    if len(hits) == 0:
        return 0.0
    true_positives = np.cumsum(hits)
    precision = true_positives / np.arange(1, len(hits) + 1)
    recall = true_positives / positives
    envelope = np.maximum.accumulate(precision[::-1])[::-1]
    index = np.searchsorted(recall, RECALL_POINTS, side="left")
    return float(np.mean([envelope[i] if i < len(envelope) else 0.0 for i in index]))


def instance_scores(
    truth: np.ndarray, segmentation: np.ndarray, scores: Optional[Dict[int, float]] = None
) -> Dict[str, float]:
    """Precision, recall and F1 at IoU 0.5, and AP at 0.5, 0.75 and 0.5:0.95.

    Args:
        truth: ground-truth instance ids (0 is background).
        segmentation: predicted instance ids (0 is background).
        scores: segmentation id -> confidence for AP's ranking; None ranks by size.
    """
    truth_sizes, segment_sizes, pairs = overlaps(truth, segmentation)
    table = _iou_table(truth_sizes, segment_sizes, pairs)
    order = _ranked(segment_sizes, scores)
    aps = {t: average_precision(_match(order, table, t), len(truth_sizes)) for t in AP_THRESHOLDS}
    matched = int(_match(order, table, 0.5).sum())
    precision = matched / len(segment_sizes) if segment_sizes else 1.0
    recall = matched / len(truth_sizes) if truth_sizes else 1.0
    f1 = 2 * precision * recall / (precision + recall) if precision + recall else 0.0
    return {
        "precision": precision,
        "recall": recall,
        "f1": f1,
        "ap50": aps[0.5],
        "ap75": aps[0.75],
        "ap": float(np.mean(list(aps.values()))),
    }


def mean_probability(segmentation: np.ndarray, probability: np.ndarray) -> Dict[int, float]:
    """Each instance's mean probability (0..1), its score for AP.

    Args:
        segmentation: instance ids.
        probability: uint8 (x 255) or float in 0..1, the same shape.
    """
    ids, inverse = np.unique(segmentation.ravel(), return_inverse=True)
    values = probability.ravel().astype(np.float64) / (255.0 if probability.dtype == np.uint8 else 1.0)
    means = np.bincount(inverse, weights=values) / np.bincount(inverse)
    return {int(i): float(m) for i, m in zip(ids, means) if i != 0}
