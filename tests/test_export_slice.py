"""scripts/export_slice.py: a PNG a person can look at, and the Dice it prints."""

import importlib.util
import os
import struct
import zlib

import h5py
import numpy as np
import pytest

from connectomics_mednext.data.synthetic import make_em_volume

SCRIPT = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "scripts", "export_slice.py")


def load_script():
    spec = importlib.util.spec_from_file_location("export_slice", SCRIPT)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def decode_png(data: bytes) -> np.ndarray:
    assert data[:8] == b"\x89PNG\r\n\x1a\n"
    chunks, position = {}, 8
    while position < len(data):
        (length,) = struct.unpack(">I", data[position : position + 4])
        tag, body = data[position + 4 : position + 8], data[position + 8 : position + 8 + length]
        assert struct.unpack(">I", data[position + 8 + length : position + 12 + length])[0] == zlib.crc32(tag + body)
        chunks[tag] = body
        position += 12 + length
    width, height, depth, colour = struct.unpack(">IIBB", chunks[b"IHDR"][:10])
    channels = {0: 1, 2: 3}[colour]
    assert depth == 8
    rows = np.frombuffer(zlib.decompress(chunks[b"IDAT"]), dtype=np.uint8).reshape(height, width * channels + 1)
    assert (rows[:, 0] == 0).all()  # no row filters
    pixels = rows[:, 1:]
    return pixels if channels == 1 else pixels.reshape(height, width, 3)


def test_slice_panels_and_dice(tmp_path, capsys):
    volume = make_em_volume((8, 24, 20), cells=4, mitochondria=2, seed=1)
    target = (volume["label"] > 0).astype(np.uint8)
    prediction = (target * 255)[None]
    prediction[0, :, :, :10] = 0  # half the foreground missed
    for name, data in (("image.h5", volume["image"]), ("label.h5", volume["label"]), ("result.h5", prediction)):
        with h5py.File(tmp_path / name, "w") as f:
            f.create_dataset("vol0" if name == "result.h5" else "main", data=data)
    out = tmp_path / "slice.png"
    load_script().main(
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
    pixels = decode_png(out.read_bytes())
    assert pixels.shape == (24, 60)
    assert np.array_equal(pixels[:, :20], volume["image"][3])
    assert np.array_equal(pixels[:, 20:40], prediction[0, 3])
    assert np.array_equal(pixels[:, 40:], target[3] * 255)
    kept = target[:, :, 10:].sum()
    assert f"Dice {2 * kept / (kept + target.sum()):.4f}" in capsys.readouterr().out


def test_mismatched_prediction_is_named(tmp_path):
    with h5py.File(tmp_path / "image.h5", "w") as f:
        f.create_dataset("main", data=np.zeros((4, 8, 8), dtype=np.uint8))
    with h5py.File(tmp_path / "result.h5", "w") as f:
        f.create_dataset("vol0", data=np.zeros((1, 4, 8, 9), dtype=np.uint8))
    with pytest.raises(SystemExit, match="prediction has shape \\(4, 8, 9\\) but the image \\(4, 8, 8\\)"):
        load_script().main(
            [
                "--image",
                str(tmp_path / "image.h5"),
                "--prediction",
                str(tmp_path / "result.h5"),
                "--out",
                str(tmp_path / "x.png"),
            ]
        )


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
    load_script().main(
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
    pixels = decode_png(out.read_bytes())
    assert pixels.shape == (24, 100, 3)
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
