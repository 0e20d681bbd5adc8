"""Our engine end to end on tiny synthetic volumes: train, resume, infer, interrupted inference, bad input."""

import os

import h5py
import numpy as np
import pytest
import torch
from conftest import FailsAfter, binary_model_yaml, predict_file, torchrun

from connectomics_mednext import cli
from connectomics_mednext.config import load_native_cfg
from connectomics_mednext.data.synthetic import make_em_volume
from connectomics_mednext.engine.inference import make_activation
from connectomics_mednext.errors import ConfigError

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
BASE = os.path.join(ROOT, "configs", "MedNeXt-Base.yaml")

CONFIG = (
    """
"""
    + binary_model_yaml((16, 32, 32), "0", 4)
    + """DATASET:
  INPUT_PATH: {data}/
  IMAGE_NAME: image.h5
  LABEL_NAME: label.h5
  VAL_IMAGE_NAME: image.h5
  VAL_LABEL_NAME: label.h5
  OUTPUT_PATH: {data}/out/
  PAD_SIZE: [2, 4, 4]
SOLVER:
  ITERATION_TOTAL: 4
  ITERATION_SAVE: 2
  ITERATION_VAL: 4
  SAMPLES_PER_BATCH: 1
MONITOR:
  ITERATION_NUM: [1, 2]
INFERENCE:
  OUTPUT_ACT: ["sigmoid"]
  IMAGE_NAME: image.h5
  OUTPUT_PATH: {data}/out/test
  STRIDE: [8, 16, 16]
  SAMPLES_PER_BATCH: 2
"""
)


@pytest.fixture(scope="module")
def data_dir(tmp_path_factory):
    path = tmp_path_factory.mktemp("em")
    volume = make_em_volume((24, 40, 40), cells=8, mitochondria=4, seed=3)
    for name in ("image", "label"):
        with h5py.File(path / f"{name}.h5", "w") as f:
            f.create_dataset("main", data=volume[name])
    return path


def write_config(tmp_path, data_dir, extra: str = "") -> str:
    path = tmp_path / "cfg.yaml"
    path.write_text(CONFIG.format(data=tmp_path) + extra)
    for name in ("image.h5", "label.h5"):
        if not (tmp_path / name).exists():
            os.symlink(data_dir / name, tmp_path / name)
    return str(path)


def run(config: str, *extra: str) -> None:
    cli.run_command(["--engine", "native", "--config-base", BASE, "--config-file", config, *extra])


def test_train_resume_and_infer(tmp_path, data_dir):
    config = write_config(tmp_path, data_dir)
    run(config)
    out = tmp_path / "out"
    assert {"checkpoint_00002.pth.tar", "checkpoint_00004.pth.tar", "log"} <= set(os.listdir(out))
    assert not any(name.endswith(".tmp") for name in os.listdir(out))
    final = torch.load(out / "checkpoint_00004.pth.tar", weights_only=True)
    assert final["iteration"] == 4 and {"state_dict", "optimizer", "lr_scheduler"} <= set(final)

    resumed_dir = tmp_path / "resumed"
    run(config, "--checkpoint", str(out / "checkpoint_00002.pth.tar"), "DATASET.OUTPUT_PATH", str(resumed_dir))
    resumed = torch.load(resumed_dir / "checkpoint_00004.pth.tar", weights_only=True)
    for key, value in final["state_dict"].items():
        assert torch.allclose(value, resumed["state_dict"][key], atol=1e-6), key

    run(
        config,
        "--inference",
        "--checkpoint",
        str(out / "checkpoint_00004.pth.tar"),
        "INFERENCE.AUG_NUM",
        "8",
        "INFERENCE.DECODE",
        "binary",
    )
    with h5py.File(out / "test" / "result.h5", "r") as f:
        assert list(f) == ["vol0"]
        assert f["vol0"].shape == (1, 24, 40, 40) and f["vol0"].dtype == np.uint8
        foreground = f["vol0"][0] >= 128
    assert sorted(os.listdir(out / "test")) == ["result.h5", "result_seg.h5"]
    with h5py.File(out / "test" / "result_seg.h5", "r") as f:
        # INFERENCE.DECODE ran the binary decoder: its objects are exactly the thresholded foreground.
        assert list(f) == ["main"] and f["main"].attrs["mode"] == "binary"
        assert np.array_equal(f["main"][:] > 0, foreground)


