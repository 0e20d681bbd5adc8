"""One writer per output: a lock file beside it, naming the process and host that hold it.

The lock is created atomically (``O_CREAT | O_EXCL``) and removed when the holder finishes,
whether it succeeds or fails. A second run that finds it held refuses at once, naming the
holder. A lock left by a process that was killed (``kill -9``, a node's crash) is taken over
when its holder is known to be gone: a process of this host that no longer exists. A holder
on another host cannot be checked from here, so its lock is refused until its owner removes it.
Taking over happens under ``flock`` on the lock's folder, so that of two runs that find the
same stale lock only one takes it.
"""

import fcntl
import json
import os
import socket
import time
from typing import Any, Dict, Optional

from ..errors import InputError
from ..log import get_logger

logger = get_logger(__name__)


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # another user's process
        return True
    return True


class OutputLock:
    """The lock ``<path>`` on one output; use as a context manager, or :meth:`acquire` and :meth:`release`.

    Args:
        path: the lock file, beside the output it guards (``result.h5.lock``, ``<OUTPUT_PATH>/.lock``).
        key: what names the output in messages (a config key, a flag or an argument).
        output: the output, for messages.
    """

    def __init__(self, path: str, key: str, output: str) -> None:
        self.path, self.key, self.output = path, key, output
        self.held = False

    def _holder(self) -> Optional[Dict[str, Any]]:
        try:
            with open(self.path, encoding="utf-8") as handle:
                return json.load(handle)
        except FileNotFoundError:
            return None
        except (OSError, ValueError):  # being written this instant, or not ours: treat as held, unknown
            return {}

    def _take_over_if_stale(self) -> bool:
        """Remove the lock if its holder is a gone process of this host; whether it was removed."""
        folder = os.open(os.path.dirname(os.path.abspath(self.path)), os.O_RDONLY)
        try:
            fcntl.flock(folder, fcntl.LOCK_EX)
            holder = self._holder()
            if holder is None:
                return True
            pid, host = holder.get("pid"), holder.get("host")
            if host != socket.gethostname() or not isinstance(pid, int) or _alive(pid):
                return False
            os.remove(self.path)
        finally:
            os.close(folder)  # which releases the flock
        logger.info(f"{self.output!r}: took over the lock of process {pid}, which is gone (killed?).")
        return True

    def acquire(self) -> None:
        """Take the lock, or raise one sentence naming the process that holds it."""
        record = {"pid": os.getpid(), "host": socket.gethostname(), "since": time.strftime("%Y-%m-%d %H:%M:%S")}
        while True:
            try:
                descriptor = os.open(self.path, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o644)
            except FileExistsError:
                if self._take_over_if_stale():
                    continue
                holder = self._holder() or {}
                raise InputError(
                    f"{self.key} {self.output!r} is being written by process {holder.get('pid', '?')} on "
                    f"{holder.get('host', '?')} (since {holder.get('since', '?')}); wait for it to finish, or remove "
                    f"{self.path!r} if that process is gone."
                ) from None
            except OSError as error:
                raise InputError(f"{self.key} {self.output!r} cannot be locked ({error.strerror}).") from error
            with os.fdopen(descriptor, "w", encoding="utf-8") as handle:
                json.dump(record, handle)
            self.held = True
            return

    def release(self) -> None:
        """Remove the lock if this process holds it."""
        if self.held:
            self.held = False
            if os.path.exists(self.path):
                os.remove(self.path)

    def __enter__(self) -> "OutputLock":
        self.acquire()
        return self

    def __exit__(self, *exc_info) -> None:
        self.release()
