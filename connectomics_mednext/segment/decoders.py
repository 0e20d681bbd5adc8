"""Instance labels from a prediction in PyTC's layout ((C, Z, Y, X) uint8, probability x 255).

Every mode decodes block by block, in three steps (one implementation, whether the volume is
one block, slabs, or thousands of blocks on daisy workers):

1. **fragments**: the mode's decoder on one block and its context;
2. **contacts**: the fragment pairs that touch across the block's faces, each with a mean score
   read from the prediction along the contact (:mod:`.contacts`);
3. **merge**: one graph over all fragments joins the pairs the mode's rule accepts, drops small
   objects and numbers the rest (:mod:`.graph`).

One decoder per PyTC target, in the registry :data:`DECODERS`:

- ``binary`` (TARGET_OPT 0): threshold and 3D connected components. Every touching pair joins,
  so any blocking gives exactly the whole-volume partition.
- ``bc`` (TARGET_OPT 0 and 4, PyTC's MitoEM recipe): seeds where the foreground is high and
  the contour low, marker watershed on the foreground restricted to the foreground. Fragments
  join across a face where the contour along the contact is low.
- ``boundary`` (TARGET_OPT 4, neurons): seeds where the distance to the nearest boundary is
  large, watershed on the boundary map. Fragments join where the contact is not boundary.
- ``affinity`` (TARGET_OPT 2, SNEMI/CREMI): waterz, watershed on the affinity graph followed by
  mean-affinity agglomeration up to a threshold; fragments join across a face when the mean
  affinity of the contact passes the same threshold.
"""

import math
from dataclasses import dataclass, replace
from typing import Callable, Dict, Optional, Sequence, Tuple

import numpy as np

from ..errors import ConfigError, InputError, argument, import_extra, look_up_option
from .components import SEGMENT_EXTRA, import_cc3d

# The (dz, dy, dx) steps to the neighbours that count as touching, one of each +/- pair.
HALF_NEIGHBOURHOODS: Dict[int, Tuple[Tuple[int, int, int], ...]] = {
    connectivity: tuple(
        step
        for step in ((dz, dy, dx) for dz in (-1, 0, 1) for dy in (-1, 0, 1) for dx in (-1, 0, 1))
        if step > (0, 0, 0) and sum(map(abs, step)) <= {6: 1, 18: 2, 26: 3}[connectivity]
    )
    for connectivity in (6, 18, 26)
}
FACE_STEPS = HALF_NEIGHBOURHOODS[6]


@dataclass
class SegmentOptions:
    """Every threshold (probabilities in 0..1) and size of the decoders, with their defaults.

    Args:
        threshold: ``binary``: foreground probability; ``boundary``: below it a voxel is not boundary.
        channel: ``binary`` and ``boundary``: the prediction channel to read.
        connectivity: 6, 18 or 26 (``binary``, and the seeds of ``bc`` and ``boundary``).
        min_size: objects with fewer voxels become background.
        slab_planes: ``binary`` into HDF5 or an array: z planes labelled at a time (0: the whole volume).
        seed_threshold: ``bc``: foreground probability above which a voxel may seed.
        contour_threshold: ``bc``: contour probability below which a voxel may seed; fragments in
            neighbouring blocks join when the mean contour along their contact is below it.
        foreground_threshold: ``bc``: foreground probability above which a voxel is in an object.
        seed_min_size: ``bc`` and ``boundary``: seeds with fewer voxels are dropped.
        seed_distance: ``boundary``: distance to the nearest boundary from which a voxel seeds, in the
            units of ``resolution``; None: 3 voxels of the finest axis.
        resolution: voxel size along (z, y, x) for the distance transform; None: the prediction's own
            (its ``resolution`` attribute, in nm), else 1 per axis (distances in voxels).
        merge_threshold: ``affinity``: waterz agglomerates regions up to this score (1 - mean affinity).
        affinity_low: ``affinity``: below it an edge never joins fragments.
        affinity_high: ``affinity``: above it an edge always joins fragments.
        block_context: blockwise runs: voxels read beyond each face of a block, so that seeds and
            watersheds near the face see what lies across it.
    """

    threshold: float = 0.5
    channel: int = 0
    connectivity: int = 26
    min_size: int = 0
    slab_planes: int = 64
    seed_threshold: float = 0.9
    contour_threshold: float = 0.8
    foreground_threshold: float = 0.85
    seed_min_size: int = 32
    seed_distance: Optional[float] = None
    resolution: Optional[Tuple[float, float, float]] = None
    merge_threshold: float = 0.5
    affinity_low: float = 0.0001
    affinity_high: float = 0.9999
    block_context: int = 8

    def check(self) -> None:
        """Raise one sentence for the first option outside its range."""
        probabilities = (
            "threshold",
            "seed_threshold",
            "contour_threshold",
            "foreground_threshold",
            "merge_threshold",
            "affinity_low",
            "affinity_high",
        )
        for name in probabilities:
            value = getattr(self, name)
            if not 0.0 <= value <= 1.0:
                raise ConfigError(f"{argument(name)} is {value}, but must lie in 0..1.")
        look_up_option(argument("connectivity"), self.connectivity, (6, 18, 26))
        for name in ("min_size", "seed_min_size", "slab_planes", "channel", "block_context"):
            if getattr(self, name) < 0:
                raise ConfigError(f"{argument(name)} is {getattr(self, name)}, but must be 0 or more.")
        if self.seed_distance is not None and (not self.seed_distance > 0 or not math.isfinite(self.seed_distance)):
            raise ConfigError(f"{argument('seed_distance')} is {self.seed_distance}, but must be a distance above 0.")
        if self.resolution is not None and (
            len(self.resolution) != 3 or not all(math.isfinite(r) and r > 0 for r in self.resolution)
        ):
            resolution = list(self.resolution)
            raise ConfigError(f"{argument('resolution')} is {resolution}, but must be 3 positive sizes (z, y, x).")
        if self.affinity_low >= self.affinity_high:
            low, high = argument("affinity_low"), argument("affinity_high")
            raise ConfigError(f"{low} {self.affinity_low} must be below {high} {self.affinity_high}.")

    def with_voxel_size(self, voxel_size: Optional[Sequence[float]]) -> "SegmentOptions":
        """These options with ``resolution`` (and so ``seed_distance``) settled: the prediction's voxel size
        when none was given, else voxels.

        Args:
            voxel_size: the prediction's recorded (z, y, x) voxel size, or None.
        """
        resolution = self.resolution or (tuple(float(v) for v in voxel_size) if voxel_size else (1.0, 1.0, 1.0))
        distance = self.seed_distance if self.seed_distance is not None else 3 * min(resolution)
        return replace(self, resolution=tuple(resolution), seed_distance=distance)


