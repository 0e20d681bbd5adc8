"""Instance labels from a prediction in PyTC's layout ((C, Z, Y, X) uint8, probability x 255).

One decoder per PyTC target, in the registry :data:`DECODERS`:

- ``binary`` (TARGET_OPT 0): threshold, 3D connected components, small objects removed;
  slab by slab, so a volume of any depth fits in memory.
- ``bc`` (TARGET_OPT 0 and 4, PyTC's MitoEM recipe): seeds where the foreground is high and
  the contour low, marker watershed on the foreground restricted to the foreground.
- ``boundary`` (TARGET_OPT 4, neurons): seeds where the distance (in nm, per axis) to the
  nearest boundary is large, watershed on the boundary map.
- ``affinity`` (TARGET_OPT 2, SNEMI/CREMI): waterz, watershed on the affinity graph followed by
  mean-affinity agglomeration up to a threshold (the field's standard for affinities).

The watershed modes hold the whole volume in memory; :mod:`.memory` refuses one that would
not fit before any work starts.
"""

import math
from dataclasses import dataclass
from typing import Callable, Dict, Sequence, Tuple

import numpy as np

from ..errors import ConfigError, InputError, argument, import_extra, look_up_option
from .components import SEGMENT_EXTRA, import_cc3d, label_components


