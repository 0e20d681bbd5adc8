"""connectomics-mednext-export-slice: a PNG a person can look at, with titled panels, and the Dice it prints."""

import h5py
import numpy as np
import pytest

from connectomics_mednext import export_slice
from connectomics_mednext.data.synthetic import make_em_volume

Image = pytest.importorskip("PIL.Image", reason="export-slice writes PNGs with Pillow (the segment extra)")

TITLE = export_slice.TITLE_HEIGHT


def decode_png(path) -> np.ndarray:
    with Image.open(path) as picture:
        assert picture.format == "PNG"
        return np.asarray(picture)


def test_slice_panels_and_dice(tmp_path, capsys):
    volume = make_em_volume((8, 24, 20), cells=4, mitochondria=2, seed=1)
    target = (volume["label"] > 0).astype(np.uint8)
    prediction = (target * 255)[None]
    prediction[0, :, :, :10] = 0  # half the foreground missed
    for name, data in (("image.h5", volume["image"]), ("label.h5", volume["label"]), ("result.h5", prediction)):
        with h5py.File(tmp_path / name, "w") as f:
            f.create_dataset("vol0" if name == "result.h5" else "main", data=data)
    out = tmp_path / "slice.png"
    export_slice.main(
        [
            "--image",
            str(tmp_path / "image.h5"),
            "--prediction",
            str(tmp_path / "result.h5"),
            "--label",
            str(tmp_path / "label.h5"),
            "--z",
            "3",
            "--out",
            str(out),
        ]
    )
    pixels = decode_png(out)
    assert pixels.shape == (TITLE + 24, 60)
    assert np.array_equal(pixels[TITLE:, :20], volume["image"][3])
    assert np.array_equal(pixels[TITLE:, 20:40], prediction[0, 3])
    assert np.array_equal(pixels[TITLE:, 40:], target[3] * 255)
    # Every panel has its title: white text on the black band above it.
    for left in (0, 20, 40):
        assert (pixels[:TITLE, left : left + 20] > 128).any()
    kept = target[:, :, 10:].sum()
    printed = capsys.readouterr().out
    assert f"Dice {2 * kept / (kept + target.sum()):.4f}" in printed
    assert "slice 3, panels image | prediction | target" in printed


def test_titles_read_as_written():
    # The band of a wide panel holds the title's pixels: drawing 'image' twice gives the same band,
    # and two different titles give different bands.
    panel = np.zeros((4, 120), dtype=np.uint8)
    row = export_slice.titled_row([panel, panel, panel], ["image", "image", "prediction"])
    assert np.array_equal(row[:TITLE, :120], row[:TITLE, 120:240])
    assert not np.array_equal(row[:TITLE, :120], row[:TITLE, 240:])


def volumes(tmp_path, prediction_shape=(1, 4, 8, 8)):
    with h5py.File(tmp_path / "image.h5", "w") as f:
        f.create_dataset("main", data=np.zeros((4, 8, 8), dtype=np.uint8))
    with h5py.File(tmp_path / "result.h5", "w") as f:
        f.create_dataset("vol0", data=np.zeros(prediction_shape, dtype=np.uint8))
    return ["--image", str(tmp_path / "image.h5"), "--prediction", str(tmp_path / "result.h5")]


@pytest.mark.parametrize(
    "extra, message",
    [
        (["--z", "4"], "--z is 4, but '<dir>/image.h5' has 4 slices: give 0..3."),
        (["--z", "-1"], "--z is -1, but '<dir>/image.h5' has 4 slices: give 0..3."),
        (["--dataset", "vol1"], "--prediction '<dir>/result.h5' has no dataset 'vol1'; it holds ['vol0']."),
        (["--label", "<dir>/none.h5"], "--label: file '<dir>/none.h5' does not exist."),
        (["--out", "<dir>/no/such/folder/x.png"], "--out '<dir>/no/such/folder/x.png' could not be written"),
    ],
)
def test_mistakes_are_one_sentence_and_write_nothing(tmp_path, capsys, extra, message):
    argv = volumes(tmp_path) + ["--out", str(tmp_path / "x.png")] + [a.replace("<dir>", str(tmp_path)) for a in extra]
    with pytest.raises(SystemExit) as stopped:
        export_slice.main(argv)
    assert stopped.value.code == 2
    error = capsys.readouterr().err
    assert error.startswith("error: ") and error.count("\n") == 1
    assert message.replace("<dir>", str(tmp_path)) in error
    assert sorted(p.name for p in tmp_path.rglob("*")) == ["image.h5", "result.h5"]


def test_mismatched_prediction_is_named(tmp_path, capsys):
    argv = volumes(tmp_path, prediction_shape=(1, 4, 8, 9)) + ["--out", str(tmp_path / "x.png")]
    with pytest.raises(SystemExit):
        export_slice.main(argv)
    assert (
        f"error: --prediction '{tmp_path}/result.h5' has shape (4, 8, 9) (z, y, x) but --image '{tmp_path}/image.h5' "
        "has (4, 8, 8); give the image it was predicted from.\n"
    ) == capsys.readouterr().err
    assert not (tmp_path / "x.png").exists()


def test_instance_overlays_show_the_segmentation_beside_the_label(tmp_path, capsys):
    volume = make_em_volume((8, 24, 20), cells=4, mitochondria=2, seed=1)
    segmentation = volume["label"].astype(np.uint32)
    segmentation[:, :, 10:][segmentation[:, :, 10:] > 0] += 100  # every cell split at x = 10
    for name, data in (
        ("image.h5", volume["image"]),
        ("label.h5", volume["label"]),
        ("result.h5", (volume["label"] > 0).astype(np.uint8)[None] * 255),
        ("seg.h5", segmentation),
    ):
        with h5py.File(tmp_path / name, "w") as f:
            f.create_dataset("vol0" if name == "result.h5" else "main", data=data)
    out = tmp_path / "slice.png"
    export_slice.main(
        [
            "--image",
            str(tmp_path / "image.h5"),
            "--prediction",
            str(tmp_path / "result.h5"),
            "--label",
            str(tmp_path / "label.h5"),
            "--segmentation",
            str(tmp_path / "seg.h5"),
            "--z",
            "3",
            "--out",
            str(out),
        ]
    )
    assert "panels image | prediction | target | segmentation | label instances" in capsys.readouterr().out
    pixels = decode_png(out)
    assert pixels.shape == (TITLE + 24, 100, 3)
    pixels = pixels[TITLE:]
    image, seg_panel, label_panel = pixels[:, :20], pixels[:, 60:80], pixels[:, 80:]
    assert np.array_equal(image[..., 0], volume["image"][3]) and np.array_equal(image[..., 0], image[..., 2])
    background = volume["label"][3] == 0
    assert np.array_equal(seg_panel[background], image[background])  # membranes stay gray

    # A split shows as two colours in the segmentation panel where the label panel has one. The
    # colour under a blend is 2 * panel - gray (to rounding).
    def colours(panel, where):
        return 2 * panel[where].astype(int) - image[where].astype(int)

    cell = volume["label"][3] == np.bincount(volume["label"][3][:, 8:12].ravel())[1:].argmax() + 1
    left, right = cell & (np.arange(20) < 10), cell & (np.arange(20) >= 10)
    whole = np.concatenate([colours(label_panel, left), colours(label_panel, right)])
    assert np.ptp(whole, axis=0).max() <= 2
    assert np.abs(colours(seg_panel, left).mean(0) - colours(seg_panel, right).mean(0)).max() > 10