def _byte(probability: float) -> int:
    """The uint8 value of a probability in PyTC's x 255 layout."""
    return int(round(probability * 255))


def _scikit_image():
    needs = f"The watershed modes need scipy and scikit-image: {SEGMENT_EXTRA}."
    return import_extra("scipy.ndimage", needs), import_extra("skimage.segmentation", needs)


def _remove_small(labels: np.ndarray, min_size: int) -> np.ndarray:
    if min_size <= 1:
        return labels
    sizes = np.bincount(labels.ravel())
    small = sizes < min_size
    small[0] = False
    labels[small[labels]] = 0
    return labels


def _seeds(mask: np.ndarray, options: SegmentOptions) -> np.ndarray:
    seeds = import_cc3d().connected_components(np.ascontiguousarray(mask), connectivity=options.connectivity)
    return _remove_small(seeds.astype(np.int64), options.seed_min_size)


def fragments_binary(prediction: np.ndarray, options: SegmentOptions) -> np.ndarray:
    """Connected components of ``prediction[channel] >= threshold``."""
    foreground = np.ascontiguousarray(prediction[options.channel] >= _byte(options.threshold))
    return import_cc3d().connected_components(foreground, connectivity=options.connectivity).astype(np.int64)


def fragments_bc(prediction: np.ndarray, options: SegmentOptions) -> np.ndarray:
    """Marker watershed of the foreground (channel 0) from seeds away from contours (channel 1)."""
    _, segmentation = _scikit_image()
    foreground, contour = prediction[0], prediction[1]
    seeds = _seeds((foreground > _byte(options.seed_threshold)) & (contour < _byte(options.contour_threshold)), options)
    mask = foreground > _byte(options.foreground_threshold)
    return segmentation.watershed(-foreground.astype(np.float32), seeds, mask=mask).astype(np.int64)


def fragments_boundary(prediction: np.ndarray, options: SegmentOptions) -> np.ndarray:
    """Watershed of the boundary map from seeds far from any boundary; every voxel near a seed gets an object.

    A block without seeds (all boundary, or all too near one) has no fragments; the whole
    volume without any is refused by the merge step.
    """
    ndimage, segmentation = _scikit_image()
    boundary = prediction[options.channel]
    interior = boundary < _byte(options.threshold)
    distance = ndimage.distance_transform_edt(interior, sampling=options.resolution).astype(np.float32)
    seeds = _seeds(distance >= options.seed_distance, options)
    if not seeds.any():
        return np.zeros(boundary.shape, dtype=np.int64)
    return segmentation.watershed(boundary.astype(np.float32), seeds).astype(np.int64)


def fragments_affinity(prediction: np.ndarray, options: SegmentOptions) -> np.ndarray:
    """waterz: watershed fragments of the affinity graph, merged by mean affinity up to the threshold."""
    waterz = import_extra("waterz", f"The affinity mode needs waterz: {SEGMENT_EXTRA}.")
    affinities = np.ascontiguousarray(prediction[:3], dtype=np.float32) / 255.0
    labels = next(
        waterz.agglomerate(
            affinities,
            [options.merge_threshold],
            aff_threshold_low=options.affinity_low,
            aff_threshold_high=options.affinity_high,
        )
    )
    return labels.astype(np.int64)


def _larger(channel: Callable[[SegmentOptions], int]) -> Callable:
    """A contact score: the larger of the two voxels' values in one channel (a boundary between them shows)."""

    def score(prediction: np.ndarray, near: Tuple[slice, ...], far: Tuple[slice, ...], axis: int, options):
        values = prediction[channel(options)]
        return np.maximum(values[near], values[far])

    return score


