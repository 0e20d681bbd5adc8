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
        every = self._file.series
        first = every[0]
        if len(every) > 1 and all(s.shape == first.shape and s.dtype == first.dtype and s.ndim == 2 for s in every):
            # Written page by page (one series per call, as imwrite(..., append=True) does): the pages are the planes.
            self._reader, shape = self._file, (len(every),) + tuple(first.shape)
        else:
            self._reader, shape = first, tuple(first.shape)
            if len(shape) == 2:
                shape = (1,) + shape
            if len(shape) != 3 or len(first.pages) != shape[0]:
                raise InputError(
                    f"{path!r} holds an image of shape {tuple(first.shape)} in {len(first.pages)} pages; "
                    "expected a (z, y, x) stack with one 2D page per z plane."
                )
        self.shape, self.dtype = shape, np.dtype(first.dtype)

    def __getitem__(self, box: Tuple[slice, slice, slice]) -> np.ndarray:
        z = range(*box[0].indices(self.shape[0]))
        planes = self._reader.asarray(key=z) if self.shape[0] > 1 else self._reader.asarray()
        return planes.reshape((len(z),) + self.shape[1:])[(slice(None),) + tuple(box[1:])]
