"""Train or infer MedNeXt with PyTorch Connectomics' flags: ``python scripts/main.py --config-file ...``."""

from connectomics_mednext.cli import main

if __name__ == "__main__":
    main()
