"""A brief training run on real FIB-SEM data (../shared/data/gala_mini); skipped when absent."""

import os

import h5py
import numpy as np
import pytest
from conftest import binary_model_yaml

from connectomics_mednext import cli
from connectomics_mednext.data.targets import make_target

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
GALA = os.path.join(os.path.dirname(ROOT), "shared", "data", "gala_mini")

CONFIG = (
    """
"""
    + binary_model_yaml((16, 64, 64), "4-1-1", 8)
    + """DATASET:
  INPUT_PATH: {data}/
  IMAGE_NAME: train_image.h5
  LABEL_NAME: train_label.h5
  OUTPUT_PATH: {out}/
  IS_ISOTROPIC: True
SOLVER:
  BASE_LR: 0.002
  ITERATION_TOTAL: 60
  ITERATION_SAVE: 60
  SAMPLES_PER_BATCH: 2
MONITOR:
  ITERATION_NUM: [20, 60]
INFERENCE:
  INPUT_SIZE: [16, 64, 64]
  OUTPUT_ACT: ["sigmoid"]
  IMAGE_NAME: test_image.h5
  OUTPUT_PATH: {out}/test
  STRIDE: [8, 32, 32]
  SAMPLES_PER_BATCH: 4
"""
)


@pytest.mark.skipif(not os.path.isdir(GALA), reason=f"real EM data folder {GALA} is absent")
def test_brief_training_finds_membranes_better_than_a_trivial_guess(tmp_path):
    prediction, label = _train_then_predict(CONFIG, tmp_path, iterations=60)
    _assert_beats_the_trivial_guess(prediction, make_target(label, "4-1-1")[0] > 0.5)


def _train_then_predict(config_text: str, tmp_path, iterations: int):
    """Train on gala_mini's training volume, predict its test volume: (prediction >= 0.5, test labels)."""
    config = tmp_path / "gala.yaml"
    config.write_text(config_text.format(data=GALA, out=tmp_path / "out"))
    base = [
        "--engine",
        "native",
        "--config-base",
        os.path.join(ROOT, "configs", "MedNeXt-Base.yaml"),
        "--config-file",
        str(config),
    ]
    cli.main(base)
    cli.main(base + ["--inference", "--checkpoint", str(tmp_path / "out" / f"checkpoint_{iterations:05d}.pth.tar")])
    with h5py.File(tmp_path / "out" / "test" / "result.h5", "r") as f:
        prediction = f["vol0"][0] >= 128
    with h5py.File(os.path.join(GALA, "test_label.h5"), "r") as f:
        return prediction, f["main"][:]


def _assert_beats_the_trivial_guess(prediction, truth) -> None:
    assert prediction.shape == truth.shape
    dice = 2 * (prediction & truth).sum() / (prediction.sum() + truth.sum())
    trivial = 2 * truth.mean() / (1 + truth.mean())  # Dice of calling every voxel a membrane
    assert dice > trivial + 0.1, (dice, trivial)


DATA = os.path.dirname(GALA)


@pytest.mark.skipif(not os.path.isdir(DATA), reason=f"real EM data folder {DATA} is absent")
@pytest.mark.parametrize(
    "volume,target,mode,options",
    [
        # gala_mini's thin boundaries (label 0) keep cells apart only under 6-connectivity.
        ("gala_mini/test_label.h5", "0", "binary", dict(connectivity=6)),
        # FIB-25 is dense; 10 nm voxels, seeds 30 nm from a boundary.
        (
            "fib25/label.h5",
            "4-1-1",
            "boundary",
            dict(resolution=(10.0, 10.0, 10.0), seed_distance=30.0, seed_min_size=8),
        ),
    ],
)
def test_a_perfect_prediction_of_real_labels_decodes_back_to_them(tmp_path, volume, target, mode, options):
    import numpy as np

    from connectomics_mednext.evaluate import evaluate_arrays
    from connectomics_mednext.segment import SegmentOptions, segment_file

    with h5py.File(os.path.join(DATA, volume), "r") as f:
        label = f["main"][:64] if volume.startswith("fib25") else f["main"][:]
    with h5py.File(tmp_path / "p.h5", "w") as f:
        f.create_dataset("vol0", data=(make_target(label, target) * 255).astype(np.uint8))
    segment_file(str(tmp_path / "p.h5"), str(tmp_path / "s.h5"), mode, SegmentOptions(**options))
    with h5py.File(tmp_path / "s.h5", "r") as f:
        segmentation = f["main"][:]
    # FIB-25's body 0 is a neuron, not unlabelled: shift its ids so that every voxel is scored.
    scores = evaluate_arrays(label.astype(np.int64) + volume.startswith("fib25"), segmentation)
    # Only the objects too thin to seed or to stay connected are lost.
    assert scores["arand"] < 0.05 and scores["voi_split"] < 0.5 and scores["voi_merge"] < 0.5, scores


CONFIG_2D = (
    """
"""
    + binary_model_yaml((1, 64, 64), "4-1-1", 8)
    + """DATASET:
  INPUT_PATH: {data}/
  IMAGE_NAME: train_image.h5
  LABEL_NAME: train_label.h5
  OUTPUT_PATH: {out}/
  DO_2D: True
SOLVER:
  BASE_LR: 0.002
  ITERATION_TOTAL: 100
  ITERATION_SAVE: 100
  SAMPLES_PER_BATCH: 4
MONITOR:
  ITERATION_NUM: [50, 100]
INFERENCE:
  INPUT_SIZE: [1, 64, 64]
  OUTPUT_ACT: ["sigmoid"]
  IMAGE_NAME: test_image.h5
  OUTPUT_PATH: {out}/test
  STRIDE: [1, 32, 32]
  SAMPLES_PER_BATCH: 8
"""
)


@pytest.mark.skipif(not os.path.isdir(GALA), reason=f"real EM data folder {GALA} is absent")
def test_a_2d_mednext_finds_membranes_plane_by_plane_better_than_a_trivial_guess(tmp_path):
    prediction, label = _train_then_predict(CONFIG_2D, tmp_path, iterations=100)
    # A 2D network sees boundaries within each plane.
    truth = np.concatenate([make_target(label[z : z + 1], "4-1-1")[0] > 0.5 for z in range(label.shape[0])])
    _assert_beats_the_trivial_guess(prediction, truth)
