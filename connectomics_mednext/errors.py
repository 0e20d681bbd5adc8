"""The mistakes a user can make, as exception types the command line prints as one sentence.

Each type also derives from the built-in exception a Python caller would expect
(``ValueError``, ``FileNotFoundError``, ``KeyError``), so library code can catch either.

Library code names a function's argument with :func:`argument`: a Python caller reads the
argument's own name (``threshold``), and a front end renames it to what its user wrote, a
flag (``--threshold``) or a config key (``INFERENCE.DECODE``), with :func:`argument_names`.
"""

import difflib
import importlib
import os
import re
import sys
import traceback
from contextlib import contextmanager
from typing import Any, Callable, Dict, Iterable, Iterator, List, Mapping, Optional, Union

USAGE_ERROR = 2
# Control characters never occur in the values a message quotes, so they can bracket an argument's name.
_ARGUMENT = re.compile("\x02([A-Za-z0-9_]+)\x03")


def argument(name: str) -> str:
    """The placeholder for argument ``name`` in a :class:`UserError` message.

    Args:
        name: the Python argument's name, as a caller of the library function writes it.
    """
    return f"\x02{name}\x03"


class UserError(Exception):
    """A mistake in the config, on the command line or in an input file; the message names it.

    Args:
        message: one sentence naming the key, flag, file or argument (see :func:`argument`) and
            what was expected.
    """

    def __init__(self, *args: Any) -> None:
        super().__init__(*args)
        self.names: Dict[str, str] = {}

    def name_arguments(self, names: Mapping[str, str]) -> "UserError":
        """Name the message's arguments as ``names`` says, unless a front end nearer the call did; return self.

        Args:
            names: argument name -> the flag or config key the user wrote.
        """
        for name, shown in names.items():
            self.names.setdefault(name, shown)
        return self

    def __str__(self) -> str:
        # KeyError's own __str__ would quote the message.
        text = str(self.args[0]) if self.args else ""
        return _ARGUMENT.sub(lambda match: self.names.get(match.group(1), match.group(1)), text)


@contextmanager
def argument_names(names: Mapping[str, str]) -> Iterator[None]:
    """Within the block, a :class:`UserError` names its arguments as ``names`` says.

    Args:
        names: argument name -> the flag or config key the user wrote.
    """
    try:
        yield
    except UserError as error:
        error.name_arguments(names)
        raise


class ConfigError(UserError, ValueError):
    """A config value (or flag) that cannot be used; the message names the key."""


class InputError(UserError, ValueError):
    """An input volume or file that is not what was expected; the message names the file."""


class MissingFileError(UserError, FileNotFoundError):
    """A file named in the config or on the command line does not exist."""


class MissingDatasetError(UserError, KeyError):
    """An HDF5 file does not hold the dataset that was asked for."""


class MissingExtraError(UserError, ImportError):
    """An optional dependency is missing; the message names the pip extra that brings it."""


class WriteError(UserError, OSError):
    """An output could not be written (a full disk, a quota, permissions); nothing incomplete was published."""


def failure_reason(error: BaseException) -> str:
    """The cause of a failed read or write in a few words: the system's for its errno, else the first line.

    Args:
        error: what the read or write raised.
    """
    number = getattr(error, "errno", None)
    if isinstance(number, int) and number > 0:
        return os.strerror(number)
    return (str(error).strip().splitlines() or [type(error).__name__])[0]


class CheckpointError(UserError, ValueError):
    """A checkpoint that cannot be read, or does not fit the configured network."""


def import_extra(module: str, needs: str) -> Any:
    """Import an optional dependency, or raise :class:`MissingExtraError` with ``needs``.

    Args:
        module: the module's dotted name (``skimage.segmentation``).
        needs: the sentence that names what needs it and the pip extra that brings it.
    """
    try:
        return importlib.import_module(module)
    except ImportError as error:
        raise MissingExtraError(needs) from error


def closest(name: str, candidates: Iterable[str]) -> Optional[str]:
    """The candidate most like ``name`` (for "did you mean"), or None when none is close.

    Args:
        name: what the user wrote.
        candidates: the valid names.
    """
    # Case-insensitive, since 'adamw' and 'Adamw' both mean 'AdamW'.
    by_lower = {str(c).lower(): str(c) for c in candidates}
    matches = difflib.get_close_matches(str(name).lower(), list(by_lower), n=1, cutoff=0.6)
    return by_lower[matches[0]] if matches else None


def look_up_option(key: str, value: Any, choices: Union[Mapping[Any, Any], Iterable[Any]]) -> Any:
    """``value`` if it is one of ``choices`` (its entry, for a mapping), else a :class:`ConfigError`.

    The message names ``key``, lists the choices and suggests the closest one.

    Args:
        key: the config key or flag, for the message.
        value: the value given.
        choices: the valid values, or a mapping from them.
    """
    options = choices if isinstance(choices, Mapping) else {c: c for c in choices}
    if value in options:
        return options[value]
    # Numbers in numeric order, then names (and None) alphabetically.
    names = sorted(options, key=lambda c: (0, c, "") if isinstance(c, (int, float)) else (1, 0, str(c)))
    hint = closest(value, names) if isinstance(value, str) else None
    suggestion = f"; did you mean {hint!r}?" if hint is not None else "."
    raise ConfigError(f"{key} must be one of {names}, got {value!r}{suggestion}")


def run_reporting_errors(
    run: Callable[[List[str]], Any], argv: Optional[List[str]] = None, flags: Optional[Mapping[str, str]] = None
) -> Any:
    """Run a command line's ``run(argv)``; print a :class:`UserError` as one line and exit 2.

    With ``--debug`` among the arguments the traceback is printed too.

    Args:
        run: the command, raising on mistakes.
        argv: its arguments; ``None`` reads ``sys.argv``.
        flags: library argument name -> the command's flag, so that messages name flags.
    """
    argv = list(sys.argv[1:] if argv is None else argv)
    try:
        with argument_names(flags or {}):
            return run(argv)
    except UserError as error:
        if "--debug" in argv:
            traceback.print_exc()
        print(f"error: {error}", file=sys.stderr, flush=True)
        raise SystemExit(USAGE_ERROR) from None
