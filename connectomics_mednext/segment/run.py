"""Decode a prediction into instance labels: an array (:func:`segment`) or an HDF5 file (:func:`segment_file`).

Both take PyTC's layout, (C, Z, Y, X) probability x 255 as uint8, from either engine's file
(HDF5, or our ``.zarr``); :func:`segment` also takes an array of probabilities in 0..1. The
labels are uint32 (uint64 when needed), background 0. In three lines::

    from connectomics_mednext import segment
    labels = segment("outputs/run/test/result.h5", "binary", threshold=0.6)
"""

import dataclasses
import json
import os
from typing import Any, Callable, Optional, Tuple, Union

import numpy as np
import torch

from ..errors import ConfigError, InputError, argument, closest, look_up_option
from ..io import (
    check_replaceable,
    close_volume,
    create_volume,
    open_prediction,
    scratch_dataset,
    to_output_values,
    written_hdf5,
)
from .decoders import DECODERS, Decoder, SegmentOptions, check_channels, label_dtype, resolution_tuple
from .memory import check_memory

OUTPUT_DATASET = "main"
PredictionSource = Union[str, "os.PathLike[str]", np.ndarray, torch.Tensor]


def segment_options(**options: Any) -> SegmentOptions:
    """:class:`SegmentOptions` from keyword arguments, naming an unknown one with the closest option.

    Args:
        **options: fields of :class:`SegmentOptions`; ``resolution`` may be one number (isotropic).
    """
    names = [field.name for field in dataclasses.fields(SegmentOptions)]
    for name in options:
        if name not in names:
            hint = closest(name, names)
            suggestion = f"did you mean {hint!r}?" if hint else f"the options are {names}."
            raise ConfigError(f"{name!r} is not a decoding option; {suggestion}")
    if "resolution" in options:
        value = options["resolution"]
        options["resolution"] = resolution_tuple([value] if np.isscalar(value) else value)
    return SegmentOptions(**options)


def is_our_segmentation(handle) -> bool:
    """Whether an open HDF5 file holds labels :func:`segment_file` wrote (``main`` with its decoding mode)."""
    return OUTPUT_DATASET in handle and "mode" in handle[OUTPUT_DATASET].attrs


def _prediction_volume(prediction: PredictionSource, dataset: str) -> Tuple[Any, str, bool]:
    """(the lazy (C, Z, Y, X) uint8 prediction, its name for messages, whether a file was opened)."""
    if isinstance(prediction, (str, os.PathLike)):
        path = os.fspath(prediction)
        return open_prediction(path, dataset), repr(path), True
    array = prediction.detach().cpu().numpy() if isinstance(prediction, torch.Tensor) else np.asarray(prediction)
    name = argument("prediction")
    if array.ndim != 4:
        raise InputError(f"{name} has shape {array.shape}; expected (C, Z, Y, X) probabilities.")
    if array.dtype == np.uint8:
        return array, name, False
    if not np.issubdtype(array.dtype, np.floating) or not np.all((array >= 0) & (array <= 1)):
        raise InputError(
            f"{name} is {array.dtype}; expected probabilities in 0..1 (floats) or PyTC's probability x 255 (uint8)."
        )
    return to_output_values(array), name, False


def _decode(prediction, decoder: Decoder, options: SegmentOptions, scratch, create_output: Callable) -> int:
    """Run ``decoder`` into ``create_output(count)``; return the object count.

    Args:
        prediction: the lazy (C, Z, Y, X) uint8 prediction.
        decoder: the mode's decoder.
        options: its thresholds and sizes.
        scratch: a (Z, Y, X) int64 array for the streaming decoder's provisional ids; None for the others.
        create_output: ``count -> (Z, Y, X) array`` whose dtype fits the count.
    """
    if decoder.streams:
        return decoder.run(prediction, options, scratch, create_output)
    labels = decoder.run(np.asarray(prediction[:]), options)
    count = int(labels.max()) if labels.size else 0
    create_output(count)[...] = labels
    return count


