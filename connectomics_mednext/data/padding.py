"""PyTC's ``PAD_SIZE`` and ``PAD_MODE`` applied lazily: a padded view that reads only what a box needs."""

from typing import Dict, Sequence, Tuple

import numpy as np

from ..errors import ConfigError, look_up_option

PadWidths = Tuple[Tuple[int, int], Tuple[int, int], Tuple[int, int]]

# PAD_MODE -> how np.pad extends an axis of source indices; -1 marks a constant (zero) voxel.
INDEX_PADDERS: Dict[str, dict] = {
    "reflect": {"mode": "reflect"},
    "symmetric": {"mode": "symmetric"},
    "edge": {"mode": "edge"},
    "constant": {"mode": "constant", "constant_values": -1},
}


def pad_widths(pad_size: Sequence[int], key: str) -> PadWidths:
    """(before, after) per axis from PyTC's forms: one value, one per axis, or two per axis.

    Args:
        pad_size: the config value.
        key: its config key, for the error message.
    """
    values = [int(v) for v in pad_size]
    if any(v < 0 for v in values) or len(values) not in (1, 3, 6):
        raise ConfigError(
            f"{key} must be 1, 3 or 6 non-negative integers ([z, y, x] or [z0, z1, y0, y1, x0, x1]), "
            f"got {list(pad_size)!r}."
        )
    if len(values) == 1:
        values = values * 3
    if len(values) == 3:
        values = [v for v in values for _ in range(2)]
    return tuple((values[2 * i], values[2 * i + 1]) for i in range(3))


class PaddedVolume:
    """A (z, y, x) volume seen through padding; indexing with a box of slices reads only that box's source.

    Args:
        volume: an array or lazy dataset with ``shape`` and slice indexing.
        widths: (before, after) per axis.
        mode: a key of :data:`INDEX_PADDERS` (PyTC's ``DATASET.PAD_MODE``).
        name: the source's name, for messages.
    """

    def __init__(self, volume, widths: PadWidths, mode: str, name: str) -> None:
        look_up_option("DATASET.PAD_MODE", mode, INDEX_PADDERS)
        self.volume, self.name, self.dtype = volume, name, volume.dtype
        self.shape = tuple(n + a + b for n, (a, b) in zip(volume.shape, widths))
        self.constant = mode == "constant"
        self._sources = [np.pad(np.arange(n), w, **INDEX_PADDERS[mode]) for n, w in zip(volume.shape, widths)]

    def __getitem__(self, box: Tuple[slice, slice, slice]) -> np.ndarray:
        sources = [axis[s] for axis, s in zip(self._sources, box)]
        inside = [s[s >= 0] for s in sources]
        if any(i.size == 0 for i in inside):
            return np.zeros([s.size for s in sources], dtype=self.dtype)
        lows = [int(i.min()) for i in inside]
        read = np.asarray(self.volume[tuple(slice(lo, int(i.max()) + 1) for lo, i in zip(lows, inside))])
        crop = read[np.ix_(*[np.maximum(s - lo, 0) for s, lo in zip(sources, lows)])]
        if self.constant:
            z, y, x = (s < 0 for s in sources)
            crop[z[:, None, None] | y[None, :, None] | x[None, None, :]] = 0
        return crop


def pad_volume(volume, widths: PadWidths, mode: str, name: str):
    """``volume`` itself when nothing is padded, else its :class:`PaddedVolume`.

    Args:
        volume: the source.
        widths: (before, after) per axis.
        mode: PyTC's ``DATASET.PAD_MODE``.
        name: the source's name, for messages.
    """
    look_up_option("DATASET.PAD_MODE", mode, INDEX_PADDERS)  # checked even when nothing is padded
    if not any(a or b for a, b in widths):
        return volume
    return PaddedVolume(volume, widths, mode, name)
