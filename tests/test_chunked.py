"""Chunked stores: zarr (v2, v3), N5 and precomputed in; zarr predictions out, shared by ranks with no join."""

import json
import os
import sys
import time

import h5py
import numpy as np
import pytest
import torch
from conftest import FailsAfter, predict_file, run_one_thread, tiny_argv, torchrun

from connectomics_mednext import cli
from connectomics_mednext.engine.inference import make_activation
from connectomics_mednext.errors import InputError, MissingDatasetError, MissingFileError
from connectomics_mednext.io import open_prediction, open_volume, read_whole, split_names
from connectomics_mednext.io.chunked import create_zarr_array

ts = pytest.importorskip("tensorstore", reason="chunked stores need the zarr extra (tensorstore)")


def volume(shape=(20, 30, 26), seed=0):
    return (np.random.default_rng(seed).random(shape) * 255).astype(np.uint8)


def write_store(path, data, driver="zarr", chunks=(8, 16, 16)):
    """``data`` (z, y, x) as a zarr v2/v3 or N5 array at ``path`` (a folder inside its container)."""
    kvstore = {"driver": "file", "path": str(path) + "/"}
    dtype = np.dtype(data.dtype)
    if driver == "zarr":
        metadata = {"shape": list(data.shape), "chunks": list(chunks), "dtype": dtype.str}
    elif driver == "zarr3":
        metadata = {
            "shape": list(data.shape),
            "data_type": dtype.name,
            "chunk_grid": {"name": "regular", "configuration": {"chunk_shape": list(chunks)}},
        }
    else:  # N5 lists dimensions x first
        metadata = {
            "dimensions": list(data.shape[::-1]),
            "blockSize": list(chunks[::-1]),
            "dataType": dtype.name,
            "compression": {"type": "raw"},
        }
        data = data.T
    store = ts.open({"driver": driver, "kvstore": kvstore, "metadata": metadata}, create=True).result()
    store[...] = data


class CountingReads:
    """Wraps a tensorstore to count the elements each read returns."""

    def __init__(self, store):
        self.store, self.read = store, 0

    def __getitem__(self, index):
        view = self.store[index]
        self.read += int(np.prod(view.shape))
        return view

    def __getattr__(self, name):
        return getattr(self.store, name)


@pytest.mark.parametrize("driver,container", [("zarr", "v.zarr"), ("zarr3", "v.zarr"), ("n5", "v.n5")])
def test_zarr_and_n5_datasets_read_lazily_as_z_y_x(tmp_path, driver, container):
    data = volume()
    write_store(tmp_path / container / "raw" / "s0", data, driver)
    opened = open_volume(str(tmp_path / container / "raw" / "s0"))
    assert opened.shape == data.shape and opened.dtype == np.uint8
    box = (slice(3, 9), slice(17, 30), slice(0, 5))
    counting = CountingReads(opened._store)
    opened._store = counting
    assert np.array_equal(opened[box], data[box])
    assert counting.read == 6 * 13 * 5  # only the box, not the volume
    assert np.array_equal(read_whole(opened), data)
    # A group holding one array stands for that array, as an HDF5 file with one dataset does.
    assert open_volume(str(tmp_path / container / "raw")).shape == data.shape


def test_a_precomputed_volume_reads_as_z_y_x(tmp_path):
    data = volume((6, 10, 12))
    store = ts.open(
        {
            "driver": "neuroglancer_precomputed",
            "kvstore": {"driver": "file", "path": str(tmp_path / "pc")},
            "multiscale_metadata": {"type": "image", "data_type": "uint8", "num_channels": 1},
            "scale_metadata": {
                "size": [12, 10, 6],
                "resolution": [4, 4, 40],
                "encoding": "raw",
                "chunk_size": [8, 8, 4],
            },
        },
        create=True,
    ).result()
    store[..., 0] = data.T
    opened = open_volume(str(tmp_path / "pc"))
    assert np.array_equal(read_whole(opened), data)
    assert opened.voxel_size == (40.0, 4.0, 4.0)


def test_bad_chunked_names_get_one_sentence(tmp_path):
    write_store(tmp_path / "v.zarr" / "raw", volume())
    write_store(tmp_path / "v.zarr" / "flat", volume((4, 5))[0], chunks=(5,))
    write_store(tmp_path / "v.zarr" / "other", volume())
    with pytest.raises(MissingFileError, match=r"DATASET.IMAGE_NAME: container '.*nope\.zarr' does not exist\."):
        split_names("nope.zarr/raw", str(tmp_path), "DATASET.IMAGE_NAME")
    with pytest.raises(
        MissingDatasetError,
        match=r"'.*v\.zarr' has no array 'rwa'; it holds \['flat', 'other', "
        r"'raw'\]",
    ):
        open_volume(str(tmp_path / "v.zarr" / "rwa"))
    with pytest.raises(InputError, match=r"'.*flat' has shape \(5,\); expected a \(z, y, x\) volume"):
        open_volume(str(tmp_path / "v.zarr" / "flat"))
    with pytest.raises(MissingDatasetError, match="is a group holding arrays"):
        open_volume(str(tmp_path / "v.zarr"))


