"""The Python API: a checkpoint predicts an array in three lines, and segment/evaluate take arrays or files."""

import os

import h5py
import numpy as np
import pytest
import torch
from conftest import BASE, tiny_argv

from connectomics_mednext import Predictor, cli, evaluate, load_weights, segment
from connectomics_mednext.config import load_native_cfg
from connectomics_mednext.engine.stop_signals import TrainingStopped
from connectomics_mednext.engine.trainer import Trainer
from connectomics_mednext.errors import CheckpointError, ConfigError, InputError
from connectomics_mednext.io import Hdf5Prediction, PredictionOutput, ZarrPrediction, open_prediction_output
from connectomics_mednext.model import MedNeXt
from connectomics_mednext.segment import segment_file

cc3d = pytest.importorskip("cc3d", reason="decoding needs the segment extra")


@pytest.fixture(scope="module")
def predicted(tiny_run, tmp_path_factory):
    """The tiny run's checkpoint, its test image, and the command line's prediction of it (uint8)."""
    out = tmp_path_factory.mktemp("api")
    checkpoint = str(tiny_run / "trained" / "checkpoint_00002.pth.tar")
    cli.run_command(tiny_argv(tiny_run, "--inference", "--checkpoint", checkpoint, out=out))
    with h5py.File(out / "test" / "result.h5", "r") as f:
        written = f["vol0"][:]
    with h5py.File(tiny_run / "image.h5", "r") as f:
        image = f["main"][:]
    return checkpoint, image, written, out / "test" / "result.h5"


def test_a_checkpoint_predicts_an_array_as_the_command_line_does(predicted):
    checkpoint, image, written, _ = predicted
    predictor = Predictor.from_checkpoint(checkpoint)
    probabilities = predictor.predict(image)
    assert probabilities.dtype == np.float32 and probabilities.shape == written.shape
    assert np.abs(probabilities * 255.0 - written).max() <= 0.5 + 1e-3
    assert np.array_equal(predictor.predict(torch.from_numpy(image)), probabilities)


def test_overrides_are_inference_keys_in_lower_case(predicted):
    checkpoint, image, written, _ = predicted
    predictor = Predictor.from_checkpoint(checkpoint, stride=[5, 12, 12], samples_per_batch=1)
    assert predictor.settings.stride == (5, 12, 12) and predictor.settings.batch_size == 1
    assert not np.array_equal(np.rint(predictor.predict(image) * 255), written)  # other windows, other blend
    with pytest.raises(ConfigError, match=r"'strides' is not an INFERENCE key; did you mean 'stride'\?"):
        Predictor.from_checkpoint(checkpoint, strides=[8, 16, 16])
    with pytest.raises(ConfigError, match=r"INFERENCE.STRIDE must be of type list"):
        Predictor.from_checkpoint(checkpoint, stride="wide")


def test_predict_names_the_argument_of_a_bad_array(predicted):
    predictor = Predictor.from_checkpoint(predicted[0])
    with pytest.raises(InputError, match=r"^volume 'the input array' is float32 with values 0\.5\.\.0\.5, but images "):
        predictor.predict(np.full((24, 40, 40), 0.5, np.float32))
    with pytest.raises(InputError, match=r"^volume has shape \(40, 40\); expected a \(Z, Y, X\) volume\."):
        predictor.predict(np.zeros((40, 40), np.uint8))


def test_a_checkpoint_without_config_needs_a_config_file(predicted, tmp_path):
    state = torch.load(predicted[0], weights_only=True)
    del state["config"]
    torch.save(state, tmp_path / "pytc_style.pth.tar")
    with pytest.raises(CheckpointError, match=r"holds no config .* give the config it was trained with as config_file"):
        Predictor.from_checkpoint(str(tmp_path / "pytc_style.pth.tar"))
    config = load_native_cfg(str(predicted[0]).replace("trained/checkpoint_00002.pth.tar", "cfg.yaml"), BASE)
    (tmp_path / "full.yaml").write_text(config.dump())
    probabilities = Predictor.from_checkpoint(
        str(tmp_path / "pytc_style.pth.tar"), str(tmp_path / "full.yaml")
    ).predict(predicted[1])
    assert np.abs(probabilities * 255.0 - predicted[2]).max() <= 0.5 + 1e-3


def test_segment_takes_arrays_and_files_alike(predicted, tmp_path):
    _, _, written, path = predicted
    count = segment_file(str(path), str(tmp_path / "seg.h5"), "binary")
    with h5py.File(tmp_path / "seg.h5", "r") as f:
        from_file = f["main"][:]
    assert count == from_file.max() and count > 0
    assert np.array_equal(segment(str(path), "binary"), from_file)
    assert np.array_equal(segment(written, "binary"), from_file)
    assert np.array_equal(segment(torch.from_numpy(written / 255.0), "binary"), from_file)
    thresholded = segment(written / 255.0, "binary", threshold=0.9, min_size=2)
    assert thresholded.max() != count and thresholded.dtype == np.uint32


