"""How a prediction output compares the resume key it was started with to this run's.

The key itself is assembled in :mod:`connectomics_mednext.engine.resume_key`.
"""

import json
from typing import Any, Dict, List


def changed_fields(stored: Dict[str, Any], wanted: Dict[str, Any]) -> List[str]:
    """The names of the resume-key fields that differ (``input.mtime_ns`` for nested ones).

    Args:
        stored: the key an unfinished output was started with.
        wanted: this run's key.
    """
    changed = []
    for name in sorted(set(stored) | set(wanted)):
        old, new = stored.get(name), wanted.get(name)
        if isinstance(old, dict) and isinstance(new, dict):
            changed += [f"{name}.{inner}" for inner in changed_fields(old, new)]
        elif old != new:
            changed.append(name)
    return changed


def as_stored(key: Dict[str, Any]) -> Dict[str, Any]:
    """A resume key as it comes back from a file (tuples become lists), so keys compare alike.

    Args:
        key: plain data.
    """
    return json.loads(json.dumps(key))


def restart_line(where: str, name: str, changed: List[str]) -> str:
    """The line that says an unfinished output is started afresh, naming the fields that changed.

    Args:
        where: the unfinished file or folder.
        name: its dataset or array (``vol0``).
        changed: from :func:`changed_fields`.
    """
    return f"{where!r}: {name} was started with other {', '.join(changed)}; starting it afresh."
