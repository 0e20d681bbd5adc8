"""What predictions in any format share: their dtype and the resume-key comparison."""
from typing import Any, Dict, List

import numpy as np

# Probability x 255, clipped, as PyTC writes it.
OUTPUT_DTYPE = np.uint8


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