def test_an_existing_output_array_of_another_shape_or_dtype_is_refused(tmp_path):
    create_zarr_array(str(tmp_path / "o.zarr" / "vol0"), (1, 4, 8, 8), np.uint8, (1, 4, 8, 8))
    for shape, dtype in (((1, 4, 8, 9), np.uint8), ((1, 4, 8, 8), np.float32)):
        with pytest.raises(InputError, match=r"already holds a uint8 array of shape \(1, 4, 8, 8\); expected"):
            create_zarr_array(str(tmp_path / "o.zarr" / "vol0"), shape, dtype, (1, 4, 8, 8))


ARGS = dict(window=(8, 16, 16), stride=(4, 8, 8), channels=2, activation=make_activation(["sigmoid"], [2]))


def conv_model():
    torch.manual_seed(0)
    return torch.nn.Conv3d(1, 2, 3, padding=1).eval()


def test_a_zarr_prediction_equals_the_hdf5_one_and_opens_in_zarr_python(tmp_path):
    zarr = pytest.importorskip("zarr")
    image = volume((40, 30, 26))
    write_store(tmp_path / "in.zarr" / "raw", image)
    source = open_volume(str(tmp_path / "in.zarr" / "raw"))
    settings = dict(pad=((1, 2), (3, 0), (0, 5)), block_size=(7, 11, 0))  # zarr chunks are the blocks here
    reference = predict_file(conv_model(), [image], str(tmp_path / "p.h5"), **ARGS, **settings)
    path = predict_file(conv_model(), [source], str(tmp_path / "p.zarr"), **ARGS, **settings)
    assert sorted(os.listdir(tmp_path)) == ["in.zarr", "p.h5", "p.zarr"]  # no .partial left
    group = zarr.open_group(path, mode="r")
    with h5py.File(reference, "r") as f:
        assert np.array_equal(group["vol0"][:], f["vol0"][:])
    assert group["vol0"].dtype == np.uint8 and group["vol0"].chunks == (2, 7, 11, 26)
    assert group.attrs["connectomics_mednext"]["complete"] is True
    (multiscale,) = group.attrs["multiscales"]
    assert [a["name"] for a in multiscale["axes"]] == ["c", "z", "y", "x"]
    assert multiscale["datasets"] == [
        {"path": "vol0", "coordinateTransformations": [{"type": "scale", "scale": [1.0, 1.0, 1.0, 1.0]}]}
    ]
    assert not os.path.exists(os.path.join(path, ".progress"))
    assert np.array_equal(open_prediction(path)[:], group["vol0"][:])


class CountingWindows(torch.nn.Module):
    def __init__(self, model):
        super().__init__()
        self.model, self.windows = model, 0

    def forward(self, x):
        self.windows += x.shape[0]
        return self.model(x)


def test_a_killed_zarr_prediction_redoes_only_its_missing_blocks(tmp_path):
    image = volume((96, 24, 24))
    args = dict(ARGS, block_size=(32, 0, 0))  # three blocks of one chunk each in z
    reference = predict_file(conv_model(), [image], str(tmp_path / "r.zarr"), **args)
    target = str(tmp_path / "p.zarr")
    with pytest.raises(KeyboardInterrupt):
        predict_file(FailsAfter(conv_model(), 40), [image], target, **args)
    assert not os.path.exists(target)
    markers = sorted(os.listdir(os.path.join(target + ".partial", ".progress", "vol0")))
    assert markers == ["0.done", "resume_key.json"]
    whole = CountingWindows(conv_model())
    predict_file(whole, [image], str(tmp_path / "again.zarr"), **args)
    resumed = CountingWindows(conv_model())
    predict_file(resumed, [image], target, **args)
    assert 0 < resumed.windows < whole.windows  # block 0 was not predicted again
    assert np.array_equal(open_prediction(target)[:], open_prediction(reference)[:])


def test_a_zarr_prediction_with_other_weights_starts_afresh(tmp_path, capsys):
    image = volume((96, 24, 24))
    args = dict(ARGS, block_size=(32, 0, 0))
    target = str(tmp_path / "p.zarr")
    with pytest.raises(KeyboardInterrupt):
        predict_file(FailsAfter(conv_model(), 40), [image], target, **args)
    other = conv_model()
    torch.nn.init.zeros_(other.weight)
    predict_file(other, [image], target, **args)
    assert "vol0 was started with other weights; starting it afresh" in capsys.readouterr().out
    out = open_prediction(target)[:]
    assert (out == out[:, :1, :1, :1]).all()  # zero weights: each channel is its bias, block 0 included


