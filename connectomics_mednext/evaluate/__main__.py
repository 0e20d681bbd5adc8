"""``python -m connectomics_mednext.evaluate``."""

from .cli import main

main()
