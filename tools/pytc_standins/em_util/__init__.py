"""Stand-in for em_util: only what PyTorch Connectomics v1.0 imports (see ../README.md)."""
from . import io  # noqa: F401
