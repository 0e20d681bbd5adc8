"""What identifies an input volume in a resume key, as plain data.

Inputs are identified by their file's metadata (path, dataset, shape, dtype, byte size and
modification time), not by their content: fingerprinting a terabyte volume would read all of
it before the first window, which is the cost resuming exists to avoid. Rewriting a file, or
copying another over it, changes its size or modification time; only a copy that keeps the
old time stamp on content of the same size (``cp -p``, ``rsync -t``) would go unnoticed.
Chunked stores say what identifies them (:meth:`~.chunked.ChunkedVolume.identity`). Arrays in
memory have no file, so they are fingerprinted by content.
"""

import hashlib
import os
from typing import Any, Dict

import h5py
import numpy as np


def volume_identity(volume) -> Dict[str, Any]:
    """The identity of a lazy input volume (an HDF5 dataset, a TIFF stack, a chunked store or an array).

    Args:
        volume: what :func:`~connectomics_mednext.io.open_volume` returned, or an array.
    """
    identity: Dict[str, Any] = {"shape": list(volume.shape), "dtype": np.dtype(volume.dtype).name}
    if callable(getattr(volume, "identity", None)):  # chunked stores say what identifies them
        identity.update(volume.identity())
        return identity
    if isinstance(volume, h5py.Dataset):
        path, identity["dataset"] = volume.file.filename, volume.name
    elif isinstance(getattr(volume, "name", None), str) and os.path.isfile(volume.name):
        path = volume.name
    else:
        identity["sha256"] = hashlib.sha256(np.ascontiguousarray(volume).tobytes()).hexdigest()
        return identity
    stat = os.stat(path)
    identity.update(file=os.path.abspath(path), bytes=stat.st_size, mtime_ns=stat.st_mtime_ns)
    return identity
