"""Progress of a long prediction: a line at a steady rate, and a small JSON file another process can read.

Lines come every ``interval`` seconds (not per window), with the share done, the blocks, voxels
per second and the time left; under several ranks each rank reports its own share. The file
``<output>.progress.json`` (``<output>.rank<r>.progress.json`` per rank) is replaced atomically
at every line, so ``cat`` or a monitoring script always reads a whole record while the
prediction file itself is open for writing; it is removed when the rank is done. Plain lines,
not a progress bar: they read the same on a terminal, in a SLURM log and in the text log.
"""

import os
import time
from typing import Optional

from ..io.json_files import write_json_atomically
from ..log import get_logger

logger = get_logger(__name__)

# Seconds between progress lines.
PROGRESS_INTERVAL = 10.0


def _duration(seconds: float) -> str:
    if seconds >= 3600:
        return f"{seconds / 3600:.1f} h"
    return f"{seconds / 60:.1f} min" if seconds >= 60 else f"{seconds:.0f} s"


class PredictionProgress:
    """Counts the output voxels this rank writes and reports them.

    Args:
        path: the progress file, or None for lines only.
        rank: this process's rank.
        world_size: the processes sharing the work (their lines name their rank).
        interval: seconds between lines (default :data:`PROGRESS_INTERVAL`).
    """

    def __init__(
        self, path: Optional[str], rank: int = 0, world_size: int = 1, interval: Optional[float] = None
    ) -> None:
        self.path, self.rank, self.world_size = path, rank, world_size
        self.interval = PROGRESS_INTERVAL if interval is None else interval
        self.volume, self.total, self.done, self.blocks, self.blocks_done = "", 0, 0, 0, 0
        self.began = self.last = time.perf_counter()

    def start_volume(self, name: str, voxels: int, blocks: int, done: int = 0, blocks_done: int = 0) -> None:
        """Begin counting a volume: this rank's share of its output voxels and blocks.

        Args:
            name: the output dataset (``vol0``).
            voxels: this rank's output voxels (all channels count once).
            blocks: this rank's blocks.
            done: voxels an interrupted run already wrote.
            blocks_done: blocks an interrupted run already finished.
        """
        self.volume, self.total, self.done, self.blocks, self.blocks_done = name, voxels, done, blocks, blocks_done
        self.began = time.perf_counter()
        self._resumed = done
        self.report(force=True)

    def advance(self, voxels: int, block_finished: bool) -> None:
        """Count ``voxels`` more output voxels written.

        Args:
            voxels: the voxels just written.
            block_finished: whether they ended a block.
        """
        self.done += voxels
        self.blocks_done += int(block_finished)
        self.report(force=self.done >= self.total)

    def report(self, force: bool = False) -> None:
        """A line and the file, when ``interval`` has passed since the last (or ``force``)."""
        now = time.perf_counter()
        if not force and now - self.last < self.interval:
            return
        self.last = now
        elapsed = now - self.began
        rate = (self.done - self._resumed) / elapsed if elapsed > 0 else 0.0
        left = (self.total - self.done) / rate if rate > 0 else None
        share = 100.0 * self.done / self.total if self.total else 100.0
        who = f"rank {self.rank}: " if self.world_size > 1 else ""
        eta = f", ETA {_duration(left)}" if left is not None and self.done < self.total else ""
        logger.info(
            f"{who}{self.volume}: {share:5.1f}% ({self.blocks_done}/{self.blocks} blocks), "
            f"{rate / 1e6:.2f} Mvox/s{eta}",
            extra={"all_ranks": True},
        )
        if self.path is not None:
            record = {
                "volume": self.volume,
                "rank": self.rank,
                "voxels_done": self.done,
                "voxels_total": self.total,
                "blocks_done": self.blocks_done,
                "blocks_total": self.blocks,
                "voxels_per_s": rate,
                "eta_s": left,
                "updated": time.time(),
            }
            write_json_atomically(self.path, record)

    def close(self) -> None:
        """Remove the progress file: the output tells the rest."""
        if self.path is not None and os.path.exists(self.path):
            os.remove(self.path)
