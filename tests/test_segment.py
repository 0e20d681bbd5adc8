"""Decoding predictions into instances: every mode, slab-wise components against whole-volume ones, bad input."""

import dataclasses
import os
import sys

import h5py
import numpy as np
import pytest
from conftest import same_partition, write_prediction

from connectomics_mednext.data.synthetic import make_em_volume
from connectomics_mednext.data.targets import make_target
from connectomics_mednext.errors import MissingExtraError
from connectomics_mednext.evaluate import neuron_scores
from connectomics_mednext.segment import SegmentOptions, segment_file
from connectomics_mednext.segment import cli as segment_cli
from connectomics_mednext.segment.components import import_cc3d
from connectomics_mednext.segment.decoders import label_dtype

cc3d = pytest.importorskip("cc3d")
ndimage = pytest.importorskip("scipy.ndimage")


def read_labels(path) -> np.ndarray:
    with h5py.File(path, "r") as f:
        return f["main"][:]


STRUCTURES = {
    6: ndimage.generate_binary_structure(3, 1),
    18: ndimage.generate_binary_structure(3, 2),
    26: ndimage.generate_binary_structure(3, 3),
}


@pytest.mark.parametrize("connectivity", [6, 18, 26])
@pytest.mark.parametrize("slab_planes", [1, 3, 7, 0])
def test_slab_wise_components_partition_the_voxels_as_the_whole_volume(tmp_path, connectivity, slab_planes):
    foreground = np.random.default_rng(connectivity).random((20, 24, 28)) > 0.68
    path = write_prediction(tmp_path / "p.h5", foreground[None].astype(np.float32))
    count = segment_file(
        path, str(tmp_path / "s.h5"), "binary", SegmentOptions(connectivity=connectivity, slab_planes=slab_planes)
    )
    labels = read_labels(tmp_path / "s.h5")
    whole, whole_count = cc3d.connected_components(foreground, connectivity=connectivity, return_N=True)
    independent, independent_count = ndimage.label(foreground, structure=STRUCTURES[connectivity])
    assert count == whole_count == independent_count
    assert same_partition(labels, whole) and same_partition(labels, independent)
    assert labels.dtype == np.uint32 and labels.max() == count


def test_small_objects_are_removed_across_slabs(tmp_path):
    foreground = np.zeros((12, 10, 10), dtype=bool)
    foreground[2:10, 2, 2] = True  # 8 voxels crossing three 3-plane slabs
    foreground[5, 7, 7] = True  # 1 voxel
    path = write_prediction(tmp_path / "p.h5", foreground[None].astype(np.float32))
    count = segment_file(path, str(tmp_path / "s.h5"), "binary", SegmentOptions(min_size=5, slab_planes=3))
    labels = read_labels(tmp_path / "s.h5")
    assert count == 1 and labels[5, 7, 7] == 0 and (labels[2:10, 2, 2] == 1).all()


def test_contacts_follow_the_connectivity_and_are_counted_once():
    from connectomics_mednext.geometry import Box
    from connectomics_mednext.segment.contacts import block_contacts, contact_region
    from connectomics_mednext.segment.decoders import DECODERS

    fragments = np.zeros((2, 3, 3), np.uint64)
    fragments[0, 1, 1], fragments[1, 0, 0] = 1, 2  # touch only across a corner of the z face
    region, block = Box((0, 0, 0), (2, 3, 3)), Box((0, 0, 0), (1, 3, 3))
    assert contact_region(block, (2, 3, 3)) == region

    def pairs(connectivity):
        found = block_contacts(
            fragments, None, block, region, DECODERS["binary"], SegmentOptions(connectivity=connectivity)
        )
        return found.pairs.tolist(), found.voxel_pairs.tolist()

    assert pairs(6) == ([], []) and pairs(18) == ([], []) and pairs(26) == ([[1, 2]], [1])
    fragments[1, 0, 0], fragments[1, 0, 1] = 0, 3  # across an edge
    assert pairs(6) == ([], []) and pairs(18) == ([[1, 3]], [1])
    # The block above owns no pair of these: every voxel pair between two blocks is counted by one of them.
    above = block_contacts(fragments, None, Box((1, 0, 0), (2, 3, 3)), region, DECODERS["binary"], SegmentOptions())
    assert len(above.pairs) == 0


