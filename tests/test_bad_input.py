"""Every mistake a user can make on the command line, in a YAML or in an input file.

Each case runs the real command line (in process) and checks: exit code 2, one line that names
the key, flag or file, no traceback without --debug, and no file left in the output folder.
The README's "Errors" section lists these cases and their messages.
"""

import os
import re

import h5py
import numpy as np
import pytest
import torch
from conftest import BASE, TINY_SHAPE

from connectomics_mednext import cli

SHAPE = TINY_SHAPE


@pytest.fixture(scope="module")
def data(tiny_run):
    return tiny_run


def _h5(path, array, name="main"):
    with h5py.File(path, "w") as f:
        f.create_dataset(name, data=array)


def _float_image(folder, values=None):
    image = np.random.default_rng(0).random(SHAPE).astype(np.float32) if values is None else values
    _h5(folder / "float.h5", image)


def _nan_image(folder):
    image = np.random.default_rng(0).random(SHAPE).astype(np.float32)
    image[1, 2, 3] = np.nan
    _h5(folder / "float.h5", image)


def _nan_label(folder):
    label = np.ones(SHAPE, np.float32)
    label[4, 5, 6] = np.inf
    _h5(folder / "flabel.h5", label)


def _tiff_rgb(folder):
    tifffile = pytest.importorskip("tifffile")
    tifffile.imwrite(folder / "rgb.tif", np.zeros((2, 40, 40, 3), np.uint8), photometric="rgb")


def _zarr(folder, name, array):
    ts = pytest.importorskip("tensorstore", reason="chunked stores need the zarr extra")
    metadata = {"shape": list(array.shape), "chunks": list(array.shape), "dtype": array.dtype.str}
    store = ts.open(
        {"driver": "zarr", "kvstore": {"driver": "file", "path": f"{folder}/v.zarr/{name}/"}, "metadata": metadata},
        create=True,
    ).result()
    store[...] = array


def _volume(path, array):
    with h5py.File(path, "w") as f:
        f.create_dataset("main", data=array)


def _corrupt_copy(source, target):
    """``source``'s volume, gzip-compressed in chunks of 8 planes, with bytes of its middle chunk flipped."""
    with h5py.File(source, "r") as f:
        data = f["main"][:]
    with h5py.File(target, "w") as f:
        f.create_dataset("main", data=data, chunks=(8,) + data.shape[1:], compression="gzip")
        offset, size = f["main"].id.get_chunk_info(1).byte_offset, f["main"].id.get_chunk_info(1).size
    raw = bytearray(target.read_bytes())
    for i in range(offset + 16, offset + size - 16):
        raw[i] ^= 0xFF
    target.write_bytes(bytes(raw))


def _file_in_the_way(folder, name):
    pytest.importorskip("tensorstore", reason="chunked stores need the zarr extra")
    (folder / name).write_text("a file where the store's folder would go")


