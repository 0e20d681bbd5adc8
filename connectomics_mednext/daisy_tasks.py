"""What our blockwise jobs share on daisy: its import, worker commands, and one sentence for failed blocks.

We write the per-block work; daisy schedules it. A job is a frozen dataclass of plain values
with one method per task taking a daisy block. daisy sends it to each worker process once. With
a worker command (``srun -p gpu --gres=gpu:1``, ``bsub -I``), each worker is started through
that command as ``python -m connectomics_mednext.worker <job file>``, which rebuilds the job
from the file and pulls blocks from daisy's scheduler like a local worker.
"""

import importlib
import os
import shlex
import subprocess
import sys
from typing import Any, Callable, Dict, Optional

from .errors import UserError, import_extra
from .io.json_files import write_json_atomically

SCALE_EXTRA = "pip install connectomics-mednext[scale]"


class BlockwiseError(UserError, RuntimeError):
    """Blocks failed on every try; the message names the first and its error."""


def import_daisy(purpose: str):
    """daisy's v2 API, or a :class:`MissingExtraError` naming the extra.

    Args:
        purpose: what needs it, for the message (``Blockwise decoding``).
    """
    return import_extra("daisy.v2", f"{purpose} needs daisy: {SCALE_EXTRA}.")


def set_log_folder(folder: str) -> None:
    """Send daisy's worker logs to ``folder`` (daisy's default is ``./daisy_logs``)."""
    importlib.import_module("daisy.logging").set_log_basedir(folder)


def worker_function(job: Any, task: str, worker_command: Optional[str], job_file: str) -> Callable:
    """What daisy runs for ``task``: the job's block method, or a worker started through ``worker_command``.

    Args:
        job: a dataclass job with a method per task.
        task: the task, a method name of ``job``.
        worker_command: the command that starts a worker elsewhere; None runs it here.
        job_file: where the job is written for such workers.
    """
    if not worker_command:
        return getattr(job, task)
    record = {"class": f"{type(job).__module__}:{type(job).__qualname__}", "task": task, "job": job.to_record()}
    write_json_atomically(job_file, record)
    command = shlex.split(worker_command) + [sys.executable, "-m", "connectomics_mednext.worker", job_file]

    def run_worker(*, context=None) -> None:
        # daisy's context tells the worker where its scheduler listens; srun and bsub pass the environment on.
        subprocess.run(command, env=dict(os.environ, DAISY_CONTEXT=context.to_env()), check=True)

    return run_worker


def job_from_file(record: Dict[str, Any]):
    """(the job, its task's method) that :func:`worker_function` wrote.

    Args:
        record: the job file's JSON.
    """
    module, name = record["class"].split(":")
    job = getattr(importlib.import_module(module), name).from_record(record["job"])
    return getattr(job, record["task"])


def run_pipeline(daisy, pipeline, logs: str) -> None:
    """Run a daisy task or pipeline on worker processes with its progress shown; raise one sentence for failures.

    Args:
        daisy: :func:`import_daisy`'s module.
        pipeline: a task or pipeline.
        logs: the worker log folder, for the message.
    """
    try:
        states = daisy.run_blockwise(pipeline, multiprocessing=True, progress=True, return_states=True)
    except RuntimeError as error:  # daisy gives up on a task whose workers keep dying
        reason = str(error).strip().splitlines()[0]
        raise BlockwiseError(f"daisy stopped: {reason} (worker logs: {logs}).") from error
    incomplete = {name: state for name, state in states.items() if state.completed_count != state.total_block_count}
    if not incomplete:
        return
    # The task whose own blocks failed, not one whose blocks waited on them.
    name = next((name for name, state in incomplete.items() if state.failed_count), next(iter(incomplete)))
    state = incomplete[name]
    tasks = pipeline.tasks if hasattr(pipeline, "tasks") else [pipeline]
    failed = next((task.failed_blocks() for task in tasks if task.task_id == name), [])
    where = ""
    if failed:
        roi = failed[0].write_roi
        axes = "zyx" if len(roi.begin) == 3 else ["block"]
        where = ", the first at " + ", ".join(f"{axis} {b}:{e}" for axis, b, e in zip(axes, roi.begin, roi.end))
    error = (state.last_worker_error or "no error was reported").strip().splitlines()[-1]
    unfinished = state.total_block_count - state.completed_count
    raise BlockwiseError(
        f"{unfinished} of {state.total_block_count} blocks of task {name!r} failed{where}: {error}; run the same "
        f"command again to retry only those (worker logs: {logs})."
    )
