"""Seeded training augmentation from PyTC's ``AUGMENTOR`` keys, in numpy and torch.

Each augmentation is one function, registered under its PyTC node name with what it needs
around the crop. As in PyTC, the sampler reads a crop enlarged by every enabled augmentation's
margin (:func:`sample_size`), the augmentations run in PyTC's order, each with its ``P``, and
the centre is cut back to ``MODEL.INPUT_SIZE``. Geometric ones (rotation, rescale, flip,
elastic, missing section, misalignment) move image, label and mask together, the label and mask
by nearest neighbour; the others (grayscale, missing parts, motion blur, cut-blur, cut-noise)
touch the image only. An enabled augmentation or setting we do not implement is refused by name.
"""

import math
from dataclasses import dataclass
from typing import Callable, Dict, List, Optional, Sequence, Tuple

import numpy as np
import torch
import torch.nn.functional as F

from ..errors import ConfigError

Arrays = List[Optional[np.ndarray]]  # [image (float in [0, 1]), label, mask], each (z, y, x)


@dataclass(frozen=True)
class Margin:
    """What an augmentation needs around the crop: ``ratio`` times the size, plus ``add`` per side."""

    ratio: Tuple[float, float, float] = (1.0, 1.0, 1.0)
    add: Tuple[int, int, int] = (0, 0, 0)


def _each(arrays: Arrays, fn: Callable[[np.ndarray, bool], np.ndarray]) -> Arrays:
    """``fn(array, is_image)`` on the image, and on the label and mask when present."""
    return [None if a is None else np.ascontiguousarray(fn(a, i == 0)) for i, a in enumerate(arrays)]


def _resample(array: np.ndarray, grid: torch.Tensor, is_image: bool) -> np.ndarray:
    """Sample every z plane of ``array`` at ``grid`` ((1, y, x, 2) in [-1, 1]): bilinear for the image,
    nearest for labels and masks, zeros outside (as PyTC's constant border).

    Labels and masks are gathered at the nearest pixel rather than sampled as floats, so ids of
    any size (uint64 above 2**53, as MICrONS has) come through exactly.
    """
    if not is_image:
        return _gather_nearest(array, grid)
    planes = torch.from_numpy(np.ascontiguousarray(array, dtype=np.float64))[:, None]
    grid = grid.to(torch.float64).expand(planes.shape[0], *grid.shape[1:])
    out = F.grid_sample(planes, grid, mode="bilinear", padding_mode="zeros", align_corners=False)[:, 0].numpy()
    return out.astype(array.dtype)


def _gather_nearest(array: np.ndarray, grid: torch.Tensor) -> np.ndarray:
    """``grid_sample``'s nearest mode (align_corners False, zeros outside) as an index, applied to any dtype."""
    height, width = array.shape[1:]
    grid = grid.to(torch.float64)[0]
    x = torch.round(((grid[..., 0] + 1) * width - 1) / 2).to(torch.int64)  # round half to even, as nearbyint
    y = torch.round(((grid[..., 1] + 1) * height - 1) / 2).to(torch.int64)
    inside = ((x >= 0) & (x < width) & (y >= 0) & (y < height)).numpy()
    out = np.zeros_like(array)
    out[:, inside] = array[:, y.numpy()[inside], x.numpy()[inside]]
    return out


