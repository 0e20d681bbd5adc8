"""The folders our engine writes into, created up front with one sentence when they cannot be."""

import os

from ..errors import InputError


def make_output_folder(path: str, key: str) -> None:
    """Create the folder ``key`` names, or raise one sentence saying why it cannot be written.

    Args:
        path: the folder.
        key: its config key, for the message.
    """
    path = path or "."  # an empty path is the current folder, as os.path.join reads it
    try:
        os.makedirs(path, exist_ok=True)
    except OSError as error:
        raise InputError(f"{key} {path!r} cannot be created ({error.strerror}).") from error
    if not os.access(path, os.W_OK):
        raise InputError(f"{key} {path!r} is not writable.")
