"""Decode a prediction into an instance-label file: PyTC's HDF5 (or our zarr) in, HDF5 ``main`` out."""

import dataclasses
import json
import os
from typing import Optional

import h5py
import numpy as np

from ..errors import InputError, look_up_option
from ..io import close_volume, open_prediction
from .decoders import DECODERS, SegmentOptions, check_channels, label_dtype
from .memory import check_memory

OUTPUT_DATASET = "main"


def _chunks(shape):
    return (min(shape[0], 16), min(shape[1], 256), min(shape[2], 256))


def segment_file(
    prediction_path: str,
    output_path: str,
    mode: str,
    options: Optional[SegmentOptions] = None,
    dataset: str = "vol0",
    max_memory_gib: Optional[float] = None,
) -> int:
    """Decode ``prediction_path`` with ``mode`` into ``output_path`` (dataset ``main``); return the object count.

    The labels are uint32 (uint64 when needed), background 0. The file gets its final name only
    when complete; a failure leaves nothing behind.

    Args:
        prediction_path: PyTC's or our prediction (HDF5, or a ``.zarr`` folder).
        output_path: the HDF5 file to write.
        mode: a key of :data:`~.decoders.DECODERS`.
        options: thresholds and sizes; the defaults of :class:`SegmentOptions` when None.
        dataset: the prediction's dataset.
        max_memory_gib: the memory the watershed modes may use; None: what the system has available.
    """
    options = options or SegmentOptions()
    options.check()
    decoder = look_up_option("--mode", mode, DECODERS)
    prediction = open_prediction(prediction_path, dataset)
    check_channels(mode, prediction.shape[0], options, repr(prediction_path))
    shape = tuple(prediction.shape[1:])
    if not decoder.streams:
        check_memory(mode, int(np.prod(shape)), decoder.bytes_per_voxel, max_memory_gib)
    folder = os.path.dirname(os.path.abspath(output_path))
    if not os.path.isdir(folder):
        raise InputError(f"--output {output_path!r}: folder {folder!r} does not exist.")
    partial, scratch_path = output_path + ".partial", output_path + ".scratch.partial"
    try:
        with h5py.File(partial, "w") as out:
            if decoder.streams:
                with h5py.File(scratch_path, "w") as scratch_file:
                    scratch = scratch_file.create_dataset(
                        "provisional", shape=shape, dtype=np.int64, chunks=_chunks(shape)
                    )
                    count = decoder.run(
                        prediction,
                        options,
                        scratch,
                        lambda n: out.create_dataset(
                            OUTPUT_DATASET, shape=shape, dtype=label_dtype(n), chunks=_chunks(shape), compression="gzip"
                        ),
                    )
                os.remove(scratch_path)
            else:
                labels = decoder.run(prediction[:], options)
                count = int(labels.max()) if labels.size else 0
                out.create_dataset(
                    OUTPUT_DATASET, data=labels.astype(label_dtype(count)), chunks=_chunks(shape), compression="gzip"
                )
            out[OUTPUT_DATASET].attrs["mode"] = mode
            out[OUTPUT_DATASET].attrs["options"] = json.dumps(dataclasses.asdict(options))
            out[OUTPUT_DATASET].attrs["prediction"] = f"{os.path.abspath(prediction_path)}:{dataset}"
        os.replace(partial, output_path)
    except BaseException:
        for leftover in (partial, scratch_path):
            if os.path.exists(leftover):
                os.remove(leftover)
        raise
    finally:
        close_volume(prediction)
    return count
