from setuptools import find_packages, setup

# Decoding and scoring (connectomics-mednext-segment, -evaluate): distance transforms and
# watersheds, connected components, and waterz for affinities.
SEGMENT = ["scipy", "scikit-image", "connected-components-3d", "waterz"]

setup(
    name="connectomics-mednext",
    version="0.2.0",
    description="MedNeXt for volumetric EM segmentation: standalone, or as a PyTorch Connectomics v1.0 plugin.",
    long_description=open("README.md", encoding="utf-8").read(),
    long_description_content_type="text/markdown",
    license="Apache-2.0",
    packages=find_packages(include=["connectomics_mednext", "connectomics_mednext.*"]),
    python_requires=">=3.9",
    install_requires=["torch>=2.1", "yacs", "pyyaml", "numpy", "h5py", "tensorboard"],
    extras_require={
        "test": ["pytest", "tifffile"] + SEGMENT,
        "tiff": ["tifffile"],
        "segment": SEGMENT,
        "bench": ["monai"],
    },
    entry_points={"console_scripts": [
        "connectomics-mednext = connectomics_mednext.cli:main",
        "connectomics-mednext-segment = connectomics_mednext.segment.cli:main",
        "connectomics-mednext-evaluate = connectomics_mednext.evaluate.cli:main",
    ]},
)
