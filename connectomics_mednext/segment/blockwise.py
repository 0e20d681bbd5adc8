"""Decoding far beyond one machine's memory: the blocks of :mod:`.blocks` as daisy tasks, into a zarr label array.

``connectomics-mednext-segment --output seg.zarr/labels --block-size Z Y X --workers N`` runs:

1. ``fragments`` (daisy task): each block's fragments into ``fragments`` (uint64, one chunk per
   block) and its ids and voxel counts into ``ids/<block>.npz``;
2. ``contacts`` (daisy task, after the fragments of the block and its neighbours): each block's
   contacts across its faces into ``contacts/<block>.npz``;
3. the merge (this process): one graph over all fragments (:mod:`.graph`);
4. ``relabel`` (daisy task): each block's final ids into the output array.

All of it lives in ``<container>/.<array>.work/`` until the output array is marked complete
(``connectomics_mednext.complete`` in its attributes) and gets OME-Zarr metadata in its
container; then the work folder goes. daisy schedules, retries a block whose worker died, shows
progress, and its done markers (in the work folder) are the only record of finished blocks: a
rerun with the same prediction, mode, options and block size does only the missing blocks; a
rerun with any of them changed starts afresh.
"""

import dataclasses
import json
import math
import os
import shutil
from dataclasses import dataclass
from typing import Any, Dict, Optional, Sequence, Tuple

import numpy as np

from ..daisy_tasks import BlockwiseError, import_daisy, run_pipeline, set_log_folder, worker_function
from ..errors import InputError, argument
from ..geometry import Box
from ..io import OutputLock, close_volume, open_prediction, prediction_voxel_size, volume_identity
from ..io.chunked import create_zarr_array, open_zarr_array, split_container
from ..io.json_files import read_json, write_json_atomically
from ..io.ome_zarr import ome_multiscale
from ..log import get_logger
from ..version import __version__
from .blocks import block_index, fragment_block, id_stride
from .contacts import Contacts, block_contacts, contact_region
from .decoders import DECODERS, SegmentOptions, check_channels, label_dtype
from .graph import Relabelling, merge_fragments
from .run import check_block_memory, check_block_size, check_found

logger = get_logger(__name__)

DEFAULT_BLOCK_SIZE = (64, 256, 256)
MARK = "connectomics_mednext"


def is_blockwise_output(output: str) -> bool:
    """Whether ``output`` names an array inside a zarr container (``seg.zarr/labels``), which is decoded blockwise.

    Args:
        output: the output name.
    """
    split = split_container(output)
    return split is not None and split[0].lower().endswith(".zarr") and bool(split[1])


def is_complete_labels(folder: str) -> bool:
    """Whether ``folder`` is a label array this module finished (its complete mark)."""
    return bool(((read_json(os.path.join(folder, ".zattrs")) or {}).get(MARK) or {}).get("complete"))


_OPENED: Dict[Tuple[str, str], Any] = {}


def _opened(kind: str, path: str, opener) -> Any:
    """One handle per worker process and file: a worker opens the prediction and the stores once."""
    if (kind, path) not in _OPENED:
        _OPENED[(kind, path)] = opener()
    return _OPENED[(kind, path)]


def _save_npz(path: str, **arrays: np.ndarray) -> None:
    """Write a block's record so a reader finds all of it or none (the name appears last)."""
    temporary = f"{path}.tmp{os.getpid()}.npz"
    np.savez(temporary, **arrays)
    os.replace(temporary, path)


