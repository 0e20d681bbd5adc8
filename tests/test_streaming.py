"""Streaming inference: output blocks, padding, resuming, TIFF input; and the lazy padded view."""

import itertools

import h5py
import numpy as np
import pytest
import torch
from conftest import FailsAfter, predict_file

from connectomics_mednext.data.padding import INDEX_PADDERS, PaddedVolume, pad_widths
from connectomics_mednext.engine.inference import make_activation
from connectomics_mednext.geometry import plan_blocks
from connectomics_mednext.io import open_volume


class Identity(torch.nn.Module):
    def forward(self, x):
        return (x + 1) / 2  # undo the 0.5 mean/std normalisation


def conv_model():
    torch.manual_seed(0)
    return torch.nn.Conv3d(1, 2, 3, padding=1).eval()


def volume(shape=(30, 37, 41), seed=0):
    return (np.random.default_rng(seed).random(shape) * 255).astype(np.uint8)


ARGS = dict(window=(8, 16, 16), stride=(4, 8, 8), channels=2, activation=make_activation(["sigmoid"], [2]))
PAD = ((1, 2), (3, 0), (5, 5))


def read(path):
    with h5py.File(path, "r") as f:
        return f["vol0"][:]


@pytest.mark.parametrize("block_size", [(7, 10, 13), (0, 20, 0), (5, 0, 9)])
def test_blocks_give_the_same_bytes_as_one_pass(tmp_path, block_size):
    model, image = conv_model(), volume()
    whole = read(predict_file(model, [image], str(tmp_path / "whole.h5"), pad=PAD, block_size=(0, 0, 0), **ARGS))
    blocked = read(predict_file(model, [image], str(tmp_path / "blocked.h5"), pad=PAD, block_size=block_size, **ARGS))
    assert whole.shape == (2,) + image.shape
    assert np.array_equal(whole, blocked)


def test_padding_is_cropped_off_or_kept(tmp_path):
    image = volume((20, 24, 28))
    cropped = read(
        predict_file(
            Identity(),
            [image],
            str(tmp_path / "a.h5"),
            (8, 16, 16),
            (4, 8, 8),
            1,
            make_activation(["none"], [1]),
            pad=PAD,
            block_size=(6, 10, 0),
        )
    )
    assert np.array_equal(cropped[0], image)
    kept = read(
        predict_file(
            Identity(),
            [image],
            str(tmp_path / "b.h5"),
            (8, 16, 16),
            (4, 8, 8),
            1,
            make_activation(["none"], [1]),
            pad=PAD,
            pad_mode="symmetric",
            unpad=False,
        )
    )
    assert np.array_equal(kept[0], np.pad(image, PAD, mode="symmetric"))


def test_an_interrupted_blocked_run_resumes_to_the_same_bytes(tmp_path):
    model, image = conv_model(), volume()
    args = dict(ARGS, pad=PAD, block_size=(12, 20, 0))
    reference = read(predict_file(model, [image], str(tmp_path / "reference.h5"), **args))
    target = str(tmp_path / "result.h5")
    with pytest.raises(KeyboardInterrupt):
        predict_file(FailsAfter(model, 60), [image], target, **args)
    with h5py.File(target + ".partial", "r") as f:
        done = f["vol0"].attrs["done_z"]
    starts = [block.begin[0] for block in plan_blocks(image.shape, (12, 20, 0))]
    assert len(done) == len(starts) and (done > starts).any() and (done < image.shape[0]).any()
    assert np.array_equal(read(predict_file(model, [image], target, **args)), reference)


def test_an_unreadable_partial_file_is_started_again(tmp_path, capsys):
    target = tmp_path / "result.h5"
    (tmp_path / "result.h5.partial").write_bytes(b"killed while writing")
    image = volume((12, 20, 20))
    out = read(
        predict_file(Identity(), [image], str(target), (8, 16, 16), (4, 8, 8), 1, make_activation(["none"], [1]))
    )
    assert np.array_equal(out[0], image)
    assert "starting it again" in capsys.readouterr().out


@pytest.mark.parametrize(
    "stride,pad,message",
    [
        ((9, 8, 8), PAD, "INFERENCE.STRIDE \\[9, 8, 8\\] must be between 1 and the window"),
        ((0, 8, 8), PAD, "INFERENCE.STRIDE"),
        ((4, 8, 8), ((0, 0),) * 3, "The window \\[8, 16, 16\\] is larger than .* of shape \\(6, 30, 30\\)"),
    ],
)
def test_bad_window_settings_are_named(tmp_path, stride, pad, message):
    with pytest.raises(ValueError, match=message):
        predict_file(
            Identity(),
            [volume((6, 30, 30))],
            str(tmp_path / "x.h5"),
            (8, 16, 16),
            stride,
            1,
            make_activation(["none"], [1]),
            pad=pad,
        )


