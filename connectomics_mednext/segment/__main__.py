"""``python -m connectomics_mednext.segment``."""

from .cli import main

main()
