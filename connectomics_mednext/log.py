"""The package logger: rank 0 speaks on the console; the text log (``MONITOR.LOG_OPT[2]``) keeps timestamps.

Modules log through ``logging.getLogger(__name__)``; every such logger sits under the package's
logger, which writes plain lines (the formats users and scripts read) to the current
``sys.stdout``. Under ``torch.distributed`` (or torchrun's ``RANK``) only rank 0's records reach
the console, unless a record is marked ``extra={"all_ranks": True}``. :func:`add_text_log`
adds a file with a timestamp on every line.
"""

import logging
import os
import sys
from typing import Optional

PACKAGE = __name__.split(".")[0]
TEXT_LOG_FORMAT = "%(asctime)s %(levelname)s %(name)s: %(message)s"


def current_rank() -> int:
    """This process's rank: the process group's, else torchrun's ``RANK``, else 0."""
    # A process that never imported torch has no process group; importing it here would cost a second.
    dist = getattr(sys.modules.get("torch"), "distributed", None)
    if dist is not None and dist.is_available() and dist.is_initialized():
        return dist.get_rank()
    return int(os.environ.get("RANK", "0"))


class _RankZeroOnly(logging.Filter):
    def filter(self, record: logging.LogRecord) -> bool:
        return getattr(record, "all_ranks", False) or current_rank() == 0


class _CurrentStdout(logging.StreamHandler):
    """A handler for whatever ``sys.stdout`` is at each record (pytest and notebooks swap it)."""

    def __init__(self) -> None:
        super().__init__(sys.stdout)

    @property
    def stream(self):
        return sys.stdout

    @stream.setter
    def stream(self, value) -> None:
        pass  # always the current sys.stdout


def _package_logger() -> logging.Logger:
    logger = logging.getLogger(PACKAGE)
    if not any(isinstance(h, _CurrentStdout) for h in logger.handlers):
        console = _CurrentStdout()
        console.setLevel(logging.INFO)
        console.setFormatter(logging.Formatter("%(message)s"))
        console.addFilter(_RankZeroOnly())
        logger.addHandler(console)
        # DEBUG records (iteration lines that MONITOR.LOG_OPT[0] keeps off the console) still reach the text log.
        logger.setLevel(logging.DEBUG)
        logger.propagate = False
    return logger


def get_logger(name: str) -> logging.Logger:
    """The logger of module ``name``, under the package logger with its console handler.

    Args:
        name: the module's ``__name__``.
    """
    _package_logger()
    return logging.getLogger(name)


def add_text_log(path: str) -> Optional[logging.Handler]:
    """Append this rank-0 process's records, with timestamps, to ``path`` (PyTC's ``log.txt``).

    Returns the handler, to pass to :func:`remove_text_log`; None on other ranks.

    Args:
        path: the text log.
    """
    if current_rank() != 0:
        return None
    handler = logging.FileHandler(path, mode="a", encoding="utf-8")
    handler.setLevel(logging.DEBUG)
    handler.setFormatter(logging.Formatter(TEXT_LOG_FORMAT))
    _package_logger().addHandler(handler)
    return handler


def remove_text_log(handler: Optional[logging.Handler]) -> None:
    """Stop and close a text log from :func:`add_text_log`.

    Args:
        handler: the handler, or None.
    """
    if handler is not None:
        _package_logger().removeHandler(handler)
        handler.close()
