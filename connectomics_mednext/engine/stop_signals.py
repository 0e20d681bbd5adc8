"""SIGTERM and SIGINT as a request to stop at the next safe point, not a kill.

Schedulers (SLURM, Kubernetes, most batch systems) send SIGTERM some time before they kill a
job, and background jobs never see Ctrl-C's SIGINT, so both must lead to a saved checkpoint.
A second signal of either kind stops the process at once, as users expect of a second Ctrl-C.
"""

import signal
import threading
from types import FrameType
from typing import Dict, Optional

from ..log import get_logger

logger = get_logger(__name__)

STOP_SIGNALS = (signal.SIGTERM, signal.SIGINT)


class StopRequest:
    """While active (a ``with`` block in the main thread), remembers the first stop signal received.

    Args:
        action: what the process is doing, for the line printed when a signal arrives.
    """

    def __init__(self, action: str = "finishing the current step, then saving a checkpoint") -> None:
        self.action = action
        self.signal: Optional[int] = None
        self._previous: Dict[int, object] = {}

    @property
    def requested(self) -> bool:
        """Whether a stop signal has arrived."""
        return self.signal is not None

    @property
    def name(self) -> str:
        """The signal's name, e.g. ``SIGTERM``."""
        return signal.Signals(self.signal).name if self.signal is not None else ""

    @property
    def exit_code(self) -> int:
        """The shell's convention for a process ended by the signal: 128 + its number."""
        return 128 + int(self.signal or 0)

    def _handle(self, number: int, frame: Optional[FrameType]) -> None:
        if self.signal is not None:
            signal.signal(number, signal.SIG_DFL)
            signal.raise_signal(number)
            return
        self.signal = number
        # Every rank gets the signal from torchrun, and each says what it will do.
        logger.warning(
            f"{signal.Signals(number).name} received: {self.action} (send it again to stop at once).",
            extra={"all_ranks": True},
        )

    def __enter__(self) -> "StopRequest":
        # Signal handlers can only be installed from the main thread; elsewhere the defaults stay.
        if threading.current_thread() is threading.main_thread():
            self._previous = {number: signal.signal(number, self._handle) for number in STOP_SIGNALS}
        return self

    def __exit__(self, *exc_info) -> None:
        for number, handler in self._previous.items():
            signal.signal(number, handler)
        self._previous = {}


class TrainingStopped(Exception):
    """Training stopped at a stop signal after saving a checkpoint; the command line exits with ``exit_code``.

    Args:
        message: what was saved and how to resume.
        exit_code: 128 + the signal's number (1 when another rank was signalled).
    """

    def __init__(self, message: str, exit_code: int) -> None:
        super().__init__(message)
        self.exit_code = exit_code
