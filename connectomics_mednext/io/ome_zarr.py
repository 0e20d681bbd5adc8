"""OME-Zarr (0.4) metadata of one full-resolution level, which napari, neuroglancer and webKnossos read."""

from typing import Any, Dict, Optional, Sequence


def ome_multiscale(path: str, voxel_size: Optional[Sequence[float]], channels: bool) -> Dict[str, Any]:
    """The ``multiscales`` entry of the array ``path`` in its group (scale 1 when the voxel size is unknown).

    Args:
        path: the array's path inside the group (also its name).
        voxel_size: its (z, y, x) voxel size in nm, or None.
        channels: whether a channel axis comes first.
    """
    space = {"type": "space", **({"unit": "nanometer"} if voxel_size else {})}
    axes = [{"name": axis, **space} for axis in "zyx"]
    scale = [float(v) for v in (voxel_size or (1.0, 1.0, 1.0))]
    if channels:
        axes, scale = [{"name": "c", "type": "channel"}] + axes, [1.0] + scale
    return {
        "version": "0.4",
        "name": path,
        "axes": axes,
        "datasets": [{"path": path, "coordinateTransformations": [{"type": "scale", "scale": scale}]}],
    }