def test_padding_lets_a_window_exceed_the_volume(tmp_path):
    image = volume((6, 30, 30))
    out = read(
        predict_file(
            Identity(),
            [image],
            str(tmp_path / "x.h5"),
            (8, 16, 16),
            (4, 8, 8),
            1,
            make_activation(["none"], [1]),
            pad=((1, 1), (0, 0), (0, 0)),
        )
    )
    assert np.array_equal(out[0], image)


@pytest.mark.parametrize(
    "shape,block,ranks",
    [
        ((10, 40, 40), (0, 0, 0), 3),
        ((9, 50, 33), (4, 16, 0), 1),
        ((3, 8, 8), (0, 0, 0), 5),
        ((20, 64, 64), (0, 32, 32), 2),
    ],
)
def test_blocks_cover_every_voxel_once(shape, block, ranks):
    blocks = plan_blocks(shape, block, ranks)
    count = np.zeros(shape, dtype=int)
    for box in blocks:
        count[box.slices()] += 1
        assert all(size <= (s if s else n) for size, s, n in zip(box.shape[1:], block[1:], shape[1:]))
    assert (count == 1).all()
    assert len(blocks) >= min(ranks, shape[0])  # enough blocks for every rank when the depth allows


@pytest.mark.parametrize("mode", sorted(INDEX_PADDERS))
def test_padded_view_matches_np_pad(mode):
    rng = np.random.default_rng(1)
    source = volume((7, 9, 11))
    widths = pad_widths([2, 3, 1, 12, 5, 0], "DATASET.PAD_SIZE")
    expected = np.pad(source, widths, mode=mode)
    view = PaddedVolume(source, widths, mode, "x")
    assert view.shape == expected.shape
    for _ in range(100):
        lows = [int(rng.integers(0, n)) for n in expected.shape]
        box = tuple(slice(a, int(rng.integers(a + 1, n + 1))) for a, n in zip(lows, expected.shape))
        assert np.array_equal(view[box], expected[box])


def test_pad_size_forms_and_errors():
    assert pad_widths([3], "K") == ((3, 3),) * 3
    assert pad_widths([1, 2, 3], "K") == ((1, 1), (2, 2), (3, 3))
    assert pad_widths([1, 2, 3, 4, 5, 6], "K") == ((1, 2), (3, 4), (5, 6))
    for bad in ([1, 2], [-1, 0, 0]):
        with pytest.raises(ValueError, match="DATASET.PAD_SIZE must be 1, 3 or 6 non-negative integers"):
            pad_widths(bad, "DATASET.PAD_SIZE")
    with pytest.raises(ValueError, match="DATASET.PAD_MODE must be one of"):
        PaddedVolume(volume((4, 4, 4)), ((1, 1),) * 3, "wrap", "x")


def test_tiff_stacks_read_lazily_and_predict_like_hdf5(tmp_path):
    tifffile = pytest.importorskip("tifffile")
    image = volume((12, 20, 24))
    tifffile.imwrite(tmp_path / "image.tif", image)
    with h5py.File(tmp_path / "image.h5", "w") as f:
        f.create_dataset("main", data=image)
    stack = open_volume(str(tmp_path / "image.tif"))
    assert stack.shape == image.shape and stack.dtype == np.uint8
    for box in itertools.product([slice(0, 12), slice(3, 5)], [slice(0, 20), slice(7, 19)], [slice(2, 3)]):
        assert np.array_equal(stack[box], image[box])
    model = conv_model()
    from_tiff = read(predict_file(model, [stack], str(tmp_path / "t.h5"), **ARGS))
    from_hdf5 = read(predict_file(model, [open_volume(str(tmp_path / "image.h5"))], str(tmp_path / "h.h5"), **ARGS))
    assert np.array_equal(from_tiff, from_hdf5)


def test_a_tiff_that_is_not_a_stack_is_refused(tmp_path):
    tifffile = pytest.importorskip("tifffile")
    tifffile.imwrite(tmp_path / "rgb.tif", np.zeros((4, 8, 8, 3), dtype=np.uint8))
    with pytest.raises(ValueError, match="expected a \\(z, y, x\\) stack with one 2D page per z plane"):
        open_volume(str(tmp_path / "rgb.tif"))


def test_a_tiff_written_page_by_page_is_read_as_all_its_pages(tmp_path):
    tifffile = pytest.importorskip("tifffile")
    image = volume((12, 20, 24))
    for plane in image:  # one series per page, as many microscopes and scripts write stacks
        tifffile.imwrite(tmp_path / "pages.tif", plane, append=True)
    assert len(tifffile.TiffFile(tmp_path / "pages.tif").series) == 12
    stack = open_volume(str(tmp_path / "pages.tif"))
    assert stack.shape == image.shape
    for box in itertools.product([slice(0, 12), slice(3, 5), slice(7, 8)], [slice(0, 20), slice(7, 19)], [slice(2, 9)]):
        assert np.array_equal(stack[box], image[box])