def test_interrupted_inference_resumes_to_the_same_result(tmp_path):
    torch.manual_seed(0)
    model = torch.nn.Conv3d(1, 2, 3, padding=1).eval()
    volume = (np.random.default_rng(0).random((40, 24, 24)) * 255).astype(np.uint8)
    args = dict(window=(8, 16, 16), stride=(4, 8, 8), channels=2, activation=make_activation(["sigmoid"], [2]))
    reference = predict_file(model, [volume], str(tmp_path / "reference.h5"), **args)
    target = str(tmp_path / "result.h5")
    with pytest.raises(KeyboardInterrupt):
        predict_file(FailsAfter(model, 20), [volume], target, **args)
    assert not os.path.exists(target)
    with h5py.File(target + ".partial", "r") as f:
        (done,) = f["vol0"].attrs["done_z"]
    assert 0 < done < 40
    predict_file(model, [volume], target, **args)
    with h5py.File(reference, "r") as a, h5py.File(target, "r") as b:
        assert np.array_equal(a["vol0"][:], b["vol0"][:])


def test_an_interrupted_run_with_other_weights_is_not_continued(tmp_path):
    volume = (np.random.default_rng(0).random((40, 24, 24)) * 255).astype(np.uint8)
    args = dict(window=(8, 16, 16), stride=(4, 8, 8), channels=1, activation=make_activation(["none"], [1]))
    zeros, ones = torch.nn.Conv3d(1, 1, 1), torch.nn.Conv3d(1, 1, 1)
    for conv, value in ((zeros, 0.0), (ones, 1.0)):
        torch.nn.init.zeros_(conv.weight)
        torch.nn.init.constant_(conv.bias, value)
    target = str(tmp_path / "result.h5")
    with pytest.raises(KeyboardInterrupt):
        predict_file(FailsAfter(zeros, 20), [volume], target, **args)
    predict_file(ones, [volume], target, **args)
    with h5py.File(target, "r") as f:
        assert (f["vol0"][:] == 255).all()


def test_blending_reproduces_a_constant_prediction_exactly(tmp_path):
    class Identity(torch.nn.Module):
        def forward(self, x):
            return (x + 1) / 2  # undo the 0.5 mean/std normalisation

    volume = (np.random.default_rng(1).random((37, 40, 45)) * 255).astype(np.uint8)
    path = predict_file(
        Identity(), [volume], str(tmp_path / "id.h5"), (16, 16, 16), (8, 8, 8), 1, make_activation(["none"], [1])
    )
    with h5py.File(path, "r") as f:
        assert np.array_equal(f["vol0"][0], volume)


def test_valid_config_loads_frozen(tmp_path, data_dir):
    cfg = load_native_cfg(write_config(tmp_path, data_dir), BASE)
    assert cfg.MODEL.ARCHITECTURE == "mednext" and cfg.is_frozen()


def test_unsupported_key_is_named(tmp_path, data_dir):
    (tmp_path / "extra.yaml").write_text("DATASET:\n  REJECT_SAMPLING: 1\n")
    config = str(tmp_path / "extra.yaml")
    with pytest.raises(ValueError, match="DATASET.REJECT_SAMPLING.*subset of PyTC's keys"):
        load_native_cfg(config, BASE)


def test_missing_file_is_named(tmp_path, data_dir):
    config = write_config(tmp_path, data_dir)
    with pytest.raises(FileNotFoundError, match="DATASET.IMAGE_NAME: file .*missing.h5"):
        run(config, "DATASET.IMAGE_NAME", "missing.h5")


def test_missing_hdf5_key_is_named(tmp_path, data_dir):
    config = write_config(tmp_path, data_dir)
    with h5py.File(tmp_path / "two.h5", "w") as f:
        f.create_dataset("raw", data=np.zeros((24, 40, 40), np.uint8))
        f.create_dataset("other", data=np.zeros((24, 40, 40), np.uint8))
    with pytest.raises(KeyError, match="two.h5.*'raw', 'other'|two.h5.*'other', 'raw'"):
        run(config, "DATASET.IMAGE_NAME", "two.h5")


def test_image_and_label_shapes_must_match(tmp_path, data_dir):
    config = write_config(tmp_path, data_dir)
    with h5py.File(tmp_path / "small_label.h5", "w") as f:
        f.create_dataset("main", data=np.zeros((24, 40, 32), np.uint16))
    with pytest.raises(ValueError, match=r"DATASET.LABEL_NAME .*small_label.h5.* \(24, 40, 32\) .*\(24, 40, 40\)"):
        run(config, "DATASET.LABEL_NAME", "small_label.h5")


