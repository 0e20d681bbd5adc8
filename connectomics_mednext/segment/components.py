"""connected-components-3d, the one library our decoders label components with, and the extra that brings it."""

from ..errors import import_extra

SEGMENT_EXTRA = "pip install connectomics-mednext[segment]"


def import_cc3d():
    """The cc3d module, or a :class:`MissingExtraError` naming the extra."""
    return import_extra("cc3d", f"Connected components need connected-components-3d: {SEGMENT_EXTRA}.")