@pytest.mark.parametrize("block_size", [(5, 7, 9), (20, 5, 28), (3, 24, 4)])
def test_any_blocks_give_the_whole_volume_components(block_size):
    from connectomics_mednext.segment import segment

    foreground = np.random.default_rng(7).random((20, 24, 28)) > 0.68
    whole = segment(foreground[None].astype(np.float32), "binary", slab_planes=0)
    blocks = segment(foreground[None].astype(np.float32), "binary", block_size=block_size)
    assert same_partition(blocks, whole) and blocks.max() == whole.max()


def test_label_dtype_grows_when_ids_do_not_fit():
    assert label_dtype(2**32 - 1) == np.uint32 and label_dtype(2**32) == np.uint64


@pytest.fixture(scope="module")
def cells():
    return make_em_volume((24, 48, 48), cells=10, mitochondria=6, seed=4)["label"].astype(np.int64)


def test_bc_separates_touching_objects(tmp_path):
    label = np.zeros((16, 32, 48), np.int64)
    label[2:14, 4:28, 4:24], label[2:14, 4:28, 24:44] = 1, 2  # two boxes sharing a face
    foreground = (label > 0).astype(np.float32)
    contour = make_target(label, "4")[0] * foreground
    path = write_prediction(tmp_path / "p.h5", np.stack([foreground, contour]))
    count = segment_file(path, str(tmp_path / "s.h5"), "bc", SegmentOptions(seed_min_size=8))
    labels = read_labels(tmp_path / "s.h5")
    assert count == 2 and same_partition(labels, label)


def test_boundary_watershed_recovers_neurons_with_anisotropic_resolution(tmp_path, cells):
    boundary = make_target(cells, "4")[0]
    path = write_prediction(tmp_path / "p.h5", boundary[None])
    # 2 nm in z, 1 nm in y and x: a seed needs 3 nm of clearance, i.e. 2 planes or 3 pixels.
    segment_file(
        path,
        str(tmp_path / "s.h5"),
        "boundary",
        SegmentOptions(seed_distance=3.0, resolution=(2.0, 1.0, 1.0), seed_min_size=4),
    )
    # The membranes (label 0) are unlabelled for the score; every cell must come back whole and alone.
    scores = neuron_scores(cells, read_labels(tmp_path / "s.h5"))
    assert scores["arand"] < 0.01 and scores["voi_split"] < 0.1 and scores["voi_merge"] < 0.1


def test_affinity_agglomeration_recovers_neurons(tmp_path, cells):
    path = write_prediction(tmp_path / "p.h5", make_target(cells, "2"))
    segment_file(path, str(tmp_path / "s.h5"), "affinity")
    labels = read_labels(tmp_path / "s.h5")
    inside = cells > 0
    scores = neuron_scores(cells, labels)
    assert scores["arand"] < 0.05 and same_partition(labels[inside], cells[inside])


def _segment(argv, capsys):
    with pytest.raises(SystemExit) as exit_info:
        segment_cli.main(argv)
    captured = capsys.readouterr()
    return exit_info.value.code, captured.err