def test_a_folder_not_written_by_us_is_not_taken_over(tmp_path):
    create_zarr_array(str(tmp_path / "p.zarr.partial" / "vol0"), (2, 20, 30, 26), np.uint8, (2, 20, 30, 26))
    with pytest.raises(
        InputError,
        match=r"'.*vol0' exists but holds no resume key of ours; remove it or choose "
        r"another INFERENCE.OUTPUT_NAME\.",
    ):
        predict_file(conv_model(), [volume()], str(tmp_path / "p.zarr"), **ARGS)


@pytest.fixture(scope="module")
def zarr_run(tiny_run, tmp_path_factory):
    """The tiny run's image, label and a valid mask as arrays of ``vol.zarr``."""
    folder = tmp_path_factory.mktemp("zarr_run")
    with h5py.File(tiny_run / "image.h5", "r") as f, h5py.File(tiny_run / "label.h5", "r") as g:
        image, label = f["main"][:], g["main"][:]
    mask = np.ones_like(label, dtype=np.uint8)
    mask[:, :5] = 0
    for name, data in (("raw", image), ("label", label), ("mask", mask)):
        write_store(folder / "vol.zarr" / name, data)
    with h5py.File(folder / "mask.h5", "w") as f:
        f.create_dataset("main", data=mask)
    return folder


def test_training_from_zarr_equals_training_from_hdf5(tiny_run, zarr_run, tmp_path):
    common = ["DATASET.PAD_SIZE", "[2, 4, 4]", "SOLVER.ITERATION_TOTAL", "2", "MODEL.WEIGHT_OPT", '[["0", "0"]]']
    from_hdf5 = ["DATASET.VALID_MASK_NAME", str(zarr_run / "mask.h5")]
    from_zarr = [
        "DATASET.IMAGE_NAME",
        str(zarr_run / "vol.zarr" / "raw"),
        "DATASET.LABEL_NAME",
        str(zarr_run / "vol.zarr" / "label"),
        "DATASET.VALID_MASK_NAME",
        str(zarr_run / "vol.zarr" / "mask"),
    ]
    states = []
    for name, overrides in (("h5", from_hdf5), ("zarr", from_zarr)):
        cli.run_command(tiny_argv(tiny_run, out=tmp_path / name, overrides=common + overrides))
        states.append(torch.load(tmp_path / name / "checkpoint_00002.pth.tar", weights_only=True)["state_dict"])
    assert all(torch.equal(states[0][k], states[1][k]) for k in states[0])


def test_two_ranks_write_one_zarr_with_the_bytes_of_one_process(tiny_run, zarr_run, tmp_path):
    checkpoint = str(tiny_run / "trained" / "checkpoint_00002.pth.tar")
    out = tmp_path / "out"
    overrides = [
        "INFERENCE.IMAGE_NAME",
        str(zarr_run / "vol.zarr" / "raw"),
        "INFERENCE.OUTPUT_PATH",
        str(out),
        "INFERENCE.SAMPLES_PER_BATCH",
        "1",
        "INFERENCE.STREAM_BLOCK_SIZE",
        "[0, 0, 0]",
    ]
    config = str(tiny_run / "cfg.yaml")
    result = torchrun(
        config, "--inference", "--checkpoint", checkpoint, "INFERENCE.OUTPUT_NAME", "ranks.zarr", *overrides
    )
    assert result.stdout.count("Prediction saved as") == 1
    # The reference: one process with the ranks' one thread, so every window's arithmetic is the same.
    run_one_thread(
        tiny_argv(
            tiny_run,
            "--inference",
            "--checkpoint",
            checkpoint,
            overrides=overrides + ["INFERENCE.OUTPUT_NAME", "single.h5"],
        )
    )
    assert sorted(os.listdir(out)) == ["ranks.zarr", "single.h5"]
    with h5py.File(out / "single.h5", "r") as f:
        assert np.array_equal(open_prediction(str(out / "ranks.zarr"))[:], f["vol0"][:])
    with open(out / "ranks.zarr" / ".zattrs") as f:
        assert json.load(f)["connectomics_mednext"]["complete"] is True
    # The depth was cut into two chunks, one block per rank: each rank wrote its own chunk.
    assert sorted(os.listdir(out / "ranks.zarr" / "vol0")) == [".zarray", "0.0.0.0", "0.1.0.0"]