def _truncated_checkpoint(folder, data):
    payload = (data / "trained" / "checkpoint_00001.pth.tar").read_bytes()
    (folder / "cut.pth.tar").write_bytes(payload[: len(payload) // 2])


CHECKPOINT = "{data}/trained/checkpoint_00001.pth.tar"
INFER = ["--inference", "--checkpoint", CHECKPOINT]
# A checkpoint as PyTorch Connectomics writes it: weights, no config; only the weights' fit can be checked.
PYTC_INFER = ["--inference", "--checkpoint", "{case}/pytc.pth.tar"]


def _pytc_checkpoint(case, data):
    state = torch.load(f"{data}/trained/checkpoint_00001.pth.tar", weights_only=True)
    del state["config"]
    torch.save(state, case / "pytc.pth.tar")


# (id, extra arguments, files to make first, regex the one-line message must match)
CASES = [
    (
        "missing config file",
        ["--config-file", "{case}/nope.yaml"],
        None,
        r"--config-file: file .*nope\.yaml.* does not exist",
    ),
    (
        "python config file",
        ["--config-file", "{case}/cfg.py"],
        lambda c, d: (c / "cfg.py").write_text("x = 1\n"),
        r"--config-file .*cfg\.py.* must be a YAML file",
    ),
    (
        "empty yaml",
        ["--config-file", "{case}/empty.yaml"],
        lambda c, d: (c / "empty.yaml").write_text(""),
        r"--config-file .*empty\.yaml.* is empty",
    ),
    (
        "invalid yaml",
        ["--config-file", "{case}/bad.yaml"],
        lambda c, d: (c / "bad.yaml").write_text("MODEL: [1\n"),
        r"--config-file .*bad\.yaml.* is not valid YAML at line 2",
    ),
    (
        "duplicate yaml key",
        ["--config-file", "{case}/twice.yaml"],
        lambda c, d: (c / "twice.yaml").write_text((d / "cfg.yaml").read_text() + "SOLVER:\n  BASE_LR: 0.5\n"),
        r"--config-file .*twice\.yaml.* is not valid YAML at line \d+: the key 'SOLVER' is given twice in one "
        r"mapping \(also at line \d+\)\.$",
    ),
    (
        "yaml key that is a list",
        ["--config-file", "{case}/listkey.yaml"],
        lambda c, d: (c / "listkey.yaml").write_text("? [a, b]\n: 1\n"),
        r"--config-file .*listkey\.yaml.* is not valid YAML at line 1: found unhashable key\.$",
    ),
    (
        "yaml list",
        ["--config-file", "{case}/list.yaml"],
        lambda c, d: (c / "list.yaml").write_text("- 1\n"),
        r"--config-file .*list\.yaml.* holds a YAML list",
    ),
    (
        "typo in yaml",
        ["--config-file", "{case}/typo.yaml"],
        lambda c, d: (c / "typo.yaml").write_text("MODEL:\n  MEDNEXT_SIZ: S\n"),
        r"typo\.yaml: MODEL\.MEDNEXT_SIZ is not a config key; did you mean 'MODEL\.MEDNEXT_SIZE'\?",
    ),
    (
        "typo on command line",
        ["SOLVER.ITERATION_TOTL", "5"],
        None,
        r"the command line: SOLVER\.ITERATION_TOTL is not a config key; did you mean 'SOLVER\.ITERATION_TOTAL'\?",
    ),
    (
        "PyTC key outside our subset",
        ["DATASET.REJECT_SAMPLING", "1"],
        None,
        r"DATASET\.REJECT_SAMPLING is not a config key; this engine reads a subset of PyTC's keys",
    ),
    (
        "augmentation we do not implement",
        ["AUGMENTOR.COPYPASTE.ENABLED", "True"],
        None,
        r"AUGMENTOR\.COPYPASTE\.ENABLED is True, but our engine does not implement COPYPASTE",
    ),
    (
        "wrong type",
        ["SOLVER.ITERATION_SAVE", "1.5"],
        None,
        r"SOLVER\.ITERATION_SAVE must be of type int \(like its default 1\), got 1\.5",
    ),
    ("override without value", ["SOLVER.BASE_LR"], None, r"KEY VALUE pairs; 'SOLVER\.BASE_LR' has no value"),
    (
        "other architecture",
        ["MODEL.ARCHITECTURE", "unet_3d"],
        None,
        r"MODEL\.ARCHITECTURE is 'unet_3d', but our engine needs 'mednext'",
    ),
    (
        "negative total",
        ["SOLVER.ITERATION_TOTAL", "-1"],
        None,
        r"SOLVER\.ITERATION_TOTAL is -1, but our engine needs a positive",
    ),
    ("save every 0", ["SOLVER.ITERATION_SAVE", "0"], None, r"SOLVER\.ITERATION_SAVE is 0"),
    ("validate every 0", ["SOLVER.ITERATION_VAL", "0"], None, r"SOLVER\.ITERATION_VAL is 0"),
    ("batch of 0", ["SOLVER.SAMPLES_PER_BATCH", "0"], None, r"SOLVER\.SAMPLES_PER_BATCH is 0"),
    ("inference batch of 0", INFER + ["INFERENCE.SAMPLES_PER_BATCH", "0"], None, r"INFERENCE\.SAMPLES_PER_BATCH is 0"),
    ("two input channels", ["MODEL.IN_PLANES", "2"], None, r"MODEL\.IN_PLANES is 2, but our engine needs 1"),
    (
        "2D with 3D crops",
        ["DATASET.DO_2D", "True"],
        None,
        r"DATASET\.DO_2D is True, but our engine needs MODEL\.INPUT_SIZE \[1, y, x\]",
    ),
    ("unknown preset", ["MODEL.MEDNEXT_SIZE", "XL"], None, r"MODEL\.MEDNEXT_SIZE must be one of"),
    ("even kernel", ["MODEL.KERNEL_SIZE", "4"], None, r"MODEL\.KERNEL_SIZE must be an odd int"),
    (
        "patch the network cannot take",
        ["MODEL.INPUT_SIZE", "[12, 32, 32]", "MODEL.OUTPUT_SIZE", "[12, 32, 32]"],
        None,
        r"MODEL\.INPUT_SIZE \[12, 32, 32\] does not fit MedNeXt",
    ),
    (
        "patch larger than the volume",
        ["MODEL.INPUT_SIZE", "[32, 64, 64]", "MODEL.OUTPUT_SIZE", "[32, 64, 64]"],
        None,
        r"MODEL\.INPUT_SIZE \[32, 64, 64\] is larger than volume .*image\.h5",
    ),
    (
        "misspelt optimizer",
        ["SOLVER.NAME", "Adamw"],
        None,
        r"SOLVER\.NAME must be one of .* got 'Adamw'; did you mean 'AdamW'\?",
    ),
    ("misspelt pad mode", ["DATASET.PAD_MODE", "reflekt"], None, r"DATASET\.PAD_MODE .* did you mean 'reflect'\?"),
    ("output channels and targets disagree", ["MODEL.OUT_PLANES", "2"], None, r"MODEL\.OUT_PLANES is 2 but"),
    (
        "missing image file",
        ["DATASET.IMAGE_NAME", "missing.h5"],
        None,
        r"DATASET\.IMAGE_NAME: file .*missing\.h5.* does not exist",
    ),
    ("image not set", ["DATASET.IMAGE_NAME", "None"], None, r"DATASET\.IMAGE_NAME is not set"),
    (
        "ambiguous HDF5 datasets",
        ["DATASET.IMAGE_NAME", "{case}/two.h5"],
        lambda c, d: _two_datasets(c),
        r"two\.h5.* holds datasets .*; expected one, or one named 'main'",
    ),
    (
        "not an HDF5 file",
        ["DATASET.IMAGE_NAME", "{case}/text.h5"],
        lambda c, d: (c / "text.h5").write_text("hello"),
        r"text\.h5.* is not a readable HDF5 file",
    ),
    (
        "image and label shapes differ",
        ["DATASET.LABEL_NAME", "{case}/small.h5"],
        lambda c, d: _h5(c / "small.h5", np.zeros((24, 40, 32), np.uint16)),
        r"DATASET\.LABEL_NAME .*small\.h5.* has shape \(24, 40, 32\) but its image .* has \(24, 40, 40\)",
    ),
    (
        "4-D volume",
        ["DATASET.IMAGE_NAME", "{case}/4d.h5"],
        lambda c, d: _h5(c / "4d.h5", np.zeros((2,) + SHAPE, np.uint8)),
        r"4d\.h5.*main has shape \(2, 24, 40, 40\); expected a \(z, y, x\) volume",
    ),
    (
        "zero-size volume",
        ["DATASET.IMAGE_NAME", "{case}/zero.h5"],
        lambda c, d: _h5(c / "zero.h5", np.zeros((0, 40, 40), np.uint8)),
        r"zero\.h5.* is empty \(shape \(0, 40, 40\)\)",
    ),
    (
        "float image",
        ["DATASET.IMAGE_NAME", "{case}/float.h5"],
        lambda c, d: _float_image(c, np.full(SHAPE, 0.5, np.float32)),
        r"DATASET\.IMAGE_NAME .*float\.h5.* is float32 with values 0\.5\.\.0\.5, but images must be uint8",
    ),
    (
        "uint16 image",
        ["DATASET.IMAGE_NAME", "{case}/float.h5"],
        lambda c, d: _float_image(c, np.arange(np.prod(SHAPE), dtype=np.uint16).reshape(SHAPE)),
        r"DATASET\.IMAGE_NAME .*float\.h5.* is uint16 with values 0\.\.38399, but images must be uint8",
    ),
    (
        "NaN in the image",
        ["DATASET.IMAGE_NAME", "{case}/float.h5"],
        lambda c, d: _nan_image(c),
        r"DATASET\.IMAGE_NAME .*float\.h5.* holds nan at \(z, y, x\) = \(1, 2, 3\)",
    ),
    (
        "infinity in the label",
        ["DATASET.LABEL_NAME", "{case}/flabel.h5"],
        lambda c, d: _nan_label(c),
        r"DATASET\.LABEL_NAME .*flabel\.h5.* holds inf at \(z, y, x\) = \(4, 5, 6\)",
    ),
    (
        "inference image not uint8",
        INFER + ["INFERENCE.IMAGE_NAME", "{case}/float.h5"],
        lambda c, d: _float_image(c),
        r"INFERENCE\.IMAGE_NAME .*float\.h5.* is float32",
    ),
    (
        "missing zarr container",
        ["DATASET.IMAGE_NAME", "{case}/nope.zarr/raw"],
        None,
        r"DATASET\.IMAGE_NAME: container .*nope\.zarr.* does not exist",
    ),
    (
        "missing array in a zarr container",
        ["DATASET.IMAGE_NAME", "{case}/v.zarr/rwa"],
        lambda c, d: _zarr(c, "raw", np.zeros(SHAPE, np.uint8)),
        r"v\.zarr.* has no array 'rwa'; it holds \['raw'\]",
    ),
    (
        "zarr array of the wrong rank",
        ["DATASET.IMAGE_NAME", "{case}/v.zarr/raw"],
        lambda c, d: _zarr(c, "raw", np.zeros((2,) + SHAPE, np.uint8)),
        r"v\.zarr/raw.* has shape \(2, 24, 40, 40\); expected a \(z, y, x\) volume",
    ),
    (
        "zarr store that cannot be written",
        INFER + ["INFERENCE.OUTPUT_PATH", "{case}", "INFERENCE.OUTPUT_NAME", "p.zarr"],
        lambda c, d: _file_in_the_way(c, "p.zarr.partial"),
        r"INFERENCE\.OUTPUT_NAME .*p\.zarr\.partial.* cannot be created",
    ),
    (
        "output name outside its folder",
        INFER + ["INFERENCE.OUTPUT_NAME", "../escaped.h5"],
        None,
        r"^error: INFERENCE\.OUTPUT_NAME is '\.\./escaped\.h5', but our engine needs a file or folder name inside "
        r"INFERENCE\.OUTPUT_PATH \(no '/', '\.\.' or absolute path; put folders in INFERENCE\.OUTPUT_PATH\)\.$",
    ),
    (
        "absolute output name",
        INFER + ["INFERENCE.OUTPUT_NAME", "/tmp/r.h5"],
        None,
        r"INFERENCE\.OUTPUT_NAME is '/tmp/r",
    ),
    ("output name in a subfolder", INFER + ["INFERENCE.OUTPUT_NAME", "sub/dir/r.h5"], None, r"OUTPUT_NAME is 'sub/dir"),
    ("empty output name", INFER + ["INFERENCE.OUTPUT_NAME", "''"], None, r"INFERENCE\.OUTPUT_NAME is '', but"),
    (
        "output name of a file that is not ours",
        INFER + ["INFERENCE.OUTPUT_PATH", "{case}", "INFERENCE.OUTPUT_NAME", "notes.txt"],
        lambda c, d: (c / "notes.txt").write_text("my notes"),
        r"^error: INFERENCE\.OUTPUT_NAME '.*notes\.txt' exists and is not a prediction of ours; other files are "
        r"never replaced: remove it or choose another name\.$",
    ),
    (
        "output name of a folder",
        INFER + ["INFERENCE.OUTPUT_PATH", "{case}", "INFERENCE.OUTPUT_NAME", "results"],
        lambda c, d: (c / "results").mkdir(),
        r"INFERENCE\.OUTPUT_NAME '.*results' is a folder; expected the name of a file for a prediction\.$",
    ),
    (
        "zarr output name of a folder that is not ours",
        INFER + ["INFERENCE.OUTPUT_PATH", "{case}", "INFERENCE.OUTPUT_NAME", "mine.zarr"],
        lambda c, d: (c / "mine.zarr").mkdir(),
        r"INFERENCE\.OUTPUT_NAME '.*mine\.zarr' exists and is not a zarr prediction of ours",
    ),
    (
        "wrong TIFF layout",
        ["DATASET.IMAGE_NAME", "{case}/rgb.tif"],
        lambda c, d: _tiff_rgb(c),
        r"rgb\.tif.* expected a \(z, y, x\) stack with one 2D page per z plane",
    ),
    (
        "missing checkpoint",
        ["--inference", "--checkpoint", "{case}/none.pth.tar"],
        None,
        r"--checkpoint: file .*none\.pth\.tar",
    ),
    ("inference without checkpoint", ["--inference"], None, r"--inference needs --checkpoint"),
    (
        "truncated checkpoint",
        ["--inference", "--checkpoint", "{case}/cut.pth.tar"],
        _truncated_checkpoint,
        r"--checkpoint .*cut\.pth\.tar.* is not a readable PyTorch checkpoint",
    ),
    (
        "not a checkpoint",
        ["--inference", "--checkpoint", "{case}/notes.txt"],
        lambda c, d: (c / "notes.txt").write_text("hi"),
        r"--checkpoint .*notes\.txt.* is not a readable PyTorch checkpoint",
    ),
    (
        "checkpoint of other width",
        PYTC_INFER + ["MODEL.MEDNEXT.N_CHANNELS", "8"],
        _pytc_checkpoint,
        r"does not fit this MedNeXt: mis-shaped keys: stem\.weight \(model \(8, 1, 1, 1, 1\), checkpoint "
        r"\(4, 1, 1, 1, 1\)\), .*; check MODEL\.MEDNEXT_SIZE, MODEL\.MEDNEXT\.N_CHANNELS",
    ),
    (
        "checkpoint of other kernel",
        PYTC_INFER + ["MODEL.KERNEL_SIZE", "5"],
        _pytc_checkpoint,
        r"enc_block_0\.0\.conv1\.weight .*check MODEL\.KERNEL_SIZE",
    ),
    (
        "checkpoint with deep supervision",
        PYTC_INFER + ["MODEL.DEEP_SUPERVISION", "False"],
        _pytc_checkpoint,
        r"unexpected keys: out_1\.conv_out\.weight.*; check MODEL\.DEEP_SUPERVISION",
    ),
    (
        "checkpoint with other block counts",
        PYTC_INFER + ["MODEL.MEDNEXT.BLOCK_COUNTS", "[2, 1, 1, 1, 1, 1, 1, 1, 1]"],
        _pytc_checkpoint,
        r"missing keys: enc_block_0\.1\.conv1\.weight.*; check MODEL\.MEDNEXT_SIZE or MODEL\.MEDNEXT\.BLOCK_COUNTS",
    ),
    (
        "config of another network than the checkpoint's",
        INFER + ["MODEL.MEDNEXT.DO_RES", "False", "MODEL.MEDNEXT.N_CHANNELS", "8"],
        None,
        r"--checkpoint .*checkpoint_00001\.pth\.tar' was trained with another network: MODEL\.MEDNEXT\.DO_RES True "
        r"\(trained\) vs False; MODEL\.MEDNEXT\.N_CHANNELS 4 \(trained\) vs 8; predict with the config it was trained "
        r"with \(without --config-file, the one it holds\)\.$",
    ),
    (
        "compound image dtype",
        INFER + ["INFERENCE.IMAGE_NAME", "{case}/compound.h5"],
        lambda c, d: _volume(c / "compound.h5", np.zeros(TINY_SHAPE, dtype=[("a", "u1"), ("b", "u1")])),
        r"'.*compound\.h5' holds a compound dtype \[\('a', 'u1'\), \('b', 'u1'\)\]; expected a plain numeric",
    ),
    (
        "dataset inside a group that is not there",
        INFER + ["INFERENCE.IMAGE_NAME", "{data}/image.h5/volumes/raw"],
        None,
        r"'.*image\.h5' has no dataset 'volumes/raw'; it holds \['main'\]\.$",
    ),
    (
        "corrupt compressed chunk while training",
        ["DATASET.IMAGE_NAME", "{case}/corrupt.h5", "SOLVER.ITERATION_TOTAL", "40", "MONITOR.LOG_OPT", "[1, 0, 0]"],
        lambda c, d: _corrupt_copy(d / "image.h5", c / "corrupt.h5"),
        r"A training crop at \(z, y, x\) \(\d+, \d+, \d+\) of \['.*corrupt\.h5', .*\] \(padded\) could not be read "
        r"\(.*\): is one of these files damaged\?$",
    ),
    (
        "corrupt compressed chunk while predicting",
        INFER + ["INFERENCE.IMAGE_NAME", "{case}/corrupt.h5"],
        lambda c, d: _corrupt_copy(d / "image.h5", c / "corrupt.h5"),
        r"'.*corrupt\.h5' could not be read at planes \d+\.\.\d+ of its padded view \(.*\): is the file damaged\?$",
    ),
    ("trailing @", ["DATASET.IMAGE_NAME", "image.h5@"], None, r"DATASET\.IMAGE_NAME 'image\.h5@' has an empty name"),
    (
        "negative label ids",
        ["DATASET.LABEL_NAME", "{case}/negative.h5"],
        lambda c, d: _volume(c / "negative.h5", -np.ones(TINY_SHAPE, np.int32)),
        r"DATASET\.LABEL_NAME '.*negative\.h5' holds the negative id -1; ids must be 0 or more\.$",
    ),
    (
        "valid mask of zeros",
        ["DATASET.VALID_MASK_NAME", "{case}/zeros.h5"],
        lambda c, d: _volume(c / "zeros.h5", np.zeros(TINY_SHAPE, np.uint8)),
        r"DATASET\.VALID_MASK_NAME '.*zeros\.h5' is 0 everywhere: no voxel is valid, so nothing would count\.$",
    ),
    (
        "negative learning rate",
        ["SOLVER.BASE_LR", "-0.001"],
        None,
        r"SOLVER\.BASE_LR is -0\.001, but our engine needs a learning rate above 0",
    ),
    (
        "negative clipping threshold",
        ["SOLVER.CLIP_GRADIENTS.CLIP_VALUE", "-1.0"],
        None,
        r"SOLVER\.CLIP_GRADIENTS\.CLIP_VALUE is -1\.0, but our engine needs a threshold above 0 while clipping",
    ),
    (
        "betas of one",
        ["SOLVER.BETAS", "(0.9, 1.0)"],
        None,
        r"SOLVER\.BETAS is \[0\.9, 1\.0\], but our engine needs two",
    ),
    ("three betas", ["SOLVER.BETAS", "(0.9, 0.99, 0.999)"], None, r"SOLVER\.BETAS is \[0\.9, 0\.99, 0\.999\]"),
    (
        "negative momentum",
        ["SOLVER.MOMENTUM", "-0.9"],
        None,
        r"SOLVER\.MOMENTUM is -0\.9, but our engine needs a momentum",
    ),
    (
        "steps as strings",
        ["SOLVER.STEPS", "('2e3', '3e3')"],
        None,
        r"SOLVER\.STEPS is \['2e3', '3e3'\], but our engine needs increasing",
    ),
    ("decreasing steps", ["SOLVER.STEPS", "(300, 200)"], None, r"SOLVER\.STEPS is \[300, 200\]"),
    (
        "elastic sigma of zero",
        ["AUGMENTOR.ELASTIC.SIGMA", "0.0"],
        None,
        r"AUGMENTOR\.ELASTIC\.SIGMA is 0\.0, but our engine",
    ),
    (
        "cutblur minimum above its maximum",
        ["AUGMENTOR.CUTBLUR.DOWN_RATIO_MIN", "9.0"],
        None,
        r"AUGMENTOR\.CUTBLUR\.DOWN_RATIO_MIN is 9\.0, but our engine needs a ratio of at least 1 and at most",
    ),
    ("negative seed", ["--manual-seed", "-1"], None, r"--manual-seed is -1, but must be 0 or more"),
    (
        "softmax on one channel",
        INFER + ["INFERENCE.OUTPUT_ACT", "['softmax']"],
        None,
        r"INFERENCE\.OUTPUT_ACT 'softmax' on a target of one channel gives 1 everywhere; use 'sigmoid'",
    ),
    (
        "stride outside the window",
        INFER + ["INFERENCE.STRIDE", "[0, 8, 8]"],
        None,
        r"INFERENCE\.STRIDE is \[0, 8, 8\], but our engine needs 3 positive ints",
    ),
    (
        "resume with another scheduler",
        ["--checkpoint", CHECKPOINT, "SOLVER.LR_SCHEDULER_NAME", "Poly"],
        None,
        r"--checkpoint .*checkpoint_00001\.pth\.tar.* holds the state of another LR scheduler; "
        r"set SOLVER\.LR_SCHEDULER_NAME",
    ),
    (
        "resume with another optimizer",
        ["--checkpoint", CHECKPOINT, "SOLVER.NAME", "SGD"],
        None,
        r"--checkpoint .*checkpoint_00001\.pth\.tar.* holds the state of another optimizer; set SOLVER\.NAME",
    ),
    (
        "inference window the network cannot take",
        INFER + ["INFERENCE.INPUT_SIZE", "[16, 16, 16]"],
        None,
        r"INFERENCE\.INPUT_SIZE \[16, 16, 16\] does not fit MedNeXt: .*one-voxel bottleneck",
    ),
    (
        "unknown decoding mode",
        INFER + ["INFERENCE.DECODE", "watershed"],
        None,
        r"INFERENCE\.DECODE must be one of \['affinity', 'bc', 'binary', 'boundary'\], got 'watershed'",
    ),
    (
        "misspelt blending",
        INFER + ["INFERENCE.BLENDING", "gauss"],
        None,
        r"INFERENCE\.BLENDING .* did you mean 'gaussian'\?",
    ),
    (
        "unknown test-time augmentation",
        INFER + ["INFERENCE.AUG_NUM", "3"],
        None,
        r"INFERENCE\.AUG_NUM must be None, 0 or one of",
    ),
    (
        "inference output folder cannot be made",
        INFER + ["INFERENCE.OUTPUT_PATH", "{case}/file.txt/test"],
        lambda c, d: (c / "file.txt").write_text(""),
        r"INFERENCE\.OUTPUT_PATH .*file\.txt/test.* cannot be created",
    ),
    (
        "training output folder cannot be made",
        ["DATASET.OUTPUT_PATH", "{case}/file.txt/run"],
        lambda c, d: (c / "file.txt").write_text(""),
        r"DATASET\.OUTPUT_PATH .*file\.txt/run.* cannot be created",
    ),
    (
        "several devices per process",
        ["--local_world_size", "2"],
        None,
        r"--local_world_size is 2, but our engine drives one",
    ),
    (
        "local rank without distributed",
        ["--local_rank", "0"],
        None,
        r"--local_rank is only meaningful with --distributed",
    ),
    ("distributed outside torchrun", ["--distributed"], None, r"--distributed needs torchrun's environment"),
]


def _two_datasets(folder):
    with h5py.File(folder / "two.h5", "w") as f:
        f.create_dataset("raw", data=np.zeros(SHAPE, np.uint8))
        f.create_dataset("other", data=np.zeros(SHAPE, np.uint8))


VALUE_FLAGS = {"--config-file", "--config-base", "--checkpoint", "--local_world_size", "--local_rank", "--manual-seed"}


def _argv(extra, data, case):
    """The command line of a case: its flags, then the case's output folders, then its KEY VALUE overrides."""
    extra = [a.format(data=data, case=case) for a in extra]
    flags, overrides, i = ["--engine", "native", "--config-base", BASE], [], 0
    if "--config-file" not in extra:
        flags += ["--config-file", str(data / "cfg.yaml")]
    while i < len(extra):
        width = 2 if extra[i] in VALUE_FLAGS else 1
        (flags if extra[i].startswith("--") else overrides).extend(extra[i : i + width])
        i += width
    outputs = ["DATASET.OUTPUT_PATH", str(case / "out"), "INFERENCE.OUTPUT_PATH", str(case / "out" / "test")]
    return flags + outputs + overrides


def _files_left(folder):
    if not folder.exists():
        return []
    return [os.path.join(root, name) for root, _, names in os.walk(folder) for name in names]


@pytest.mark.parametrize("name,extra,make,message", CASES, ids=[c[0] for c in CASES])
def test_mistake_gets_one_sentence(name, extra, make, message, data, tmp_path, capsys, monkeypatch):
    monkeypatch.delenv("RANK", raising=False)
    monkeypatch.delenv("LOCAL_RANK", raising=False)
    if make is not None:
        make(tmp_path, data)
    with pytest.raises(SystemExit) as exit_info:
        cli.main(_argv(extra, data, tmp_path))
    captured = capsys.readouterr()
    assert exit_info.value.code == 2, captured.err
    assert "Traceback" not in captured.err + captured.out
    error_lines = [line for line in captured.err.splitlines() if line.startswith("error: ")]
    assert len(error_lines) == 1, captured.err
    assert len(captured.err.strip().splitlines()) == 1, captured.err
    assert re.search(message, error_lines[0]), error_lines[0]
    assert _files_left(tmp_path / "out") == []


def test_there_are_at_least_thirty_cases():
    assert len(CASES) >= 30


def test_debug_shows_the_traceback(data, tmp_path, capsys):
    with pytest.raises(SystemExit) as exit_info:
        cli.main(_argv(["--debug", "SOLVER.ITERATION_SAVE", "0"], data, tmp_path))
    captured = capsys.readouterr()
    assert exit_info.value.code == 2
    assert "Traceback" in captured.err and "error: SOLVER.ITERATION_SAVE is 0" in captured.err


def test_python_config_is_refused_and_never_runs(data, tmp_path):
    marker = tmp_path / "ran"
    for flag in ("--config-file", "--config-base"):
        script = tmp_path / "evil.py"
        script.write_text(f"open({str(marker)!r}, 'w').write('x')\n")
        argv = ["--engine", "native", "--config-file", str(data / "cfg.yaml"), flag, str(script)]
        for engine in ("native", "auto"):
            argv[1] = engine
            with pytest.raises(SystemExit) as exit_info:
                cli.main(argv)
            assert exit_info.value.code == 2
            assert not marker.exists()


def test_checkpoint_already_at_the_total_says_so(data, tmp_path, capsys):
    checkpoint = str(data / "trained" / "checkpoint_00002.pth.tar")
    cli.main(_argv(["--checkpoint", checkpoint], data, tmp_path))
    out = capsys.readouterr().out
    assert "Nothing to train: the checkpoint is at iteration 2 and SOLVER.ITERATION_TOTAL is 2" in out
    assert _files_left(tmp_path / "out") == []


def test_a_failed_inference_leaves_no_empty_partial(data, tmp_path, monkeypatch):
    from connectomics_mednext.engine.predictor import Predictor

    def broken(*args, **kwargs):
        raise RuntimeError("out of memory")

    monkeypatch.setattr(Predictor, "predict_block", broken)
    with pytest.raises(RuntimeError, match="out of memory"):
        cli.run_command(_argv(INFER, data, tmp_path))
    assert _files_left(tmp_path / "out") == []