def test_patch_larger_than_volume(tmp_path, data_dir):
    config = write_config(tmp_path, data_dir)
    with pytest.raises(ValueError, match=r"MODEL.INPUT_SIZE \[32, 32, 32\] is larger than volume"):
        run(config, "MODEL.INPUT_SIZE", "[32, 32, 32]", "MODEL.OUTPUT_SIZE", "[32, 32, 32]")


def test_padding_makes_room_for_a_patch_deeper_than_the_volume(tmp_path, data_dir):
    # Depth 24 + 2 * 5 reflected planes holds a 32-plane patch, as PyTC pads before cropping.
    config = write_config(tmp_path, data_dir)
    run(
        config,
        "MODEL.INPUT_SIZE",
        "[32, 32, 32]",
        "MODEL.OUTPUT_SIZE",
        "[32, 32, 32]",
        "DATASET.PAD_SIZE",
        "[5, 0, 0]",
        "SOLVER.ITERATION_TOTAL",
        "1",
        "SOLVER.ITERATION_SAVE",
        "1",
        "DATASET.VAL_IMAGE_NAME",
        "None",
    )
    assert (tmp_path / "out" / "checkpoint_00001.pth.tar").exists()


def test_tiff_stacks_train_and_infer(tmp_path, data_dir):
    tifffile = pytest.importorskip("tifffile")
    for name in ("image", "label"):
        with h5py.File(data_dir / f"{name}.h5", "r") as f:
            tifffile.imwrite(tmp_path / f"{name}.tif", f["main"][:])
    config = write_config(tmp_path, data_dir)
    tiff = [
        "DATASET.IMAGE_NAME",
        "image.tif",
        "DATASET.LABEL_NAME",
        "label.tif",
        "DATASET.VAL_IMAGE_NAME",
        "image.tif",
        "DATASET.VAL_LABEL_NAME",
        "label.tif",
        "INFERENCE.IMAGE_NAME",
        "image.tif",
    ]
    run(config, *tiff, "SOLVER.ITERATION_TOTAL", "2", "SOLVER.ITERATION_VAL", "2")
    run(config, "--inference", "--checkpoint", str(tmp_path / "out" / "checkpoint_00002.pth.tar"), *tiff)
    with h5py.File(tmp_path / "out" / "test" / "result.h5", "r") as f:
        assert f["vol0"].shape == (1, 24, 40, 40)


def test_distributed_outside_torchrun_says_how_to_launch(tmp_path, data_dir, monkeypatch):
    monkeypatch.delenv("RANK", raising=False)
    with pytest.raises(ConfigError, match="--distributed needs torchrun's environment"):
        run(write_config(tmp_path, data_dir), "--distributed")


def test_two_process_gloo_ddp_training_and_inference(tmp_path, data_dir):
    config = write_config(tmp_path, data_dir)
    result = torchrun(config)
    checkpoint = tmp_path / "out" / "checkpoint_00004.pth.tar"
    state = torch.load(checkpoint, weights_only=True)
    first, second = state["rng"]["sampler"]
    assert first != second  # each rank drew its own crops
    assert result.stdout.count("[Iteration 00004/4]") == 1  # only rank 0 reports

    # Two ranks share the blocks (here the depth is split in two); rank 0 joins their files.
    result = torchrun(config, "--inference", "--checkpoint", str(checkpoint), "INFERENCE.OUTPUT_NAME", "ranks.h5")
    assert result.stdout.count("Prediction saved as") == 1
    run(config, "--inference", "--checkpoint", str(checkpoint), "INFERENCE.OUTPUT_NAME", "single.h5")
    test_dir = tmp_path / "out" / "test"
    assert sorted(os.listdir(test_dir)) == ["ranks.h5", "single.h5"]  # no partial or per-rank files left
    with h5py.File(test_dir / "ranks.h5", "r") as ranks, h5py.File(test_dir / "single.h5", "r") as single:
        assert ranks["vol0"].shape == single["vol0"].shape == (1, 24, 40, 40)
        # The same windows and blending; only the processes' thread counts differ.
        difference = np.abs(ranks["vol0"][:].astype(int) - single["vol0"][:].astype(int))
        assert difference.max() <= 1 and (difference == 0).mean() > 0.99


