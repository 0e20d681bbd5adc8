"""Volumes in and out: the only package that knows file formats.

Reading: :func:`open_volume` opens a lazy (z, y, x) volume by name (HDF5, TIFF, zarr, N5,
precomputed); :func:`split_names` turns PyTC's ``@``-joined names into paths. Writing:
:func:`open_prediction_output` creates (or reopens, to resume) a prediction that takes blocks,
in the format its name asks for.
"""

from typing import Any, Callable, Dict, Type

from .chunked import ChunkedVolume, open_chunked
from .hdf5 import (
    Hdf5Prediction,
    check_replaceable,
    create_volume,
    open_hdf5,
    scratch_dataset,
    write_volume,
    written_hdf5,
)
from .identity import volume_identity
from .locks import OutputLock
from .prediction_output import OUTPUT_DTYPE, BlockWriter, PredictionOutput, on_rank_zero, to_output_values
from .resume import changed_fields
from .volumes import (
    check_finite,
    check_image_dtype,
    check_labels,
    check_mask,
    check_same_shape,
    close_volume,
    open_prediction,
    open_volume,
    prediction_voxel_size,
    read_whole,
    split_names,
    volume_name,
)
from .zarr_prediction import ZarrPrediction

# Output name suffix -> prediction format; any other name is HDF5, as PyTC writes.
PREDICTION_OUTPUTS: Dict[str, Type[PredictionOutput]] = {".zarr": ZarrPrediction}


def open_prediction_output(
    output_path: str, rank: int = 0, world_size: int = 1, share: Callable[[Any], Any] = lambda value: value
) -> PredictionOutput:
    """The prediction output ``output_path`` names: zarr for ``.zarr``, else HDF5.

    Args:
        output_path: the final file or folder.
        rank: this process's rank.
        world_size: the processes writing it.
        share: returns rank 0's value on every rank (a broadcast); the identity for one process.
    """
    suffix = "." + output_path.rstrip("/").rsplit(".", 1)[-1].lower() if "." in output_path else ""
    return PREDICTION_OUTPUTS.get(suffix, Hdf5Prediction)(output_path, rank, world_size, share)


__all__ = [
    "BlockWriter",
    "ChunkedVolume",
    "Hdf5Prediction",
    "OUTPUT_DTYPE",
    "OutputLock",
    "PREDICTION_OUTPUTS",
    "PredictionOutput",
    "ZarrPrediction",
    "changed_fields",
    "check_finite",
    "check_replaceable",
    "check_image_dtype",
    "check_labels",
    "check_mask",
    "check_same_shape",
    "close_volume",
    "create_volume",
    "on_rank_zero",
    "open_chunked",
    "open_hdf5",
    "open_prediction_output",
    "open_prediction",
    "open_volume",
    "prediction_voxel_size",
    "read_whole",
    "scratch_dataset",
    "split_names",
    "to_output_values",
    "volume_identity",
    "volume_name",
    "write_volume",
    "written_hdf5",
]
