"""Metrics against hand-computed cases and independent implementations; the evaluate command line."""

import itertools
import json
import math
import re

import h5py
import numpy as np
import pytest

from connectomics_mednext.evaluate import cli as evaluate_cli
from connectomics_mednext.evaluate import instance_scores, neuron_scores, voxel_scores
from connectomics_mednext.evaluate.instance import average_precision


def test_voxel_iou_and_dice_by_hand():
    probability = np.array([[255, 0], [128, 127]], np.uint8)
    truth = np.array([[1, 0], [1, 1]], bool)
    # >= 0.5 is >= 128: voxels (0, 0) and (1, 0), both true; the truth has 3 voxels.
    scores = voxel_scores(probability, truth)
    assert scores["iou"] == pytest.approx(2 / 3) and scores["dice"] == pytest.approx(0.8)


def test_voxel_scores_match_a_brute_force_count_at_every_threshold():
    rng = np.random.default_rng(0)
    probability = rng.integers(0, 256, (6, 7, 8)).astype(np.uint8)
    truth = rng.random((6, 7, 8)) < 0.4
    mask = rng.random((6, 7, 8)) < 0.8
    for threshold in (0.0, 0.25, 0.5, 0.77, 1.0):
        predicted = probability.astype(np.float64) / 255 >= threshold - 1e-12
        tp = np.sum(predicted & truth & mask)
        union = np.sum((predicted | truth) & mask)
        total = np.sum(predicted & mask) + np.sum(truth & mask)
        scores = voxel_scores(probability, truth, mask, threshold)
        assert scores["iou"] == pytest.approx(tp / union) and scores["dice"] == pytest.approx(2 * tp / total)


def test_the_sweep_finds_the_best_threshold():
    truth = np.zeros(100, bool)
    truth[:50] = True
    probability = np.concatenate([np.full(50, 200), np.full(50, 120)]).astype(np.uint8)  # 0.78 and 0.47
    scores = voxel_scores(probability, truth)
    assert scores["iou"] == pytest.approx(1.0)  # 0.47 < 0.5
    low = voxel_scores(np.concatenate([np.full(50, 200), np.full(50, 150)]).astype(np.uint8), truth)
    assert low["iou"] == pytest.approx(0.5) and low["best_iou"] == pytest.approx(1.0)
    assert 150 / 255 < low["best_threshold"] <= 200 / 255


def test_instance_scores_by_hand():
    truth = np.zeros((1, 1, 12), np.int64)
    truth[0, 0, 0:4], truth[0, 0, 6:10] = 1, 2
    segmentation = np.zeros_like(truth)
    segmentation[0, 0, 0:4] = 5  # IoU 1 with truth 1
    segmentation[0, 0, 6:8] = 6  # IoU 0.5 with truth 2
    segmentation[0, 0, 11] = 7  # nothing
    scores = instance_scores(truth, segmentation)
    # At IoU 0.5 both truths are found by 2 of the 3 predictions.
    assert scores["precision"] == pytest.approx(2 / 3) and scores["recall"] == pytest.approx(1.0)
    assert scores["f1"] == pytest.approx(0.8)
    # Ranked by size (no scores): 5 (hit), 6 (hit at 0.5 only), 7 (miss).
    assert scores["ap50"] == pytest.approx(1.0)
    # At 0.75 only 5 hits: recall reaches 0.5 with precision 1, never more.
    assert scores["ap75"] == pytest.approx(51 / 101)
    assert scores["ap"] == pytest.approx((1.0 + 9 * 51 / 101) / 10)


def test_ap_uses_the_scores_ranking():
    hits_first = average_precision(np.array([True, False]), 1)
    miss_first = average_precision(np.array([False, True]), 1)
    assert hits_first == pytest.approx(1.0) and miss_first == pytest.approx(0.5)
    truth = np.zeros((1, 1, 8), np.int64)
    truth[0, 0, :4] = 1
    segmentation = np.zeros_like(truth)
    segmentation[0, 0, :4], segmentation[0, 0, 5:8] = 1, 2
    assert instance_scores(truth, segmentation, {1: 0.2, 2: 0.9})["ap50"] == pytest.approx(0.5)
    assert instance_scores(truth, segmentation, {1: 0.9, 2: 0.2})["ap50"] == pytest.approx(1.0)


def test_perfect_and_empty_segmentations():
    truth = np.zeros((4, 4, 4), np.int64)
    truth[:2], truth[2:] = 1, 2
    perfect = instance_scores(truth, truth * 10)
    assert all(perfect[k] == pytest.approx(1.0) for k in ("precision", "recall", "f1", "ap50", "ap75", "ap"))
    empty = instance_scores(truth, np.zeros_like(truth))
    assert empty["recall"] == 0.0 and empty["ap"] == 0.0


def test_voi_by_hand_and_against_waterz():
    truth = np.ones((1, 2, 4), np.uint64)
    halves = np.array([[[1, 1, 2, 2], [1, 1, 2, 2]]], np.uint64)
    scores = neuron_scores(truth, halves)
    assert scores["voi_split"] == pytest.approx(1.0) and scores["voi_merge"] == pytest.approx(0.0)  # bits
    waterz = pytest.importorskip("waterz")
    rng = np.random.default_rng(1)
    truth = rng.integers(1, 5, (4, 6, 6)).astype(np.uint64)
    segmentation = rng.integers(1, 7, (4, 6, 6)).astype(np.uint64)
    independent = waterz.evaluate(segmentation, truth)
    scores = neuron_scores(truth, segmentation)
    assert scores["voi_split"] == pytest.approx(independent["voi_split"])
    assert scores["voi_merge"] == pytest.approx(independent["voi_merge"])


