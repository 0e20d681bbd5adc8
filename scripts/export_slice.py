"""Look at a prediction: one z slice as a PNG (connectomics-mednext-export-slice; see --help)."""

from connectomics_mednext.export_slice import main

if __name__ == "__main__":
    main()
