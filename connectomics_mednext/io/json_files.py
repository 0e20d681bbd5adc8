"""Small JSON files beside volumes: metadata read, and records replaced atomically."""

import json
import os
from typing import Any, Dict, Optional


def read_json(path: str) -> Optional[Dict[str, Any]]:
    """The JSON object in ``path``, or None when there is no such file.

    Args:
        path: the file.
    """
    if not os.path.isfile(path):
        return None
    with open(path, encoding="utf-8") as handle:
        return json.load(handle)


def write_json_atomically(
    path: str, data: Dict[str, Any], indent: Optional[int] = None, sort_keys: bool = True
) -> None:
    """Write ``data`` as JSON so that a reader sees the old file or the new one, never half of it.

    Args:
        path: the file.
        data: plain data.
        indent: as ``json.dump``'s; None writes one line.
        sort_keys: write the keys sorted, else in ``data``'s order.
    """
    temporary = f"{path}.tmp{os.getpid()}"
    try:
        with open(temporary, "w", encoding="utf-8") as handle:
            json.dump(data, handle, sort_keys=sort_keys, indent=indent)
        os.replace(temporary, path)
    except BaseException:
        if os.path.exists(temporary):
            os.remove(temporary)
        raise