def _pairs_adapted_rand(truth, segmentation):
    """1 - F of Rand precision and recall, counted over every pair of distinct labelled voxels."""
    keep = truth.ravel() > 0
    t, s = truth.ravel()[keep], segmentation.ravel()[keep]
    both = same_truth = same_segment = 0
    for i, j in itertools.combinations(range(len(t)), 2):
        same_t, same_s = t[i] == t[j], s[i] == s[j]
        both += same_t and same_s
        same_truth += same_t
        same_segment += same_s
    precision, recall = both / same_segment, both / same_truth
    return 1 - 2 * precision * recall / (precision + recall)


def test_adapted_rand_against_counting_pairs():
    rng = np.random.default_rng(2)
    truth = rng.integers(0, 4, (3, 4, 5))
    segmentation = rng.integers(1, 4, (3, 4, 5))
    assert neuron_scores(truth, segmentation)["arand"] == pytest.approx(_pairs_adapted_rand(truth, segmentation))


def test_background_of_the_truth_is_left_out():
    truth = np.array([[[0, 0, 1, 1]]])
    assert neuron_scores(truth, np.array([[[5, 6, 7, 7]]]))["arand"] == pytest.approx(0.0)


def _h5(path, array, name="main"):
    with h5py.File(path, "w") as f:
        f.create_dataset(name, data=array)
    return str(path)


@pytest.fixture
def volumes(tmp_path):
    truth = np.zeros((4, 8, 8), np.uint16)
    truth[:, :4], truth[:, 4:6] = 1, 2
    segmentation = truth.copy()
    segmentation[:, 4:6, :4] = 3  # splits object 2
    probability = (truth > 0).astype(np.uint8)[None] * 230
    mask = np.ones_like(truth)
    mask[:, 4:6, :4] = 0  # hides the split
    return {
        "label": _h5(tmp_path / "label.h5", truth),
        "segmentation": _h5(tmp_path / "seg.h5", segmentation),
        "prediction": _h5(tmp_path / "pred.h5", probability, "vol0"),
        "mask": _h5(tmp_path / "mask.h5", mask),
    }


def test_the_command_line_prints_a_table_and_writes_flat_json(tmp_path, volumes, capsys):
    out = tmp_path / "scores.json"
    evaluate_cli.main(
        [
            "--label",
            volumes["label"],
            "--segmentation",
            volumes["segmentation"],
            "--prediction",
            volumes["prediction"],
            "--json",
            str(out),
        ]
    )
    table = capsys.readouterr().out
    scores = json.loads(out.read_text())
    assert list(scores) == [
        "iou",
        "dice",
        "best_threshold",
        "best_iou",
        "precision",
        "recall",
        "f1",
        "ap50",
        "ap75",
        "ap",
        "voi_split",
        "voi_merge",
        "arand",
    ]
    assert scores["iou"] == 1.0 and scores["voi_split"] > 0.1 and scores["voi_merge"] == pytest.approx(0.0, abs=1e-12)
    assert re.search(r"^voi_split\s+0\.\d{4}$", table, re.M)
    masked = evaluate_cli.run(
        ["--label", volumes["label"], "--segmentation", volumes["segmentation"], "--mask", volumes["mask"]]
    )
    assert masked["voi_split"] == pytest.approx(0.0, abs=1e-12) and masked["precision"] == 1.0 and "iou" not in masked
    assert not math.isnan(masked["ap"])


@pytest.mark.parametrize(
    "extra,message",
    [
        ([], r"Give --segmentation, --prediction or both"),
        (
            ["--segmentation", "{small}"],
            r"--segmentation '.*small\.h5' has shape \(4, 8, 6\) but --label has \(4, 8, 8\)",
        ),
        (["--prediction", "{pred}", "--threshold", "2"], r"--threshold is 2\.0, but must lie in 0\.\.1"),
        (["--prediction", "{pred}", "--channel", "1"], r"--channel 1 does not exist: '.*pred\.h5' has 1 channels"),
        (["--segmentation", "{missing}"], r"--segmentation: file '.*missing\.h5' does not exist"),
        (["--segmentation", "{seg}", "--json", "{folder}/no/such/scores.json"], r"--json .* its folder does not exist"),
        (["--segmentation", "{seg}", "--json", "{folder}"], r"--json '.*' is a folder; give the name of the JSON file"),
        (
            ["--prediction", "{pred}", "--target-opt", "7"],
            r"^error: --target-opt must be one of \['0', '2', '4', '9'\]",
        ),
        (["--segmentation", "{seg}", "--mask", "{zeros}"], r"^error: --mask '.*zeros\.h5' is 0 everywhere"),
        (["--segmentation", "{floats}"], r"^error: --segmentation '.*floats\.h5' is float32; expected integer ids"),
    ],
)
def test_bad_input_gets_one_sentence(tmp_path, volumes, capsys, extra, message):
    names = {
        "small": _h5(tmp_path / "small.h5", np.zeros((4, 8, 6), np.uint16)),
        "pred": volumes["prediction"],
        "missing": str(tmp_path / "missing.h5"),
        "seg": volumes["segmentation"],
        "folder": str(tmp_path),
        "zeros": _h5(tmp_path / "zeros.h5", np.zeros((4, 8, 8), np.uint8)),
        "floats": _h5(tmp_path / "floats.h5", np.zeros((4, 8, 8), np.float32)),
    }
    with pytest.raises(SystemExit) as exit_info:
        evaluate_cli.main(["--label", volumes["label"], *[a.format(**names) for a in extra]])
    err = capsys.readouterr().err
    assert exit_info.value.code == 2 and "Traceback" not in err and len(err.strip().splitlines()) == 1
    assert re.search(message, err), err