@pytest.mark.parametrize(
    "extra,message",
    [
        (["--mode", "bc"], r"--mode bc decodes TARGET_OPT 0 and 4 \(2 channels\), but '.*p\.h5' has 1 channels"),
        (["--mode", "affinity"], r"--mode affinity decodes TARGET_OPT 2 \(3 channels\), but '.*p\.h5' has 1 channels"),
        (["--mode", "binary", "--channel", "2"], r"--channel 2 does not exist: '.*p\.h5' has 1 channels"),
        (
            ["--mode", "binarry"],
            r"--mode must be one of \['affinity', 'bc', 'binary', 'boundary'\], got 'binarry'; did you "
            r"mean 'binary'\?",
        ),
        (["--mode", "binary", "--threshold", "1.5"], r"--threshold is 1.5, but must lie in 0..1"),
        (["--mode", "binary", "--connectivity", "8"], r"--connectivity must be one of \[6, 18, 26\], got 8"),
        (
            ["--mode", "boundary", "--resolution", "1", "2"],
            r"--resolution is \[1.0, 2.0\], but must be 3 positive sizes",
        ),
        (
            ["--mode", "boundary", "--max-memory", "0.000001"],
            r"--mode boundary needs about 0\.0 GiB for a block of 3840 voxels with its context \(80 bytes each\), "
            r"but --max-memory allows 0\.0 GiB; decode in smaller blocks \(--block-size\)",
        ),
        (
            ["--mode", "boundary", "--seed-distance", "0"],
            r"^error: --seed-distance is 0\.0, but must be a distance above 0",
        ),
        (
            ["--mode", "boundary", "--resolution", "nan"],
            r"^error: --resolution is \[nan, nan, nan\], but must be 3 positive",
        ),
        (
            ["--mode", "boundary", "--max-memory", "0"],
            r"^error: --max-memory is 0\.0, but must be a positive number of GiB\.$",
        ),
        (
            ["--mode", "binary", "--dataset", "vol1"],
            r"--prediction '.*p\.h5' has no dataset 'vol1'; it holds \['vol0'\]",
        ),
    ],
)
def test_bad_input_gets_one_sentence_and_writes_nothing(tmp_path, capsys, extra, message):
    path = write_prediction(tmp_path / "p.h5", np.zeros((1, 8, 16, 30), np.float32))
    output = tmp_path / "out" / "s.h5"
    output.parent.mkdir()
    code, err = _segment(["--prediction", path, "--output", str(output), *extra], capsys)
    assert code == 2 and "Traceback" not in err and len(err.strip().splitlines()) == 1
    import re

    assert re.search(message, err), err
    assert os.listdir(output.parent) == []


def test_a_prediction_in_another_layout_is_refused(tmp_path, capsys):
    with h5py.File(tmp_path / "float.h5", "w") as f:
        f.create_dataset("vol0", data=np.zeros((1, 4, 4, 4), np.float32))
    code, err = _segment(
        ["--prediction", str(tmp_path / "float.h5"), "--mode", "binary", "--output", str(tmp_path / "s.h5")], capsys
    )
    assert code == 2 and "expected PyTC's (C, Z, Y, X) uint8 layout" in err


def test_a_failing_decoder_leaves_nothing(tmp_path, monkeypatch):
    from connectomics_mednext.segment import decoders

    def broken(prediction, options):
        raise RuntimeError("boom")

    monkeypatch.setitem(decoders.DECODERS, "bc", dataclasses.replace(decoders.DECODERS["bc"], fragments=broken))
    path = write_prediction(tmp_path / "p.h5", np.zeros((2, 4, 8, 8), np.float32))
    with pytest.raises(RuntimeError, match="boom"):
        segment_file(path, str(tmp_path / "s.h5"), "bc")
    assert sorted(os.listdir(tmp_path)) == ["p.h5"]


def test_the_command_line_writes_labels_and_says_how_many(tmp_path, capsys):
    foreground = np.zeros((4, 8, 8), np.float32)
    foreground[1, 1, 1] = foreground[2, 5, 5] = 1
    path = write_prediction(tmp_path / "p.h5", foreground[None])
    segment_cli.main(["--prediction", path, "--mode", "binary", "--output", str(tmp_path / "s.h5")])
    assert capsys.readouterr().out.strip() == f"Wrote {tmp_path / 's.h5'}: 2 objects (binary)."
    with h5py.File(tmp_path / "s.h5", "r") as f:
        assert list(f) == ["main"] and f["main"].attrs["mode"] == "binary"


