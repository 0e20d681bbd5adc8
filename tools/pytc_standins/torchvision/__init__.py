"""Stand-in for torchvision: only what PyTorch Connectomics v1.0 imports (see ../README.md)."""
from . import transforms, utils  # noqa: F401