def _affinity_score(prediction: np.ndarray, near: Tuple[slice, ...], far: Tuple[slice, ...], axis: int, options):
    # waterz's layout: channel a at voxel p links p with its neighbour one step back along axis a.
    return prediction[axis][far]


def _always(mean: np.ndarray, options: SegmentOptions) -> np.ndarray:
    # Components that touch are one component, whatever the block.
    return np.ones(len(mean), dtype=bool)


@dataclass(frozen=True)
class Decoder:
    """A decoding mode: the channels it reads, its fragments, and when fragments of neighbouring blocks join.

    Args:
        channels: the prediction channels it needs (a minimum for ``binary`` and ``boundary``,
            which read ``channel``).
        exact: whether the channel count must equal ``channels``.
        fragments: ``(block (C, z, y, x) uint8, options) -> int64 labels``, background 0.
        steps: the neighbour steps that make a contact across a face: ``None`` for the
            connectivity's neighbourhood, else face neighbours only.
        contact_score: ``(prediction, near, far, axis, options) -> uint8 values`` per contact voxel pair;
            None when every contact joins.
        joins: ``(mean contact score in 0..255, options) -> bool`` per fragment pair.
        bytes_per_voxel: peak memory per voxel of a block and its context (see :mod:`.memory`).
        targets: the PyTC TARGET_OPT codes it decodes, for messages.
        nothing_found: the sentence for a volume without any fragment, when that is a mistake.
    """

    channels: int
    exact: bool
    fragments: Callable[[np.ndarray, SegmentOptions], np.ndarray]
    steps: Optional[Tuple[Tuple[int, int, int], ...]]
    contact_score: Optional[Callable]
    joins: Callable[[np.ndarray, SegmentOptions], np.ndarray]
    bytes_per_voxel: int
    targets: str
    nothing_found: Optional[Callable[[SegmentOptions], str]] = None

    def neighbour_steps(self, options: SegmentOptions) -> Tuple[Tuple[int, int, int], ...]:
        """The steps whose pairs of voxels in two blocks make a contact."""
        return HALF_NEIGHBOURHOODS[options.connectivity] if self.steps is None else self.steps

    def context(self, options: SegmentOptions) -> int:
        """Voxels read beyond each face of a block: none for connected components, which see only voxels."""
        return 0 if self.contact_score is None else options.block_context


DECODERS: Dict[str, Decoder] = {
    # Peak memory per voxel, rounded up from benchmarks/bench_segment_memory.py.
    "binary": Decoder(1, False, fragments_binary, None, None, _always, 24, "TARGET_OPT 0"),
    "bc": Decoder(
        2,
        True,
        fragments_bc,
        FACE_STEPS,
        _larger(lambda options: 1),
        lambda mean, options: mean < _byte(options.contour_threshold),
        96,
        "TARGET_OPT 0 and 4",
    ),
    "boundary": Decoder(
        1,
        False,
        fragments_boundary,
        FACE_STEPS,
        _larger(lambda options: options.channel),
        lambda mean, options: mean < _byte(options.threshold),
        80,
        "TARGET_OPT 4",
        lambda options: (
            f"No voxel is {options.seed_distance:g} from a boundary ({argument('seed_distance')}, in the units of "
            f"{argument('resolution')} {list(options.resolution)}), so there are no seeds; lower "
            f"{argument('seed_distance')} or check {argument('resolution')}."
        ),
    ),
    "affinity": Decoder(
        3,
        True,
        fragments_affinity,
        FACE_STEPS,
        _affinity_score,
        lambda mean, options: 1.0 - mean / 255.0 < options.merge_threshold,
        72,
        "TARGET_OPT 2",
    ),
}


def check_channels(mode: str, channels: int, options: SegmentOptions, source: str) -> None:
    """Raise one sentence when the prediction's channel count does not fit ``mode``.

    Args:
        mode: a key of :data:`DECODERS`.
        channels: the prediction's channel count.
        options: the options (for ``channel``).
        source: the prediction's name, for the message.
    """
    decoder = DECODERS[mode]
    if decoder.exact and channels != decoder.channels:
        raise InputError(
            f"{argument('mode')} {mode} decodes {decoder.targets} ({decoder.channels} channels), but {source} has "
            f"{channels} channels."
        )
    if not decoder.exact and options.channel >= channels:
        raise InputError(f"{argument('channel')} {options.channel} does not exist: {source} has {channels} channels.")


def label_dtype(count: int) -> np.dtype:
    """uint32, or uint64 when the ids do not fit."""
    return np.dtype(np.uint32) if count < 2**32 else np.dtype(np.uint64)


def resolution_tuple(values: Optional[Sequence[float]]) -> Optional[Tuple[float, float, float]]:
    """``resolution`` as a (z, y, x) tuple (one value means isotropic; None stays None)."""
    if values is None:
        return None
    values = tuple(float(v) for v in values)
    return values * 3 if len(values) == 1 else values