@dataclass
class SegmentOptions:
    """Every threshold (probabilities in 0..1) and size of the decoders, with their defaults.

    Args:
        threshold: ``binary``: foreground probability; ``boundary``: below it a voxel is not boundary.
        channel: ``binary`` and ``boundary``: the prediction channel to read.
        connectivity: 6, 18 or 26 (``binary``, and the seeds of ``bc`` and ``boundary``).
        min_size: objects with fewer voxels become background.
        slab_planes: ``binary``: z planes labelled at a time (0: the whole volume).
        seed_threshold: ``bc``: foreground probability above which a voxel may seed.
        contour_threshold: ``bc``: contour probability below which a voxel may seed.
        foreground_threshold: ``bc``: foreground probability above which a voxel is in an object.
        seed_min_size: ``bc`` and ``boundary``: seeds with fewer voxels are dropped.
        seed_distance: ``boundary``: nm to the nearest boundary from which a voxel seeds.
        resolution: nm per voxel along (z, y, x), for the distance transform.
        merge_threshold: ``affinity``: waterz agglomerates regions up to this score (1 - mean affinity).
        affinity_low: ``affinity``: below it an edge never joins fragments.
        affinity_high: ``affinity``: above it an edge always joins fragments.
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
    seed_distance: float = 20.0
    resolution: Tuple[float, float, float] = (1.0, 1.0, 1.0)
    merge_threshold: float = 0.5
    affinity_low: float = 0.0001
    affinity_high: float = 0.9999

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
        for name in ("min_size", "seed_min_size", "slab_planes", "channel"):
            if getattr(self, name) < 0:
                raise ConfigError(f"{argument(name)} is {getattr(self, name)}, but must be 0 or more.")
        if not self.seed_distance > 0 or not math.isfinite(self.seed_distance):
            raise ConfigError(f"{argument('seed_distance')} is {self.seed_distance}, but must be a distance above 0.")
        if len(self.resolution) != 3 or not all(math.isfinite(r) and r > 0 for r in self.resolution):
            resolution = list(self.resolution)
            raise ConfigError(f"{argument('resolution')} is {resolution}, but must be 3 positive sizes (z, y, x).")
        if self.affinity_low >= self.affinity_high:
            low, high = argument("affinity_low"), argument("affinity_high")
            raise ConfigError(f"{low} {self.affinity_low} must be below {high} {self.affinity_high}.")


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


def _consecutive(labels: np.ndarray) -> np.ndarray:
    """Ids 1..n in order of first voxel, background 0."""
    ids, first = np.unique(labels.ravel(), return_index=True)
    order = ids[np.argsort(first)]
    order = order[order != 0]
    lookup = np.zeros(int(labels.max()) + 1 if labels.size else 1, dtype=np.int64)
    lookup[order] = np.arange(1, len(order) + 1)
    return lookup[labels]


def _seeds(mask: np.ndarray, options: SegmentOptions) -> np.ndarray:
    seeds = import_cc3d().connected_components(np.ascontiguousarray(mask), connectivity=options.connectivity)
    return _remove_small(seeds.astype(np.int64), options.seed_min_size)


def decode_binary(prediction, options: SegmentOptions, scratch, create_output: Callable) -> int:
    """Connected components of ``prediction[channel] >= threshold``, slab by slab (see :mod:`.components`)."""
    cut = _byte(options.threshold)
    shape = tuple(prediction.shape[1:])
    return label_components(
        lambda z0, z1: prediction[options.channel, z0:z1] >= cut,
        shape,
        scratch,
        create_output,
        options.connectivity,
        options.min_size,
        options.slab_planes,
    )


def decode_bc(prediction: np.ndarray, options: SegmentOptions) -> np.ndarray:
    """Marker watershed of the foreground (channel 0) from seeds away from contours (channel 1)."""
    _, segmentation = _scikit_image()
    foreground, contour = prediction[0], prediction[1]
    seeds = _seeds((foreground > _byte(options.seed_threshold)) & (contour < _byte(options.contour_threshold)), options)
    labels = segmentation.watershed(
        -foreground.astype(np.float32), seeds, mask=foreground > _byte(options.foreground_threshold)
    )
    return _consecutive(_remove_small(labels.astype(np.int64), options.min_size))


def decode_boundary(prediction: np.ndarray, options: SegmentOptions) -> np.ndarray:
    """Watershed of the boundary map from seeds far (in nm) from any boundary; every voxel gets an object."""
    ndimage, segmentation = _scikit_image()
    boundary = prediction[options.channel]
    interior = boundary < _byte(options.threshold)
    distance = ndimage.distance_transform_edt(interior, sampling=options.resolution).astype(np.float32)
    seeds = _seeds(distance >= options.seed_distance, options)
    if not seeds.any():
        raise InputError(
            f"No voxel is {options.seed_distance} nm from a boundary ({argument('seed_distance')}), so there are "
            f"no seeds; lower {argument('seed_distance')} or check {argument('resolution')}."
        )
    labels = segmentation.watershed(boundary.astype(np.float32), seeds)
    return _consecutive(_remove_small(labels.astype(np.int64), options.min_size))


def decode_affinity(prediction: np.ndarray, options: SegmentOptions) -> np.ndarray:
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
    return _consecutive(_remove_small(labels.astype(np.int64), options.min_size))


@dataclass(frozen=True)
class Decoder:
    """A decoding mode: how many channels it reads, and whether it streams slab by slab.

    Args:
        channels: the prediction channels it needs (a minimum for ``binary`` and ``boundary``,
            which read ``channel``).
        exact: whether the channel count must equal ``channels``.
        run: the decoder.
        streams: runs slab by slab through ``(prediction, options, scratch, create_output)``; otherwise
            takes the whole prediction as an array and returns the labels.
        bytes_per_voxel: the watershed modes' measured peak memory per voxel (see README).
        targets: the PyTC TARGET_OPT codes it decodes, for messages.
    """

    channels: int
    exact: bool
    run: Callable
    streams: bool
    bytes_per_voxel: int
    targets: str


DECODERS: Dict[str, Decoder] = {
    "binary": Decoder(1, False, decode_binary, True, 0, "TARGET_OPT 0"),
    # Peak memory per voxel, rounded up from benchmarks/bench_segment_memory.py (83-91, 64-72, 59-62).
    "bc": Decoder(2, True, decode_bc, False, 96, "TARGET_OPT 0 and 4"),
    "boundary": Decoder(1, False, decode_boundary, False, 80, "TARGET_OPT 4"),
    "affinity": Decoder(3, True, decode_affinity, False, 72, "TARGET_OPT 2"),
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


def resolution_tuple(values: Sequence[float]) -> Tuple[float, float, float]:
    """``resolution`` as a (z, y, x) tuple (one value means isotropic)."""
    values = tuple(float(v) for v in values)
    return values * 3 if len(values) == 1 else values
