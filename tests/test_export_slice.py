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


def decode_gray_png(data: bytes) -> np.ndarray:
    assert data[:8] == b"\x89PNG\r\n\x1a\n"
    chunks, position = {}, 8
    while position < len(data):
        (length,) = struct.unpack(">I", data[position:position + 4])
        tag, body = data[position + 4:position + 8], data[position + 8:position + 8 + length]
        assert struct.unpack(">I", data[position + 8 + length:position + 12 + length])[0] == zlib.crc32(tag + body)
        chunks[tag] = body
        position += 12 + length
    width, height, depth, colour = struct.unpack(">IIBB", chunks[b"IHDR"][:10])
    assert (depth, colour) == (8, 0)
    rows = np.frombuffer(zlib.decompress(chunks[b"IDAT"]), dtype=np.uint8).reshape(height, width + 1)
    assert (rows[:, 0] == 0).all()  # no row filters
    return rows[:, 1:]


def test_slice_panels_and_dice(tmp_path, capsys):
    volume = make_em_volume((8, 24, 20), cells=4, mitochondria=2, seed=1)
    target = (volume["label"] > 0).astype(np.uint8)
    prediction = (target * 255)[None]
    prediction[0, :, :, :10] = 0  # half the foreground missed
    for name, data in (("image.h5", volume["image"]), ("label.h5", volume["label"]), ("result.h5", prediction)):
        with h5py.File(tmp_path / name, "w") as f:
            f.create_dataset("vol0" if name == "result.h5" else "main", data=data)
    out = tmp_path / "slice.png"
    load_script().main(["--image", str(tmp_path / "image.h5"), "--prediction", str(tmp_path / "result.h5"),
                        "--label", str(tmp_path / "label.h5"), "--z", "3", "--out", str(out)])
    pixels = decode_gray_png(out.read_bytes())
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
        load_script().main(["--image", str(tmp_path / "image.h5"), "--prediction", str(tmp_path / "result.h5"),
                            "--out", str(tmp_path / "x.png")])
