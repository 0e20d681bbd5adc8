"""Prediction on daisy workers: each loads the network once and pulls blocks of a zarr prediction.

``scripts/main.py --inference ... --workers N`` with ``INFERENCE.OUTPUT_NAME`` ending ``.zarr``.
The main process does what a single run does (the same plan, blocks, resume key and arrays,
so the bytes are the same; the lock; the publication at the end), except that each volume's
blocks are computed by a daisy task whose block ``n`` is the plan's block ``n``. A block is done
when its marker (``.progress/vol<i>/<n>.done``, written after its data) exists: daisy's done
check reads the very markers a single run and torchrun's ranks use, so finished blocks have one
record, whoever computed them. A worker that dies has its block retried by another; a rerun
after the whole job died computes only the blocks without a marker.
"""

import dataclasses
import os
import warnings
from dataclasses import dataclass
from typing import Any, Dict, Optional, Sequence, Tuple

import torch

from ..config import load_native_cfg
from ..daisy_tasks import import_daisy, run_pipeline, set_log_folder, worker_function
from ..errors import ConfigError
from ..geometry import Box
from ..io import open_volume
from ..io.zarr_prediction import PROGRESS, ZarrBlocks, reopen_blocks
from ..log import get_logger
from .distributed import default_device
from .predictor import BlockRunner, Predictor, VolumePlan
from .threads import set_threads

logger = get_logger(__name__)
RETRIES = 2


@dataclass(frozen=True)
class PredictionJob:
    """One volume's prediction, in plain values, for daisy's workers.

    Args:
        config_file: the run's config, saved in the output's progress folder.
        checkpoint: the weights.
        image: the input volume's name.
        output_path: the final ``.zarr`` folder.
        index: the volume's index (array ``vol<index>``).
        blocks: the plan's blocks, as (begin, end) spans per axis.
        sharers: workers sharing this machine's CPUs (1 when a worker command gives each its own).
    """

    config_file: str
    checkpoint: str
    image: str
    output_path: str
    index: int
    blocks: Tuple[Tuple[Tuple[int, int], ...], ...]
    sharers: int = 1

    def to_record(self) -> Dict[str, Any]:
        """The job as plain values, for a worker command's job file."""
        return dataclasses.asdict(self)

    @classmethod
    def from_record(cls, record: Dict[str, Any]) -> "PredictionJob":
        """The job :meth:`to_record` wrote.

        Args:
            record: its plain values.
        """
        blocks = tuple(tuple(tuple(span) for span in block) for block in record["blocks"])
        return cls(**{**record, "blocks": blocks})

    def predict(self, block) -> None:
        """daisy's task: predict the plan's block number ``block.write_roi.begin[0]``."""
        predictor, plan, target = _worker_state(self)
        with torch.no_grad():  # not a decorator: daisy reads this method's arity
            predictor.predict_block(plan, int(block.write_roi.begin[0]), target)


_STATE: Dict[Tuple[str, int], Tuple[Predictor, VolumePlan, ZarrBlocks]] = {}


def _worker_state(job: PredictionJob) -> Tuple[Predictor, VolumePlan, ZarrBlocks]:
    """The network (loaded once per worker process), the volume's plan and its output array."""
    key = (job.output_path, job.index)
    if key not in _STATE:
        from .inference import build_predictor, inference_window, load_trained_model

        logger.info(set_threads(sharers=job.sharers))
        cfg = load_native_cfg(job.config_file)
        model = load_trained_model(cfg, job.checkpoint)
        predictor = build_predictor(cfg, model, inference_window(cfg, model), worker_device())
        plan = predictor.plan(open_volume(job.image))
        plan = dataclasses.replace(plan, blocks=[Box.from_spans(block) for block in job.blocks])
        shape = (predictor.channels,) + tuple(plan.shape)
        _STATE[key] = (predictor, plan, reopen_blocks(job.output_path, job.index, shape, plan.blocks))
    return _STATE[key]


def worker_device() -> torch.device:
    """A GPU per worker when there are GPUs (worker i takes GPU i mod count), else the CPU."""
    if not torch.cuda.is_available():
        return default_device()
    worker = int(import_daisy("Prediction on daisy workers").Context.from_env().get("worker_id", 0))
    return torch.device("cuda", worker % torch.cuda.device_count())


def daisy_block_runner(
    cfg, checkpoint: str, names: Sequence[str], output_path: str, workers: int, worker_command: Optional[str]
) -> BlockRunner:
    """What :meth:`Predictor.predict_to_file` calls per volume to have daisy's workers compute its blocks.

    Args:
        cfg: the run's frozen config (saved for the workers).
        checkpoint: the weights.
        names: the input volumes' names.
        output_path: the ``.zarr`` prediction.
        workers: daisy workers.
        worker_command: starts each worker elsewhere (``srun ...``); None: on this machine.
    """
    daisy = import_daisy("Prediction on daisy workers")
    if not output_path.rstrip("/").lower().endswith(".zarr"):
        raise ConfigError(
            f"--workers needs a zarr prediction that every worker can write (INFERENCE.OUTPUT_NAME ending .zarr); "
            f"{output_path!r} is HDF5."
        )
    if workers < 1:
        raise ConfigError(f"--workers is {workers}, but must be 1 or more.")
    progress = os.path.join(output_path.rstrip("/") + ".partial", PROGRESS)

    def run_blocks(index: int, plan: VolumePlan, target: ZarrBlocks) -> None:
        config_file = os.path.join(progress, "config.yaml")
        with open(config_file, "w", encoding="utf-8") as handle:
            handle.write(cfg.dump())
        blocks = tuple(tuple(tuple(span) for span in block.spans) for block in plan.blocks)
        job = PredictionJob(
            config_file,
            os.path.abspath(checkpoint),
            os.path.abspath(names[index]),
            os.path.abspath(output_path),
            index,
            blocks,
        )
        logs = os.path.join(progress, "logs")
        set_log_folder(logs)
        with warnings.catch_warnings():
            # daisy prefers its own markers to a check; ours are the one record every engine path shares.
            warnings.filterwarnings("ignore", message=".*check_function.*", category=UserWarning)
            task = daisy.Task(
                f"predict_vol{index}",
                total_roi=daisy.Roi((0,), (len(blocks),)),
                read_roi=daisy.Roi((0,), (1,)),
                write_roi=daisy.Roi((0,), (1,)),
                process_function=worker_function(
                    job, "predict", worker_command, os.path.join(progress, f"job_vol{index}.json")
                ),
                check_function=lambda block: target.done(int(block.write_roi.begin[0])),
                read_write_conflict=False,
                max_workers=workers,
                max_retries=RETRIES,
            )
        run_pipeline(daisy, task, logs)

    return run_blocks
