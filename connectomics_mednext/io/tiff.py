"""Multi-page TIFF stacks (one 2D page per z plane) read lazily, a plane range at a time.

Needs the optional ``tifffile`` package (``pip install connectomics-mednext[tiff]``).
"""

from typing import Tuple

import numpy as np

from ..errors import InputError, import_extra

TIFF_SUFFIXES = (".tif", ".tiff")


class TiffVolume:
    """A (z, y, x) view of a TIFF stack: indexing reads only the pages of the requested z range.

    TIFF pages are stored whole, so a box reads full y-x planes and crops them in memory.

    Args:
        path: the TIFF file.
    """

    def __init__(self, path: str) -> None:
        tifffile = import_extra(
            "tifffile", f"Reading {path!r} needs tifffile: pip install tifffile (or connectomics-mednext[tiff])."
        )
        self.name = path
        try:
            self._file = tifffile.TiffFile(path)
        except (tifffile.TiffFileError, ValueError, OSError) as error:
            raise InputError(f"{path!r} is not a readable TIFF file ({error}).") from error
        series = self._file.series[0]
        shape = tuple(series.shape)
        if len(shape) == 2:
            shape = (1,) + shape
        if len(shape) != 3 or len(series.pages) != shape[0]:
            raise InputError(
                f"{path!r} holds an image of shape {tuple(series.shape)} in {len(series.pages)} pages; "
                "expected a (z, y, x) stack with one 2D page per z plane."
            )
        self._series, self.shape, self.dtype = series, shape, np.dtype(series.dtype)

    def __getitem__(self, box: Tuple[slice, slice, slice]) -> np.ndarray:
        z = range(*box[0].indices(self.shape[0]))
        planes = self._series.asarray(key=z) if len(self._series.pages) > 1 else self._series.asarray()
        return planes.reshape((len(z),) + self.shape[1:])[(slice(None),) + tuple(box[1:])]