def test_segment_and_evaluate_name_the_arguments_a_caller_wrote(predicted):
    written = predicted[2]
    with pytest.raises(ConfigError, match=r"^threshold is 2\.0, but must lie in 0\.\.1\.$"):
        segment(written, "binary", threshold=2.0)
    with pytest.raises(ConfigError, match=r"^'treshold' is not a decoding option; did you mean 'threshold'\?"):
        segment(written, "binary", treshold=0.2)
    with pytest.raises(InputError, match=r"^mode bc decodes TARGET_OPT 0 and 4 \(2 channels\), but prediction has 1"):
        segment(written, "bc")
    with pytest.raises(InputError, match=r"^prediction is float64; expected probabilities in 0\.\.1"):
        segment(written * 2.0, "binary")
    with pytest.raises(InputError, match=r"^threshold is 1\.5, but must lie in 0\.\.1\.$"):
        evaluate(np.ones((2, 3, 4), np.uint8), prediction=np.zeros((2, 3, 4)), threshold=1.5)
    with pytest.raises(InputError, match=r"^segmentation has shape \(2, 3, 3\) but label has \(2, 3, 4\)"):
        evaluate(np.ones((2, 3, 4), np.uint8), segmentation=np.ones((2, 3, 3)))
    with pytest.raises(InputError, match=r"^label is float64; expected integer ids \(0 is background\)\.$"):
        evaluate(np.ones((2, 3, 4)), segmentation=np.ones((2, 3, 4), np.uint8))
    with pytest.raises(InputError, match=r"^segmentation holds the negative id -1; ids must be 0 or more\.$"):
        evaluate(np.ones((2, 3, 4), np.uint8), segmentation=-np.ones((2, 3, 4), np.int32))
    with pytest.raises(InputError, match=r"^mask is 0 everywhere: no voxel would be scored\.$"):
        evaluate(np.ones((2, 3, 4), np.uint8), segmentation=np.ones((2, 3, 4), np.uint8), mask=np.zeros((2, 3, 4)))


def test_ids_above_2_to_the_53_are_scored_exactly():
    base = np.uint64(2**60)
    truth = np.zeros((4, 8, 8), np.uint64)
    truth[:, :4], truth[:, 4:] = base + np.uint64(1), base + np.uint64(2)  # equal as float64
    split = truth.copy()
    assert evaluate(truth, segmentation=truth)["arand"] == 0.0 and evaluate(truth, segmentation=split)["f1"] == 1.0
    merged = np.full_like(truth, base + np.uint64(1))
    assert evaluate(truth, segmentation=merged)["voi_merge"] == pytest.approx(1.0)


def test_inference_decode_names_the_config_key(tiny_run, tmp_path, capsys):
    checkpoint = str(tiny_run / "trained" / "checkpoint_00002.pth.tar")
    with pytest.raises(SystemExit):
        cli.main(
            tiny_argv(
                tiny_run, "--inference", "--checkpoint", checkpoint, out=tmp_path, overrides=["INFERENCE.DECODE", "bc"]
            )
        )
    assert "error: INFERENCE.DECODE bc decodes TARGET_OPT 0 and 4 (2 channels), but" in capsys.readouterr().err


def test_evaluate_takes_arrays_and_files_alike(predicted, tiny_run):
    _, _, written, path = predicted
    labels = segment(written, "binary")
    with h5py.File(tiny_run / "label.h5", "r") as f:
        truth = f["main"][:]
    from_arrays = evaluate(truth, segmentation=labels, prediction=written)
    from_files = evaluate(str(tiny_run / "label.h5"), segmentation=torch.from_numpy(labels), prediction=str(path))
    assert from_arrays == from_files and set(from_arrays) >= {"dice", "iou", "f1", "ap", "voi_split", "arand"}
    assert evaluate(truth, prediction=written[0]) == {
        k: from_arrays[k] for k in ("iou", "dice", "best_threshold", "best_iou")
    }