@dataclass(frozen=True)
class BlockwiseJob:
    """Everything a worker needs, in plain values (daisy sends it to each worker process once).

    Args:
        prediction: the prediction file or ``.zarr`` folder.
        dataset: its dataset.
        mode: a key of :data:`~.decoders.DECODERS`.
        options: the options, with the resolution settled.
        shape: the volume's (z, y, x) shape.
        block_size: voxels per block and axis.
        output: the label array's folder.
    """

    prediction: str
    dataset: str
    mode: str
    options: SegmentOptions
    shape: Tuple[int, int, int]
    block_size: Tuple[int, int, int]
    output: str

    @property
    def work(self) -> str:
        """The work folder beside the output array, inside its container."""
        parent, name = os.path.split(os.path.normpath(self.output))
        return os.path.join(parent, f".{name}.work")

    def _path(self, *parts: str) -> str:
        return os.path.join(self.work, *parts)

    def _prediction(self):
        return _opened("prediction", self.prediction, lambda: open_prediction(self.prediction, self.dataset))

    def _store(self, path: str):
        return _opened("store", path, lambda: open_zarr_array(path))

    def _box(self, block) -> Box:
        roi = block.write_roi
        return Box(tuple(roi.begin), tuple(roi.end))

    def fragments(self, block) -> None:
        """daisy's ``fragments`` task: one block's fragments and their record."""
        box = self._box(block)
        index = block_index(box, self.shape, self.block_size)
        decoder = DECODERS[self.mode]
        part = fragment_block(self._prediction(), box, index, id_stride(self.block_size), decoder, self.options)
        self._store(self._path("fragments"))[box.slices()].write(part.labels).result()
        _save_npz(self._path("ids", f"{index}.npz"), ids=part.ids, voxel_counts=part.voxel_counts)

    def contacts(self, block) -> None:
        """daisy's ``contacts`` task: one block's contacts with its neighbours."""
        box = self._box(block)
        region = contact_region(box, self.shape)
        decoder = DECODERS[self.mode]
        fragments = self._store(self._path("fragments"))[region.slices()].read().result()
        values = None
        if decoder.contact_score is not None:
            values = np.asarray(self._prediction()[(slice(None),) + region.slices()])
        found = block_contacts(fragments, values, box, region, decoder, self.options)
        index = block_index(box, self.shape, self.block_size)
        _save_npz(
            self._path("contacts", f"{index}.npz"),
            pairs=found.pairs,
            score_sums=found.score_sums,
            voxel_pairs=found.voxel_pairs,
        )

    def relabel(self, block) -> None:
        """daisy's ``relabel`` task: one block's final ids into the output."""
        box = self._box(block)
        relabelling = _opened("relabelling", self._path("relabelling.npz"), lambda: _load_relabelling(self))
        fragments = self._store(self._path("fragments"))[box.slices()].read().result()
        labels = relabelling.apply(fragments).astype(label_dtype(relabelling.count))
        self._store(self.output)[box.slices()].write(labels).result()

    def to_record(self) -> Dict[str, Any]:
        """The job as plain values, for a worker command's job file."""
        return dataclasses.asdict(self)

    @classmethod
    def from_record(cls, record: Dict[str, Any]) -> "BlockwiseJob":
        """The job :meth:`to_record` wrote.

        Args:
            record: its plain values.
        """
        options = dict(record["options"], resolution=tuple(record["options"]["resolution"]))
        sizes = {name: tuple(record[name]) for name in ("shape", "block_size")}
        return cls(**{**record, **sizes, "options": SegmentOptions(**options)})

    def resume_key(self, identity: Dict[str, Any]) -> Dict[str, Any]:
        """What the work folder holds results of; a rerun with another key starts afresh.

        Args:
            identity: the prediction's :func:`~connectomics_mednext.io.volume_identity`.
        """
        return {
            "prediction": identity,
            "dataset": self.dataset,
            "mode": self.mode,
            "options": dataclasses.asdict(self.options),
            "block_size": list(self.block_size),
            "version": __version__,
        }


def _load_relabelling(job: BlockwiseJob) -> Relabelling:
    with np.load(job._path("relabelling.npz")) as data:
        return Relabelling(data["fragment_ids"], data["object_ids"], int(data["count"]))