def _checked(prediction, mode: str, options: SegmentOptions, source: str, max_memory_gib: Optional[float]) -> Decoder:
    """The decoder of ``mode``, once the prediction's channels and the memory it needs are checked."""
    decoder = DECODERS[mode]
    check_channels(mode, prediction.shape[0], options, source)
    if not decoder.streams:
        check_memory(mode, int(np.prod(prediction.shape[1:])), decoder.bytes_per_voxel, max_memory_gib)
    return decoder


def segment(
    prediction: PredictionSource,
    mode: str,
    dataset: str = "vol0",
    max_memory: Optional[float] = None,
    **options: Any,
) -> np.ndarray:
    """Instance labels (Z, Y, X) of a prediction, in memory.

    Args:
        prediction: a prediction file (HDF5, or our ``.zarr`` folder), or a (C, Z, Y, X) array
            (numpy or torch) of probabilities in 0..1 or of PyTC's uint8 probability x 255.
        mode: a key of :data:`~.decoders.DECODERS`: ``binary``, ``bc``, ``boundary`` or ``affinity``.
        dataset: the file's dataset (``vol0`` for the first input volume).
        max_memory: GiB the whole-volume modes may use; None: what the machine has available.
        **options: thresholds and sizes, fields of :class:`SegmentOptions` (e.g. ``threshold=0.6``).
    """
    settings = segment_options(**options)
    settings.check()
    look_up_option(argument("mode"), mode, DECODERS)
    volume, source, opened = _prediction_volume(prediction, dataset)
    try:
        decoder = _checked(volume, mode, settings, source, max_memory)
        shape = tuple(volume.shape[1:])
        labels = {}

        def create_output(count: int) -> np.ndarray:
            labels["array"] = np.zeros(shape, dtype=label_dtype(count))
            return labels["array"]

        scratch = np.zeros(shape, dtype=np.int64) if decoder.streams else None
        _decode(volume, decoder, settings, scratch, create_output)
        return labels["array"]
    finally:
        if opened:
            close_volume(volume)


def segment_file(
    prediction_path: str,
    output_path: str,
    mode: str,
    options: Optional[SegmentOptions] = None,
    dataset: str = "vol0",
    max_memory_gib: Optional[float] = None,
) -> int:
    """Decode ``prediction_path`` with ``mode`` into ``output_path`` (dataset ``main``); return the object count.

    The file gets its final name only when complete; a failure leaves nothing behind. The
    ``binary`` mode works slab by slab through an on-disk scratch array, so any depth fits.

    Args:
        prediction_path: PyTC's or our prediction (HDF5, or a ``.zarr`` folder).
        output_path: the HDF5 file to write.
        mode: a key of :data:`~.decoders.DECODERS`.
        options: thresholds and sizes; the defaults of :class:`SegmentOptions` when None.
        dataset: the prediction's dataset.
        max_memory_gib: the memory the whole-volume modes may use; None: what the system has available.
    """
    options = options or SegmentOptions()
    options.check()
    look_up_option(argument("mode"), mode, DECODERS)
    check_replaceable(output_path, argument("output"), "a segmentation", is_our_segmentation)
    prediction = open_prediction(prediction_path, dataset)
    try:
        decoder = _checked(prediction, mode, options, repr(prediction_path), max_memory_gib)
        shape = tuple(prediction.shape[1:])
        with written_hdf5(output_path, argument("output")) as out:

            def create_output(count: int):
                return create_volume(out, OUTPUT_DATASET, shape, label_dtype(count))

            if decoder.streams:
                with scratch_dataset(output_path + ".scratch.partial", shape, np.int64) as scratch:
                    count = _decode(prediction, decoder, options, scratch, create_output)
            else:
                count = _decode(prediction, decoder, options, None, create_output)
            attributes = out[OUTPUT_DATASET].attrs
            attributes["mode"] = mode
            attributes["options"] = json.dumps(dataclasses.asdict(options))
            attributes["prediction"] = f"{os.path.abspath(prediction_path)}:{dataset}"
    finally:
        close_volume(prediction)
    return count