def test_inference_to_zarr_decodes_and_scores_like_hdf5(tiny_run, tmp_path):
    pytest.importorskip("cc3d", reason="decoding needs the segment extra")
    from connectomics_mednext import evaluate

    checkpoint = str(tiny_run / "trained" / "checkpoint_00002.pth.tar")
    for name in ("r.zarr", "r.h5"):
        cli.run_command(
            tiny_argv(
                tiny_run,
                "--inference",
                "--checkpoint",
                checkpoint,
                out=tmp_path / name,
                overrides=["INFERENCE.OUTPUT_NAME", name, "INFERENCE.DECODE", "binary"],
            )
        )
    with (
        h5py.File(tmp_path / "r.zarr" / "test" / "r_seg.h5", "r") as a,
        h5py.File(tmp_path / "r.h5" / "test" / "r_seg.h5", "r") as b,
    ):
        assert np.array_equal(a["main"][:], b["main"][:])
    label = str(tiny_run / "label.h5")
    scores = [evaluate(label, prediction=str(tmp_path / n / "test" / n)) for n in ("r.zarr", "r.h5")]
    assert scores[0] == scores[1]
    with h5py.File(label, "r") as f:
        write_store(tmp_path / "labels.zarr" / "main", f["main"][:])
    from_zarr = evaluate(str(tmp_path / "labels.zarr" / "main"), prediction=str(tmp_path / "r.h5" / "test" / "r.h5"))
    assert from_zarr == scores[1]


def test_without_tensorstore_a_store_names_the_extra(tmp_path, monkeypatch):
    from connectomics_mednext.errors import MissingExtraError

    write_store(tmp_path / "v.zarr" / "raw", volume())
    monkeypatch.setitem(sys.modules, "tensorstore", None)  # import fails as if it were not installed
    with pytest.raises(MissingExtraError, match=r"need tensorstore: pip install 'connectomics-mednext\[zarr\]'"):
        open_volume(str(tmp_path / "v.zarr" / "raw"))


def test_a_zarr_input_rewritten_in_place_is_not_resumed(tmp_path, capsys):
    from connectomics_mednext.io import open_volume

    data = volume((96, 24, 24))
    write_store(tmp_path / "in.zarr" / "raw", data)
    args = dict(ARGS, block_size=(32, 0, 0))
    target = str(tmp_path / "p.zarr")
    identity = open_volume(str(tmp_path / "in.zarr" / "raw")).identity()
    with pytest.raises(KeyboardInterrupt):
        predict_file(FailsAfter(conv_model(), 40), [open_volume(str(tmp_path / "in.zarr" / "raw"))], target, **args)
    time.sleep(0.01)
    store = ts.open({"driver": "zarr", "kvstore": {"driver": "file", "path": str(tmp_path / "in.zarr" / "raw") + "/"}})
    store.result()[8:16, :16, :16] = 255 - data[8:16, :16, :16]  # one chunk rewritten; .zarray untouched
    rewritten = open_volume(str(tmp_path / "in.zarr" / "raw"))
    assert rewritten.identity()["newest_mtime_ns"] > identity["newest_mtime_ns"]
    assert os.stat(tmp_path / "in.zarr" / "raw" / ".zarray").st_mtime_ns <= identity["newest_mtime_ns"]
    capsys.readouterr()
    predict_file(CountingWindows(conv_model()), [rewritten], target, **args)  # the killed run's weights' names
    assert "vol0 was started with other input.newest_mtime_ns; starting it afresh" in capsys.readouterr().out
    reference = predict_file(conv_model(), [np.asarray(rewritten[:, :, :])], str(tmp_path / "r.zarr"), **args)
    assert np.array_equal(open_prediction(target)[:], open_prediction(reference)[:])


def test_an_output_of_fewer_volumes_drops_the_earlier_runs_extra_ones(tmp_path, capsys):
    images = [volume((32, 24, 24)), volume((32, 24, 24)) // 2]
    for name in ("p.h5", "p.zarr"):
        target = str(tmp_path / name)
        with pytest.raises(KeyboardInterrupt):  # a run of two volumes, killed during the second
            predict_file(FailsAfter(conv_model(), 30), images, target, **ARGS)
        capsys.readouterr()
        predict_file(conv_model(), images[:1], target, **ARGS)
        assert "dropped vol1, left by an earlier run of more inputs" in capsys.readouterr().out
        with pytest.raises(KeyError):
            open_prediction(target, "vol1")


def test_a_float_zarr_image_gets_the_dtype_sentence(tmp_path):
    from connectomics_mednext.io import check_image_dtype

    write_store(tmp_path / "f.zarr" / "raw", np.full((20, 24, 24), 0.5, np.float32))
    with pytest.raises(
        InputError, match=r"INFERENCE\.IMAGE_NAME '.*f\.zarr/raw' is float32 with values 0\.5\.\.0\.5, but"
    ):
        check_image_dtype(open_volume(str(tmp_path / "f.zarr" / "raw")), "INFERENCE.IMAGE_NAME")