def test_every_option_has_a_flag_whose_help_names_its_default():
    import dataclasses

    parser = segment_cli.build_parser()
    flags = {action.dest: action for action in parser._actions}
    for field in dataclasses.fields(SegmentOptions):
        action = flags[field.name]
        assert action.help.endswith(f"(default {getattr(segment_cli.DEFAULTS, field.name)})"), field.name


@pytest.mark.parametrize(
    "module,call,message",
    [
        (
            "cc3d",
            lambda: import_cc3d(),
            r"Connected components need connected-components-3d: pip install "
            r"connectomics-mednext\[segment\]\.",
        ),
        (
            "skimage.metrics",
            lambda: neuron_scores(np.ones((2, 2, 2), int), np.ones((2, 2, 2), int)),
            r"Neuron metrics need scikit-image",
        ),
    ],
)
def test_a_missing_extra_is_named(monkeypatch, module, call, message):
    monkeypatch.setitem(sys.modules, module, None)  # import fails as if it were not installed
    with pytest.raises(MissingExtraError, match=message):
        call()


def test_an_unfinished_prediction_is_refused_by_segment_and_evaluate(tmp_path, capsys):
    from connectomics_mednext.evaluate import cli as evaluate_cli

    partial = write_prediction(tmp_path / "result.h5.partial", np.zeros((1, 4, 8, 8), np.float32))
    unmarked = tmp_path / "result.zarr"
    (unmarked / "vol0").mkdir(parents=True)  # a group without our complete mark
    with h5py.File(tmp_path / "label.h5", "w") as f:
        f.create_dataset("main", data=np.zeros((4, 8, 8), np.uint16))
    for prediction, why in ((partial, "is an unfinished prediction"), (str(unmarked), "has no complete mark")):
        code, err = _segment(
            ["--prediction", prediction, "--mode", "binary", "--output", str(tmp_path / "s.h5")], capsys
        )
        assert code == 2 and f"error: --prediction {prediction!r} {why}" in err
        with pytest.raises(SystemExit) as exit_info:
            evaluate_cli.main(["--label", str(tmp_path / "label.h5"), "--prediction", prediction])
        assert exit_info.value.code == 2 and f"error: --prediction {prediction!r} {why}" in capsys.readouterr().err
    assert not (tmp_path / "s.h5").exists()


def test_segment_replaces_its_own_labels_but_no_other_file(tmp_path, capsys):
    path = write_prediction(tmp_path / "p.h5", np.ones((1, 4, 8, 8), np.float32))
    output = tmp_path / "s.h5"
    argv = ["--prediction", path, "--mode", "binary", "--output", str(output)]
    for _ in range(2):  # a rerun replaces what segment wrote
        segment_cli.main(argv)
    assert read_labels(output).max() == 1
    output.write_text("my notes")
    code, err = _segment(argv, capsys)
    assert code == 2 and "exists and is not a segmentation of ours; other files are never replaced" in err
    assert output.read_text() == "my notes"
    with h5py.File(tmp_path / "other.h5", "w") as f:
        f.create_dataset("main", data=np.zeros((4, 8, 8), np.uint8))  # HDF5, but not our labels
    code, err = _segment([*argv[:-1], str(tmp_path / "other.h5")], capsys)
    assert code == 2 and "--output" in err and "is not a segmentation of ours" in err


def test_an_output_that_is_a_folder_is_refused(tmp_path, capsys):
    path = write_prediction(tmp_path / "p.h5", np.ones((1, 4, 8, 8), np.float32))
    (tmp_path / "labels").mkdir()
    code, err = _segment(["--prediction", path, "--mode", "binary", "--output", str(tmp_path / "labels")], capsys)
    assert code == 2 and err.strip() == (
        f"error: --output {str(tmp_path / 'labels')!r} is a folder; expected the name of a file for a segmentation."
    )
    assert os.listdir(tmp_path / "labels") == []