def _tasks(daisy, job: BlockwiseJob, workers: int, retries: int, worker_command: Optional[str]):
    """The pipeline ``fragments + contacts`` and the ``relabel`` task."""
    volume = daisy.Roi((0, 0, 0), job.shape)
    block = daisy.Roi((0, 0, 0), job.block_size)
    around = daisy.Roi((-1, -1, -1), tuple(b + 2 for b in job.block_size))

    def task(name: str, total, read):
        return daisy.Task(
            name,
            total_roi=total,
            read_roi=read,
            write_roi=block,
            process_function=worker_function(job, name, worker_command, job._path(f"job_{name}.json")),
            read_write_conflict=False,
            fit="shrink",
            max_workers=workers,
            max_retries=retries,
            tracking_path=job._path("done", name),
        )

    fragments = task("fragments", volume, block)
    contacts = task("contacts", volume.grow((1, 1, 1), (1, 1, 1)), around)
    return fragments + contacts, task("relabel", volume, block)


def _merge(job: BlockwiseJob) -> Relabelling:
    """The global step: read every block's record, join, and save the relabelling for the workers."""
    decoder = DECODERS[job.mode]
    ids, counts, contacts = [], [], []
    for name in sorted(os.listdir(job._path("ids"))):
        if name.endswith(".npz"):
            with np.load(job._path("ids", name)) as data:
                ids.append(data["ids"])
                counts.append(data["voxel_counts"])
    for name in sorted(os.listdir(job._path("contacts"))):
        if name.endswith(".npz"):
            with np.load(job._path("contacts", name)) as data:
                contacts.append(Contacts(data["pairs"], data["score_sums"], data["voxel_pairs"]))
    blocks = math.prod(math.ceil(n / b) for n, b in zip(job.shape, job.block_size))
    if len(ids) != blocks or len(contacts) != blocks:
        raise BlockwiseError(
            f"{job.work!r} holds the records of {len(ids)} and {len(contacts)} of {blocks} blocks, though daisy marked "
            "them all done: something removed files there; remove the folder and run again."
        )
    ids, counts = np.concatenate(ids), np.concatenate(counts)
    relabelling = merge_fragments(ids, counts, contacts, decoder, job.options)
    check_found(relabelling, decoder, job.options)
    _save_npz(
        job._path("relabelling.npz"),
        fragment_ids=relabelling.fragment_ids,
        object_ids=relabelling.object_ids,
        count=np.int64(relabelling.count),
    )
    return relabelling


def _prepare_work(job: BlockwiseJob, identity: Dict[str, Any]) -> None:
    """Keep the work folder (and the output array) of an interrupted run with the same key; else start afresh."""
    key = _as_json(job.resume_key(identity))
    stored = read_json(job._path("key.json"))
    if stored == key:
        logger.info(f"{job.output!r}: resuming; daisy skips the blocks already done.")
        return
    if stored is not None:
        logger.info(f"{job.output!r}: the prediction, mode, options or block size changed; starting afresh.")
    shutil.rmtree(job.work, ignore_errors=True)
    shutil.rmtree(job.output, ignore_errors=True)  # ours (checked), and about to be replaced
    for folder in ("fragments", "ids", "contacts"):
        os.makedirs(job._path(folder))
    create_zarr_array(job._path("fragments"), job.shape, np.uint64, job.block_size)
    write_json_atomically(job._path("key.json"), key)


def _as_json(data: Dict[str, Any]) -> Dict[str, Any]:
    return json.loads(json.dumps(data))


def _check_output(output: str) -> None:
    """Refuse an output that is not a label array of ours; unmark one of ours (it is being replaced or resumed)."""
    if not os.path.exists(output):
        return
    attributes = read_json(os.path.join(output, ".zattrs")) or {}
    if MARK not in attributes:
        raise InputError(
            f"{argument('output')} {output!r} exists and is not a label array written by this tool; remove it or "
            "choose another name."
        )
    write_json_atomically(os.path.join(output, ".zattrs"), {MARK: {"complete": False}})


