import re

from setuptools import find_packages, setup

# The version lives in connectomics_mednext/version.py alone; read, not imported (torch may be absent here).
VERSION = re.search(r'__version__ = "([^"]+)"', open("connectomics_mednext/version.py", encoding="utf-8").read())[1]

# Decoding and scoring (connectomics-mednext-segment, -evaluate): distance transforms and
# watersheds, connected components, waterz for affinities, and Pillow for export-slice PNGs.
SEGMENT = ["scipy", "scikit-image", "connected-components-3d", "waterz", "pillow"]
# Chunked volumes in and out: zarr (v2, v3), N5 and Neuroglancer precomputed through one library.
ZARR = ["tensorstore"]
# Past one machine: daisy schedules blocks on local or cluster workers, with retries and done markers.
# daisy 2 needs Python 3.11; on older Pythons the extra installs the rest and blockwise runs say what is missing.
SCALE = ['daisy>=2.0; python_version >= "3.11"'] + SEGMENT + ZARR
# The docs site: MkDocs Material, and mkdocstrings for the API reference from the docstrings.
DOCS = ["mkdocs>=1.6", "mkdocs-material>=9.5", "mkdocstrings[python]>=0.29"]

setup(
    name="connectomics-mednext",
    version=VERSION,
    description="MedNeXt for volumetric EM segmentation: standalone, or as a PyTorch Connectomics v1.0 plugin.",
    long_description=open("README.md", encoding="utf-8").read(),
    long_description_content_type="text/markdown",
    license="Apache-2.0",
    packages=find_packages(include=["connectomics_mednext", "connectomics_mednext.*"]),
    python_requires=">=3.9",
    install_requires=["torch>=2.1", "yacs", "pyyaml", "numpy", "h5py", "tensorboard"],
    extras_require={
        # zarr-python only checks, in the tests, that our zarr output opens in another reader.
        # ruff lints; MONAI checks our loader of its MedNeXt checkpoints; the docs build strictly in a test.
        "test": ["pytest", "ruff==0.17.6", "tifffile", "zarr", "monai"] + SCALE + DOCS,
        "tiff": ["tifffile"],
        "segment": SEGMENT,
        "zarr": ZARR,
        "scale": SCALE,
        "bench": ["monai"],
        "docs": DOCS,
    },
    entry_points={
        "console_scripts": [
            "connectomics-mednext = connectomics_mednext.cli:main",
            "connectomics-mednext-segment = connectomics_mednext.segment.cli:main",
            "connectomics-mednext-evaluate = connectomics_mednext.evaluate.cli:main",
            "connectomics-mednext-export-slice = connectomics_mednext.export_slice:main",
        ]
    },
)