def test_monai_checkpoints_load_through_their_filter(tmp_path):
    monai = pytest.importorskip("monai.networks.nets", reason="MONAI is not installed")
    theirs = monai.MedNeXt(
        spatial_dims=3,
        init_filters=4,
        in_channels=1,
        out_channels=2,
        encoder_expansion_ratio=2,
        decoder_expansion_ratio=2,
        bottleneck_expansion_ratio=2,
        kernel_size=3,
        deep_supervision=True,
        blocks_down=(1, 1, 1, 1),
        blocks_bottleneck=1,
        blocks_up=(1, 1, 1, 1),
    )
    torch.save({"state_dict": {f"module.{k}": v for k, v in theirs.state_dict().items()}}, tmp_path / "monai.pth")
    ours = MedNeXt(1, 4, 2, exp_r=2, kernel_size=3, deep_supervision=True, block_counts=[1] * 9)
    load_weights(ours, str(tmp_path / "monai.pth"))  # the layout is recognised by its key names
    x = torch.randn(1, 1, 32, 32, 32)
    with torch.no_grad():
        expected = theirs.eval()(x)
        got = ours.eval()(x)
    expected = expected[0] if isinstance(expected, (list, tuple)) else expected
    got = got[0] if isinstance(got, (list, tuple)) else got
    assert (expected - got).abs().max().item() < 1e-5
    with pytest.raises(CheckpointError, match=r"does not fit this MedNeXt: missing keys: out_1\.conv_out\.weight"):
        load_weights(
            MedNeXt(1, 4, 2, exp_r=2, deep_supervision=True, block_counts=[1] * 9),
            {k: v for k, v in theirs.state_dict().items() if not k.startswith("out_blocks")},
            layout="monai",
        )


class RecordingTrainer(Trainer):
    """Overrides the hooks, and asks to stop after the second iteration."""

    def on_train_start(self):
        self.events = ["start"]
        super().on_train_start()

    def on_iteration_end(self, iteration, step, began):
        self.events.append(iteration)
        super().on_iteration_end(iteration, step, began)

    def agree(self, finite, stop):
        return finite, len(self.events) > 1


def test_hooks_run_and_a_stop_raises_instead_of_exiting(tiny_run, tmp_path):
    cfg = load_native_cfg(str(tiny_run / "cfg.yaml"), BASE, ["DATASET.OUTPUT_PATH", str(tmp_path)])
    trainer = RecordingTrainer(cfg, torch.device("cpu"))
    with pytest.raises(
        TrainingStopped, match=r"Stopped by another rank at iteration 1: saved .*checkpoint_00001"
    ) as info:
        trainer.train()
    assert info.value.exit_code == 1 and trainer.events == ["start", 1]
    assert sorted(os.listdir(tmp_path)) == ["checkpoint_00001.pth.tar", "log"]


def test_validation_uses_inference_sliding_window_and_is_checked_at_start(tiny_run, tmp_path):
    data = str(tiny_run)
    overrides = [
        "DATASET.OUTPUT_PATH",
        str(tmp_path),
        "DATASET.VAL_IMAGE_NAME",
        "image.h5",
        "DATASET.VAL_LABEL_NAME",
        "label.h5",
        "INFERENCE.STRIDE",
        "[4, 8, 8]",
    ]
    cfg = load_native_cfg(os.path.join(data, "cfg.yaml"), BASE, overrides)
    trainer = Trainer(cfg, torch.device("cpu"))
    assert trainer.validation_window.stride == (4, 8, 8) and trainer.validation_window.window == (16, 32, 32)
    scores = trainer.validate()
    assert set(scores) == {"iou", "dice"} and 0 <= scores["dice"] <= 1
    bad = load_native_cfg(os.path.join(data, "cfg.yaml"), BASE, overrides[:-1] + ["[0, 8, 8]"])
    with pytest.raises(ConfigError, match=r"INFERENCE\.STRIDE \[0, 8, 8\] must be between 1 and the window"):
        Trainer(bad, torch.device("cpu"))


def test_both_prediction_outputs_declare_the_protocol(tmp_path):
    assert issubclass(Hdf5Prediction, PredictionOutput) and issubclass(ZarrPrediction, PredictionOutput)
    output = open_prediction_output(str(tmp_path / "p.h5"))
    assert isinstance(output, Hdf5Prediction) and output.per_rank_files
    output.close_or_discard()
    assert os.listdir(tmp_path) == []


def test_a_validation_volume_smaller_than_the_window_is_refused_before_training(tiny_run, tmp_path):
    import h5py

    with h5py.File(tmp_path / "small.h5", "w") as f:
        f.create_dataset("main", data=np.zeros((8, 40, 40), np.uint8))
    overrides = [
        "DATASET.OUTPUT_PATH",
        str(tmp_path / "out"),
        "DATASET.VAL_IMAGE_NAME",
        str(tmp_path / "small.h5"),
        "DATASET.VAL_LABEL_NAME",
        str(tmp_path / "small.h5"),
    ]
    cfg = load_native_cfg(str(tiny_run / "cfg.yaml"), BASE, overrides)
    with pytest.raises(
        ConfigError, match=r"The window \[16, 32, 32\] is larger than '.*small\.h5' of shape \(8, 40, 40\)"
    ):
        Trainer(cfg, torch.device("cpu"))
    assert not (tmp_path / "out").exists()