def _trainer(tmp_path, data_dir):
    from connectomics_mednext.engine.trainer import Trainer

    cfg = load_native_cfg(write_config(tmp_path, data_dir), BASE)
    return Trainer(cfg, torch.device("cpu"))


def test_non_finite_loss_stops_with_a_message(tmp_path, data_dir):
    from connectomics_mednext.engine.trainer import NonFiniteLoss

    trainer = _trainer(tmp_path, data_dir)
    trainer.criterion = lambda pred, target, weight: (torch.tensor(float("nan")), {})
    with pytest.raises(
        NonFiniteLoss,
        match="The loss became nan at iteration 1; training stopped without saving, and no checkpoint was written",
    ):
        trainer.train()


def test_semantic_target_trains_and_validates(tmp_path, data_dir, capsys):
    config = write_config(tmp_path, data_dir)
    with h5py.File(data_dir / "label.h5", "r") as f, h5py.File(tmp_path / "classes.h5", "w") as g:
        g.create_dataset("main", data=(f["main"][:] > 0).astype(np.uint8))
    # One semantic target of two classes, scored with cross-entropy.
    semantic = ["MODEL.OUT_PLANES", "2", "MODEL.TARGET_OPT", "['9-2']", "MODEL.WEIGHT_OPT", "[['0']]"]
    semantic += ["MODEL.LOSS_OPTION", "[['WeightedCE']]", "MODEL.OUTPUT_ACT", "[['none']]"]
    semantic += ["MODEL.LOSS_WEIGHT", "[[1.0]]"]
    with pytest.raises(ValueError, match="expects classes 0..1, but the label holds"):
        run(config, *semantic)
    run(
        config,
        "DATASET.LABEL_NAME",
        "classes.h5",
        "DATASET.VAL_LABEL_NAME",
        "classes.h5",
        *semantic,
        "SOLVER.ITERATION_TOTAL",
        "2",
        "SOLVER.ITERATION_VAL",
        "2",
    )
    assert "validation Dice" in capsys.readouterr().out


@pytest.mark.parametrize(
    "key,value,message",
    [
        (
            "DATASET.DO_2D",
            "True",
            r"DATASET.DO_2D is True, but our engine needs MODEL.INPUT_SIZE \[1, y, x\] when True",
        ),
        ("INFERENCE.OUTPUT_SIZE", "[8, 16, 16]", "INFERENCE.OUTPUT_SIZE"),
    ],
)
def test_values_our_engine_cannot_honour_are_refused(tmp_path, data_dir, key, value, message):
    with pytest.raises(ValueError, match=message):
        run(write_config(tmp_path, data_dir), key, value)


def test_mixed_precision_types(tmp_path, data_dir):
    from connectomics_mednext.engine.trainer import amp_dtype

    config = write_config(tmp_path, data_dir)
    cpu, gpu = torch.device("cpu"), torch.device("cuda")
    choices = {
        value: load_native_cfg(config, BASE, ["MODEL.AMP_DTYPE", value])
        for value in ("auto", "bfloat16", "float16", "fp8")
    }
    assert amp_dtype(choices["auto"], cpu) == torch.bfloat16 and amp_dtype(choices["auto"], gpu) == torch.float16
    assert amp_dtype(choices["bfloat16"], gpu) == torch.bfloat16 and amp_dtype(choices["float16"], gpu) == torch.float16
    with pytest.raises(ValueError, match="MODEL.AMP_DTYPE 'float16' needs a GPU"):
        amp_dtype(choices["float16"], cpu)
    with pytest.raises(ValueError, match="MODEL.AMP_DTYPE must be one of"):
        amp_dtype(choices["fp8"], cpu)


def test_bf16_autocast_trains_on_cpu(tmp_path, data_dir):
    run(
        write_config(tmp_path, data_dir),
        "MODEL.MIXED_PRECESION",
        "True",
        "SOLVER.ITERATION_TOTAL",
        "1",
        "SOLVER.ITERATION_SAVE",
        "1",
        "DATASET.VAL_IMAGE_NAME",
        "None",
    )
    state = torch.load(tmp_path / "out" / "checkpoint_00001.pth.tar", weights_only=True)
    assert all(torch.isfinite(v).all() for v in state["state_dict"].values())