def _pixel_grid(height: int, width: int, y: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
    """Pixel coordinates (voxel centres) as grid_sample's normalised (1, y, x, 2) grid."""
    return torch.stack(((2 * x + 1) / width - 1, (2 * y + 1) / height - 1), dim=-1)[None]


def _pixel_coordinates(height: int, width: int) -> Tuple[torch.Tensor, torch.Tensor]:
    """The (y, x) coordinates of every pixel of a plane, as float64."""
    return torch.meshgrid(
        torch.arange(height, dtype=torch.float64), torch.arange(width, dtype=torch.float64), indexing="ij"
    )


def _rotation_grid(height: int, width: int, angle: float) -> torch.Tensor:
    """The grid that turns a plane by ``angle`` radians about its centre."""
    y, x = _pixel_coordinates(height, width)
    cy, cx = (height - 1) / 2, (width - 1) / 2
    cos, sin = math.cos(angle), math.sin(angle)
    return _pixel_grid(height, width, cy + (y - cy) * cos - (x - cx) * sin, cx + (y - cy) * sin + (x - cx) * cos)


def rotate(rng: np.random.Generator, arrays: Arrays, node) -> Arrays:
    """PyTC's ROTATE: a random multiple of 90 degrees in the y-x plane (ROT90), else any angle."""
    image = arrays[0]
    if node.ROT90:
        turns = int(rng.integers(0, 4)) if image.shape[1] == image.shape[2] else 0
        return _each(arrays, lambda a, _: np.rot90(a, turns, axes=(1, 2))) if turns else arrays
    grid = _rotation_grid(*image.shape[1:], rng.random() * 2 * math.pi)
    return _each(arrays, lambda a, is_image: _resample(a, grid, is_image))


RESCALE_RANGE = (0.8, 1.2)  # PyTC's Rescale defaults (low, high)


def _resize_planes(array: np.ndarray, size: Tuple[int, int], is_image: bool) -> np.ndarray:
    if not is_image:  # interpolate's nearest mode as an index, so that ids of any size come through exactly
        rows, columns = (np.minimum(np.arange(n) * m // n, m - 1) for n, m in zip(size, array.shape[1:]))
        return array[:, rows][:, :, columns]
    planes = torch.from_numpy(np.ascontiguousarray(array, dtype=np.float64))[:, None]
    out = F.interpolate(planes, size=size, mode="bilinear", align_corners=False)
    return out[:, 0].numpy().astype(array.dtype)


def rescale(rng: np.random.Generator, arrays: Arrays, node) -> Arrays:
    """PyTC's RESCALE: zoom the y-x plane by a factor in [0.8, 1.2] per axis (one for both with FIX_ASPECT)."""
    shape = arrays[0].shape
    factors = [1.0 / rng.uniform(*RESCALE_RANGE)]
    factors.append(factors[0] if node.FIX_ASPECT else 1.0 / rng.uniform(*RESCALE_RANGE))
    windows = []
    for axis, factor in zip((1, 2), factors):
        length = int(factor * shape[axis])
        if length <= shape[axis]:  # zoom in: a random window of the crop, enlarged
            start = int(rng.integers(0, shape[axis] - length + 1))
            windows.append(("crop", start, start + length))
        else:  # zoom out: the crop padded with zeros, shrunk
            before = (length - shape[axis]) // 2
            windows.append(("pad", before, length - shape[axis] - before))

    def zoom(array: np.ndarray, is_image: bool) -> np.ndarray:
        for axis, (kind, a, b) in zip((1, 2), windows):
            if kind == "crop":
                array = np.take(array, np.arange(a, b), axis=axis)
            else:
                widths = [(0, 0)] * 3
                widths[axis] = (a, b)
                array = np.pad(array, widths)
        return _resize_planes(array, shape[1:], is_image)

    return _each(arrays, zoom)


def flip(rng: np.random.Generator, arrays: Arrays, node) -> Arrays:
    """PyTC's FLIP: flips of z, y and x and a y-x transpose, each with probability 1/2; with DO_ZTRANS,
    a z-x transpose too (for isotropic data with cubic crops)."""
    rule = rng.integers(0, 2, 4 + int(node.DO_ZTRANS))
    shape = arrays[0].shape

    def apply(array: np.ndarray, _: bool) -> np.ndarray:
        for axis in range(3):
            if rule[axis]:
                array = np.flip(array, axis)
        if rule[3] and shape[1] == shape[2]:
            array = array.transpose(0, 2, 1)
        if len(rule) > 4 and rule[4] and shape[0] == shape[2]:
            array = array.transpose(2, 1, 0)
        return array

    return _each(arrays, apply)


def _smoothed_noise(rng: np.random.Generator, shape: Tuple[int, int], sigma: float) -> torch.Tensor:
    """Uniform noise in [-1, 1] smoothed by a Gaussian of ``sigma`` pixels (reflected at the borders)."""
    noise = torch.from_numpy(rng.random(shape) * 2 - 1)[None, None]
    # Reflection needs a border narrower than the plane.
    radius = max(1, min(int(round(4 * sigma)), min(shape) - 1))
    taps = torch.arange(-radius, radius + 1, dtype=torch.float64)
    kernel = torch.exp(-0.5 * (taps / sigma) ** 2)
    kernel = kernel / kernel.sum()
    noise = F.conv2d(F.pad(noise, (radius, radius, 0, 0), mode="reflect"), kernel.view(1, 1, 1, -1))
    noise = F.conv2d(F.pad(noise, (0, 0, radius, radius), mode="reflect"), kernel.view(1, 1, -1, 1))
    return noise[0, 0]


def elastic(rng: np.random.Generator, arrays: Arrays, node) -> Arrays:
    """PyTC's ELASTIC: one smooth random displacement of the y-x plane (``ALPHA`` pixels at most,
    smoothness ``SIGMA``) for every z plane."""
    height, width = arrays[0].shape[1:]
    dx = _smoothed_noise(rng, (height, width), node.SIGMA) * node.ALPHA
    dy = _smoothed_noise(rng, (height, width), node.SIGMA) * node.ALPHA
    y, x = _pixel_coordinates(height, width)
    grid = _pixel_grid(height, width, y + dy, x + dx)
    return _each(arrays, lambda a, is_image: _resample(a, grid, is_image))


GRAYSCALE_CONTRAST, GRAYSCALE_BRIGHTNESS = 0.3, 0.3  # PyTC's Grayscale defaults


def _grayscale(image: np.ndarray, ran: np.ndarray) -> np.ndarray:
    image = image * (1 + (ran[0] - 0.5) * GRAYSCALE_CONTRAST) + (ran[1] - 0.5) * GRAYSCALE_BRIGHTNESS
    return np.clip(image, 0.0, 1.0) ** (2.0 ** (ran[2] * 2 - 1))


def grayscale(rng: np.random.Generator, arrays: Arrays, node) -> Arrays:
    """PyTC's GRAYSCALE: contrast, brightness and gamma, for the whole crop or (half the time) per z plane."""
    image = arrays[0].astype(np.float32)
    if rng.random() > 0.5:
        image = _grayscale(image, rng.random(3))
    else:
        ran = rng.random((image.shape[0], 3))
        image = np.stack([_grayscale(plane, r) for plane, r in zip(image, ran)])
    return [image.astype(np.float32)] + arrays[1:]


def _line_mask(rng: np.random.Generator, shape: Tuple[int, int], radius: int) -> np.ndarray:
    """A line across the plane, grown by ``radius`` pixels in the city-block metric (what ``radius``
    binary dilations with the cross give)."""
    height, width = shape
    if rng.random() < 0.5:  # from the top edge to the bottom edge
        start, end = (0, int(rng.integers(1, max(2, width - 2)))), (height - 1, int(rng.integers(1, max(2, width - 2))))
    else:  # from the left edge to the right edge
        start, end = (
            (int(rng.integers(1, max(2, height - 2))), 0),
            (int(rng.integers(1, max(2, height - 2))), width - 1),
        )
    steps = max(abs(end[0] - start[0]), abs(end[1] - start[1])) + 1
    points = np.unique(np.rint(np.linspace(start, end, steps)).astype(int), axis=0)
    y, x = np.ogrid[:height, :width]
    mask = np.zeros(shape, dtype=bool)
    for py, px in points:
        mask |= (np.abs(y - py) + np.abs(x - px)) <= radius
    return mask


def missing_parts(rng: np.random.Generator, arrays: Arrays, node) -> Arrays:
    """PyTC's MISSINGPARTS: planes chosen with probability ``P`` (never two in a row) lose a thick
    line (``ITER`` pixels around it) to the plane's mean."""
    image = arrays[0].copy()
    z = 0
    while z < image.shape[0]:
        if rng.random() < node.P:
            mask = _line_mask(rng, image.shape[1:], int(node.ITER))
            image[z][mask] = image[z].mean()
            z += 1
        z += 1
    return [image] + arrays[1:]


def missing_section(rng: np.random.Generator, arrays: Arrays, node) -> Arrays:
    """PyTC's MISSINGSECTION: ``NUM_SECTION`` inner z planes are removed from image, label and mask
    (the crop was read that much deeper)."""
    depth = arrays[0].shape[0]
    count = min(int(node.NUM_SECTION), depth - 2)
    if count < 1:
        return arrays
    removed = rng.choice(np.arange(1, depth - 1), count, replace=False)
    return _each(arrays, lambda a, _: np.delete(a, removed, axis=0))


def misalignment(rng: np.random.Generator, arrays: Arrays, node) -> Arrays:
    """PyTC's MISALIGNMENT: one plane (slip) or all planes from one on (translation) shift by up to
    ``DISPLACEMENT`` pixels; with probability ``ROTATE_RATIO`` they rotate instead."""
    depth, height, width = arrays[0].shape
    displacement = int(node.DISPLACEMENT)
    if depth < 3 or min(height, width) <= displacement:
        return arrays
    cut = int(rng.integers(1, depth - 1))
    slip = rng.random() < 0.5
    if rng.random() < node.ROTATE_RATIO:
        # The largest angle that moves the crop's corners by about DISPLACEMENT / 2, as in PyTC.
        largest = 2 * math.asin(min(1.0, (displacement / 2) / ((height - displacement) / 2 * 1.42)))
        grid = _rotation_grid(height, width, (rng.random() - 0.5) * 2 * largest)
        planes = slice(cut, cut + 1) if slip else slice(cut, None)

        def turned(array: np.ndarray, is_image: bool) -> np.ndarray:
            out = array.copy()
            out[planes] = _resample(array[planes], grid, is_image)
            return out

        return _each(arrays, turned)
    y0, x0, y1, x1 = (int(v) for v in rng.integers(0, displacement, 4))
    out_h, out_w = height - displacement, width - displacement

    def shifted(array: np.ndarray, _: bool) -> np.ndarray:
        out = array[:, y0 : y0 + out_h, x0 : x0 + out_w].copy()
        moved = slice(cut, cut + 1) if slip else slice(cut, None)
        out[moved] = array[moved, y1 : y1 + out_h, x1 : x1 + out_w]
        return out

    return _each(arrays, shifted)


def motion_blur(rng: np.random.Generator, arrays: Arrays, node) -> Arrays:
    """PyTC's MOTIONBLUR: ``SECTIONS`` random planes blurred along y or x by a ``KERNEL_SIZE`` line."""
    image = arrays[0].copy()
    axis = 1 + int(rng.random() < 0.5)  # within a plane: 1 is y, 2 is x
    # An odd line no longer than the plane, so the reflected border fits.
    size = max(1, min(int(node.KERNEL_SIZE), 2 * ((image.shape[axis] - 1) // 2) + 1))
    chosen = rng.choice(image.shape[0], min(int(node.SECTIONS), image.shape[0]), replace=False)
    for z in chosen:
        plane = torch.from_numpy(np.ascontiguousarray(image[z], dtype=np.float64))[None, None]
        kernel = torch.full((size,) if axis == 1 else (1, size), 1.0 / size, dtype=torch.float64)
        kernel = kernel.view(1, 1, size, 1) if axis == 1 else kernel.view(1, 1, 1, size)
        pad = (0, 0, size // 2, size // 2) if axis == 1 else (size // 2, size // 2, 0, 0)
        image[z] = F.conv2d(F.pad(plane, pad, mode="reflect"), kernel)[0, 0].numpy()
    return [image] + arrays[1:]


def _cuboid(rng: np.random.Generator, shape: Sequence[int], length_ratio: float) -> Tuple[slice, ...]:
    spans = []
    for axis, size in enumerate(shape):
        if axis == 0 and size == 1:
            spans.append(slice(None))
            continue
        length = int(length_ratio * size)
        low = int(rng.integers(0, max(1, size - length)))
        spans.append(slice(low, low + length))
    return tuple(spans)


def cut_blur(rng: np.random.Generator, arrays: Arrays, node) -> Arrays:
    """PyTC's CUTBLUR: a cuboid (``LENGTH_RATIO`` of each axis) downsampled by a factor in
    [``DOWN_RATIO_MIN``, ``DOWN_RATIO_MAX``] (in y-x, and z with ``DOWNSAMPLE_Z``) and upsampled back."""
    image = arrays[0].copy()
    region = _cuboid(rng, image.shape, node.LENGTH_RATIO)
    ratio = rng.uniform(node.DOWN_RATIO_MIN, node.DOWN_RATIO_MAX)
    part = torch.from_numpy(np.ascontiguousarray(image[region], dtype=np.float64))[None, None]
    if 0 in part.shape:
        return arrays
    factors = [ratio if (axis > 0 or (node.DOWNSAMPLE_Z and part.shape[2] > 1)) else 1.0 for axis in range(3)]
    small = [max(1, int(n / f)) for n, f in zip(part.shape[2:], factors)]
    down = F.interpolate(part, size=small, mode="area")
    image[region] = np.clip(F.interpolate(down, size=part.shape[2:], mode="nearest")[0, 0].numpy(), 0.0, 1.0)
    return [image] + arrays[1:]


def cut_noise(rng: np.random.Generator, arrays: Arrays, node) -> Arrays:
    """PyTC's CUTNOISE: uniform noise of amplitude ``SCALE`` added to a cuboid (``LENGTH_RATIO`` of each axis)."""
    image = arrays[0].copy()
    region = _cuboid(rng, image.shape, node.LENGTH_RATIO)
    part = image[region]
    image[region] = np.clip(part + rng.uniform(-node.SCALE, node.SCALE, part.shape), 0.0, 1.0)
    return [image] + arrays[1:]


@dataclass(frozen=True)
class Augmentation:
    """One registered augmentation: its function and what it needs around the crop."""

    transform: Callable[[np.random.Generator, Arrays, object], Arrays]
    margin: Callable[[object], Margin]
    needs_3d: bool = False  # PyTC skips it for DATASET.DO_2D


def no_margin(node) -> Margin:
    """The margin of augmentations that keep the crop's size."""
    return Margin()


# PyTC's AUGMENTOR nodes in PyTC's list order; they run in reverse, as PyTC's Compose runs them.
AUGMENTATIONS: Dict[str, Augmentation] = {
    "ROTATE": Augmentation(rotate, lambda n: Margin() if n.ROT90 else Margin(ratio=(1.0, 1.42, 1.42))),
    "RESCALE": Augmentation(rescale, lambda n: Margin(ratio=(1.0, 1 / RESCALE_RANGE[0], 1 / RESCALE_RANGE[0]))),
    "FLIP": Augmentation(flip, no_margin),
    "ELASTIC": Augmentation(elastic, lambda n: Margin(add=(0, int(n.ALPHA) + 1, int(n.ALPHA) + 1))),
    "GRAYSCALE": Augmentation(grayscale, no_margin),
    "MISSINGPARTS": Augmentation(missing_parts, no_margin),
    "MISSINGSECTION": Augmentation(
        missing_section, lambda n: Margin(add=(math.ceil(n.NUM_SECTION / 2), 0, 0)), needs_3d=True
    ),
    "MISALIGNMENT": Augmentation(
        misalignment,
        lambda n: Margin(add=(0, math.ceil(n.DISPLACEMENT / 2), math.ceil(n.DISPLACEMENT / 2))),
        needs_3d=True,
    ),
    "MOTIONBLUR": Augmentation(motion_blur, no_margin),
    "CUTBLUR": Augmentation(cut_blur, no_margin),
    "CUTNOISE": Augmentation(cut_noise, no_margin),
}
# PyTC nodes (and settings) we do not implement: accepted only while disabled.
NOT_IMPLEMENTED = ("COPYPASTE",)


class Augmenter:
    """The enabled augmentations of a config's ``AUGMENTOR`` node, with the crop size they need.

    Args:
        augmentor: the ``AUGMENTOR`` node.
        do_2d: ``DATASET.DO_2D``; the 3D-only augmentations are then skipped, as in PyTC.

    Raises:
        ConfigError: an enabled augmentation or setting we do not implement.
    """

    def __init__(self, augmentor, do_2d: bool = False) -> None:
        self.steps: List[Tuple[str, Augmentation, object]] = []
        if not augmentor.ENABLED:
            return
        for name in NOT_IMPLEMENTED:
            if augmentor[name].ENABLED:
                raise ConfigError(
                    f"AUGMENTOR.{name}.ENABLED is True, but our engine does not implement {name}; "
                    f"set it to False, or train with PyTorch Connectomics."
                )
        if list(augmentor.ADDITIONAL_TARGETS_NAME) != ["label"] or list(augmentor.ADDITIONAL_TARGETS_TYPE) != ["mask"]:
            raise ConfigError(
                "AUGMENTOR.ADDITIONAL_TARGETS_NAME and _TYPE must stay ['label'] and ['mask']: our "
                "engine augments the label and the valid mask with the image, and nothing else."
            )
        if augmentor.SMOOTH:
            raise ConfigError(
                "AUGMENTOR.SMOOTH is True, but our engine does not smooth augmented labels; set it "
                "to False, or train with PyTorch Connectomics."
            )
        for name, augmentation in AUGMENTATIONS.items():
            node = augmentor[name]
            if node.ENABLED and not (augmentation.needs_3d and do_2d):
                if node.SKIP:
                    raise ConfigError(
                        f"AUGMENTOR.{name}.SKIP is {list(node.SKIP)}, but our engine augments "
                        "image, label and mask together; leave it empty."
                    )
                if not 0.0 <= node.P <= 1.0:
                    raise ConfigError(f"AUGMENTOR.{name}.P is {node.P}, but must lie in 0..1.")
                self.steps.append((name, augmentation, node))

    def sample_size(self, size: Sequence[int]) -> Tuple[int, int, int]:
        """The crop to read so that the centre ``size`` is valid after every augmentation.

        Args:
            size: ``MODEL.INPUT_SIZE`` (z, y, x).
        """
        sample = np.array(size, dtype=np.float64)
        for _, augmentation, node in self.steps:
            margin = augmentation.margin(node)
            sample = np.ceil(sample * np.array(margin.ratio)) + 2 * np.array(margin.add)
        return tuple(int(n) for n in sample)

    def __call__(self, rng: np.random.Generator, arrays: Arrays, size: Sequence[int]) -> Arrays:
        """Augment a crop of :meth:`sample_size` and cut its centre ``size`` out.

        Args:
            rng: the seeded generator (its state is checkpointed, so resumed runs continue it).
            arrays: [image (float in [0, 1]), label, mask or None], (z, y, x).
            size: the crop size to return.
        """
        draws = rng.random(len(self.steps))
        for (_, augmentation, node), draw in zip(reversed(self.steps), draws):
            if draw < node.P:
                arrays = augmentation.transform(rng, arrays, node)
        return [None if a is None else np.ascontiguousarray(_centre(a, size)) for a in arrays]


def _centre(array: np.ndarray, size: Sequence[int]) -> np.ndarray:
    starts = [(n - s) // 2 for n, s in zip(array.shape, size)]
    return array[tuple(slice(a, a + s) for a, s in zip(starts, size))]