def _publish(job: BlockwiseJob, relabelling: Relabelling, voxel_size: Optional[Sequence[float]]) -> None:
    """Mark the label array complete, give its container OME-Zarr metadata, and drop the work folder."""
    container, inside = split_container(job.output)
    attributes = {
        MARK: {
            "complete": True,
            "mode": job.mode,
            "options": dataclasses.asdict(job.options),
            "prediction": f"{os.path.abspath(job.prediction)}:{job.dataset}",
            "objects": relabelling.count,
            "version": __version__,
        },
        **({"resolution": list(voxel_size)} if voxel_size else {}),
    }
    group = read_json(os.path.join(container, ".zattrs")) or {}
    others = [entry for entry in group.get("multiscales", []) if entry.get("name") != inside]
    group["multiscales"] = others + [ome_multiscale(inside, voxel_size, False)]
    if not os.path.isfile(os.path.join(container, ".zgroup")):
        write_json_atomically(os.path.join(container, ".zgroup"), {"zarr_format": 2})
    write_json_atomically(os.path.join(container, ".zattrs"), group)
    write_json_atomically(os.path.join(job.output, ".zattrs"), attributes)
    shutil.rmtree(job.work)


def segment_blockwise(
    prediction_path: str,
    output: str,
    mode: str,
    options: SegmentOptions,
    dataset: str = "vol0",
    block_size: Optional[Sequence[int]] = None,
    workers: int = 1,
    retries: int = 2,
    worker_command: Optional[str] = None,
    max_memory_gib: Optional[float] = None,
) -> int:
    """Decode ``prediction_path`` block by block on daisy workers into the zarr array ``output``; return the count.

    Args:
        prediction_path: PyTC's or our prediction (HDF5, or a ``.zarr`` folder).
        output: ``<container>.zarr/<array>``.
        mode: a key of :data:`~.decoders.DECODERS`.
        options: thresholds and sizes (checked).
        dataset: the prediction's dataset.
        block_size: voxels per block (z, y, x); None: :data:`DEFAULT_BLOCK_SIZE`, cut to the volume.
        workers: daisy workers, each a process pulling blocks.
        retries: tries of a failed block beyond the first, on any worker.
        worker_command: a command that starts each worker elsewhere (``srun -p cpu``, ``bsub -I``);
            None starts them on this machine.
        max_memory_gib: the memory the local workers' blocks may use together; None: what the machine has.
    """
    daisy = import_daisy("Blockwise decoding into a zarr array")
    if workers < 1:
        raise InputError(f"{argument('workers')} is {workers}, but must be 1 or more.")
    volume = open_prediction(prediction_path, dataset)
    try:
        check_channels(mode, volume.shape[0], options, repr(prediction_path))
        voxel_size, identity = prediction_voxel_size(volume), volume_identity(volume)
        shape = tuple(int(n) for n in volume.shape[1:])
    finally:
        close_volume(volume)
    sizes = check_block_size(block_size) if block_size is not None else DEFAULT_BLOCK_SIZE
    sizes = tuple(min(b, n) for b, n in zip(sizes, shape))
    settled = options.with_voxel_size(voxel_size)
    # Local workers share this machine's memory; a worker command gives each its own.
    check_block_memory(mode, DECODERS[mode], settled, sizes, shape, max_memory_gib, 1 if worker_command else workers)
    job = BlockwiseJob(os.path.abspath(prediction_path), dataset, mode, settled, shape, sizes, os.path.abspath(output))
    os.makedirs(split_container(job.output)[0], exist_ok=True)
    with OutputLock(f"{job.output}.lock", argument("output"), output):
        _check_output(job.output)
        _prepare_work(job, identity)
        logs = job._path("logs")
        set_log_folder(logs)
        first, relabel = _tasks(daisy, job, workers, retries, worker_command)
        run_pipeline(daisy, first, logs)
        relabelling = _load_relabelling(job) if os.path.isfile(job._path("relabelling.npz")) else _merge(job)
        dtype = label_dtype(relabelling.count)
        create_zarr_array(job.output, shape, dtype, sizes)
        write_json_atomically(os.path.join(job.output, ".zattrs"), {MARK: {"complete": False}})
        run_pipeline(daisy, relabel, logs)
        _publish(job, relabelling, voxel_size)
    return relabelling.count
