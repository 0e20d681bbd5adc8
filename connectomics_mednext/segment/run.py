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
from typing import TYPE_CHECKING, Any, Callable, Optional, Sequence, Tuple, Union

import numpy as np

if TYPE_CHECKING:
    import torch

from ..arrays import as_numpy
from ..errors import ConfigError, InputError, argument, closest, look_up_option
from ..io import (
    check_replaceable,
    close_volume,
    create_volume,
    open_prediction,
    prediction_voxel_size,
    scratch_dataset,
    to_output_values,
    written_hdf5,
)
from .blocks import block_grid, fragment_block, id_stride
from .contacts import block_contacts, contact_region
from .decoders import DECODERS, Decoder, SegmentOptions, check_channels, label_dtype, resolution_tuple
from .graph import Relabelling, merge_fragments
from .memory import check_memory

OUTPUT_DATASET = "main"
PredictionSource = Union[str, "os.PathLike[str]", np.ndarray, "torch.Tensor"]


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
    array = as_numpy(prediction)
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


def decode_blocks(
    prediction, decoder: Decoder, options: SegmentOptions, block_size: Sequence[int], fragments, create_output: Callable
) -> int:
    """Decode block by block in this process into ``create_output(count)``; return the object count.

    Args:
        prediction: the lazy (C, Z, Y, X) uint8 prediction.
        decoder: the mode's decoder.
        options: its thresholds and sizes, with the resolution settled.
        block_size: voxels per block and axis.
        fragments: a (Z, Y, X) uint64 array (in memory or on disk) for the fragment ids.
        create_output: ``count -> (Z, Y, X) array`` whose dtype fits the count.
    """
    shape = tuple(prediction.shape[1:])
    blocks, stride = block_grid(shape, block_size), id_stride(block_size)
    ids, counts = [], []
    for index, block in enumerate(blocks):
        part = fragment_block(prediction, block, index, stride, decoder, options)
        fragments[block.slices()] = part.labels
        ids.append(part.ids)
        counts.append(part.voxel_counts)
    contacts = []
    for block in blocks if len(blocks) > 1 else []:
        region = contact_region(block, shape)
        values = np.asarray(prediction[(slice(None),) + region.slices()]) if decoder.contact_score else None
        contacts.append(block_contacts(np.asarray(fragments[region.slices()]), values, block, region, decoder, options))
    relabelling = merge_fragments(np.concatenate(ids), np.concatenate(counts), contacts, decoder, options)
    check_found(relabelling, decoder, options)
    output = create_output(relabelling.count)
    for block in blocks:
        output[block.slices()] = relabelling.apply(np.asarray(fragments[block.slices()]))
    return relabelling.count


def check_found(relabelling: Relabelling, decoder: Decoder, options: SegmentOptions) -> None:
    """Refuse a volume without any fragment where the mode says that is a mistake (no seeds)."""
    if decoder.nothing_found is not None and len(relabelling.fragment_ids) == 0:
        raise InputError(decoder.nothing_found(options))


def in_process_block_size(
    mode: str, shape: Sequence[int], options: SegmentOptions, block_size: Optional[Sequence[int]]
) -> Tuple[int, ...]:
    """The blocks of a run in this process: ``block_size`` when given, else z slabs of ``slab_planes``
    for ``binary`` (exact, whatever their size) and the whole volume for the watershed modes."""
    if block_size is not None:
        return check_block_size(block_size)
    if mode == "binary" and options.slab_planes > 0:
        return (min(options.slab_planes, shape[0]),) + tuple(shape[1:])
    return tuple(shape)


def check_block_size(block_size: Sequence[int]) -> Tuple[int, int, int]:
    """``block_size`` as (z, y, x) positive voxel counts, or one sentence naming it."""
    values = tuple(block_size)
    if len(values) != 3 or not all(isinstance(v, (int, np.integer)) and v > 0 for v in values):
        raise ConfigError(f"{argument('block_size')} is {list(values)}, but must be 3 positive voxel counts (z, y, x).")
    return tuple(int(v) for v in values)


def _settled(prediction, mode: str, options: SegmentOptions, source: str) -> Tuple[Decoder, SegmentOptions]:
    """The decoder of ``mode`` and the options with the prediction's voxel size, once its channels are checked."""
    check_channels(mode, prediction.shape[0], options, source)
    voxel_size = None if isinstance(prediction, np.ndarray) else prediction_voxel_size(prediction)
    return DECODERS[mode], options.with_voxel_size(voxel_size)


def check_block_memory(
    mode: str, decoder: Decoder, options, block_size, shape, max_memory_gib: Optional[float], blocks_at_once: int = 1
) -> None:
    """Refuse blocks (with their context) whose decoding would not fit in memory, ``blocks_at_once`` at a time.

    Args:
        mode: the mode, for the message.
        decoder: its decoder.
        options: its options.
        block_size: voxels per block.
        shape: the volume's shape.
        max_memory_gib: the memory allowed; None: what the machine has available.
        blocks_at_once: blocks decoded at the same time on this machine (local workers).
    """
    context = decoder.context(options)
    voxels = int(np.prod([min(n, b + 2 * context) for n, b in zip(shape, block_size)]))
    check_memory(mode, voxels * blocks_at_once, decoder.bytes_per_voxel, max_memory_gib)


def segment(
    prediction: PredictionSource,
    mode: str,
    dataset: str = "vol0",
    max_memory: Optional[float] = None,
    block_size: Optional[Sequence[int]] = None,
    **options: Any,
) -> np.ndarray:
    """Instance labels (Z, Y, X) of a prediction, in memory.

    Args:
        prediction: a prediction file (HDF5, or our ``.zarr`` folder), or a (C, Z, Y, X) array
            (numpy or torch) of probabilities in 0..1 or of PyTC's uint8 probability x 255.
        mode: a key of :data:`~.decoders.DECODERS`: ``binary``, ``bc``, ``boundary`` or ``affinity``.
        dataset: the file's dataset (``vol0`` for the first input volume).
        max_memory: GiB a block may use; None: what the machine has available.
        block_size: decode in blocks of (z, y, x) voxels; None: z slabs of ``slab_planes`` for
            ``binary``, the whole volume for the others.
        **options: thresholds and sizes, fields of :class:`SegmentOptions` (e.g. ``threshold=0.6``).
    """
    settings = segment_options(**options)
    settings.check()
    look_up_option(argument("mode"), mode, DECODERS)
    volume, source, opened = _prediction_volume(prediction, dataset)
    try:
        decoder, settings = _settled(volume, mode, settings, source)
        shape = tuple(volume.shape[1:])
        blocks = in_process_block_size(mode, shape, settings, block_size)
        check_block_memory(mode, decoder, settings, blocks, shape, max_memory)
        labels = {}

        def create_output(count: int) -> np.ndarray:
            labels["array"] = np.zeros(shape, dtype=label_dtype(count))
            return labels["array"]

        decode_blocks(volume, decoder, settings, blocks, np.zeros(shape, dtype=np.uint64), create_output)
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
    block_size: Optional[Sequence[int]] = None,
) -> int:
    """Decode ``prediction_path`` with ``mode`` into ``output_path`` (dataset ``main``); return the object count.

    The file gets its final name only when complete; a failure leaves nothing behind. Blocks
    smaller than the volume (``binary``'s slabs, or ``block_size``) keep their fragment ids in an
    on-disk scratch array, so memory holds one block at a time.

    Args:
        prediction_path: PyTC's or our prediction (HDF5, or a ``.zarr`` folder).
        output_path: the HDF5 file to write.
        mode: a key of :data:`~.decoders.DECODERS`.
        options: thresholds and sizes; the defaults of :class:`SegmentOptions` when None.
        dataset: the prediction's dataset.
        max_memory_gib: the memory a block may use; None: what the system has available.
        block_size: decode in blocks of (z, y, x) voxels; None as in :func:`segment`.
    """
    options = options or SegmentOptions()
    options.check()
    look_up_option(argument("mode"), mode, DECODERS)
    check_replaceable(output_path, argument("output"), "a segmentation", is_our_segmentation)
    prediction = open_prediction(prediction_path, dataset)
    try:
        decoder, settled = _settled(prediction, mode, options, repr(prediction_path))
        shape = tuple(prediction.shape[1:])
        blocks = in_process_block_size(mode, shape, settled, block_size)
        check_block_memory(mode, decoder, settled, blocks, shape, max_memory_gib)
        with written_hdf5(output_path, argument("output")) as out:

            def create_output(count: int):
                return create_volume(out, OUTPUT_DATASET, shape, label_dtype(count))

            if tuple(blocks) == shape:
                count = decode_blocks(prediction, decoder, settled, blocks, np.zeros(shape, np.uint64), create_output)
            else:
                with scratch_dataset(output_path + ".scratch.partial", shape, np.uint64) as fragments:
                    count = decode_blocks(prediction, decoder, settled, blocks, fragments, create_output)
            attributes = out[OUTPUT_DATASET].attrs
            attributes["mode"] = mode
            attributes["options"] = json.dumps(dataclasses.asdict(settled))
            attributes["prediction"] = f"{os.path.abspath(prediction_path)}:{dataset}"
    finally:
        close_volume(prediction)
    return count
