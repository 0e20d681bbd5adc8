"""2D MedNeXt (DATASET.DO_2D): trained on z planes, predicted plane by plane into the (C, Z, Y, X) output."""

import h5py
import numpy as np
import pytest
import torch
from conftest import FailsAfter, predict_file, run_one_thread, tiny_argv, torchrun

from connectomics_mednext import MedNeXt, cli
from connectomics_mednext.engine.inference import make_activation
from connectomics_mednext.engine.predictor import PlaneByPlane
from connectomics_mednext.errors import ConfigError

TWO_D = [
    "DATASET.DO_2D",
    "True",
    "MODEL.INPUT_SIZE",
    "[1, 32, 32]",
    "MODEL.OUTPUT_SIZE",
    "[1, 32, 32]",
    "MODEL.DEEP_SUPERVISION",
    "True",
    "INFERENCE.STRIDE",
    "[1, 16, 16]",
]


@pytest.fixture(scope="module")
def trained_2d(tiny_run, tmp_path_factory):
    """A 2D MedNeXt trained (with validation) for 4 iterations on the tiny run's volumes."""
    out = tmp_path_factory.mktemp("trained_2d")
    cli.run_command(
        tiny_argv(
            tiny_run,
            out=out,
            overrides=TWO_D
            + [
                "DATASET.VAL_IMAGE_NAME",
                "image.h5",
                "DATASET.VAL_LABEL_NAME",
                "label.h5",
                "SOLVER.ITERATION_VAL",
                "2",
                "SOLVER.ITERATION_TOTAL",
                "4",
                "SOLVER.ITERATION_SAVE",
                "4",
            ],
        )
    )
    return out


def test_a_2d_mednext_trains_with_deep_supervision_and_validates(trained_2d):
    state = torch.load(trained_2d / "checkpoint_00004.pth.tar", weights_only=True)["state_dict"]
    assert state["stem.weight"].dim() == 4  # (out, in, 1, 1): a 2D network
    assert state["enc_block_0.0.conv1.weight"].shape[-2:] == (3, 3) and "out_4.conv_out.weight" in state
    assert "DO_2D: true" in torch.load(trained_2d / "checkpoint_00004.pth.tar", weights_only=True)["config"]


def test_a_2d_mednext_predicts_plane_by_plane_with_flips(tiny_run, trained_2d):
    checkpoint = str(trained_2d / "checkpoint_00004.pth.tar")
    cli.run_command(
        tiny_argv(
            tiny_run,
            "--inference",
            "--checkpoint",
            checkpoint,
            out=trained_2d,
            overrides=TWO_D + ["INFERENCE.AUG_NUM", "4"],
        )
    )
    with h5py.File(trained_2d / "test" / "result.h5", "r") as f:
        prediction = f["vol0"][:]
    assert prediction.shape == (1, 24, 40, 40)
    assert all(prediction[0, z].std() > 0 for z in range(24)) and not np.array_equal(prediction[0, 5], prediction[0, 6])


def test_2d_inference_resumes_to_the_same_bytes(tmp_path):
    torch.manual_seed(0)
    network = PlaneByPlane(MedNeXt(1, 4, 2, exp_r=2, kernel_size=3, block_counts=[1] * 9, dim="2d").eval())
    image = (np.random.default_rng(0).random((12, 32, 32)) * 255).astype(np.uint8)
    args = dict(
        window=(1, 32, 32),
        stride=(1, 16, 16),
        channels=2,
        activation=make_activation(["sigmoid"], [2]),
        block_size=(4, 0, 0),
    )
    reference = predict_file(network, [image], str(tmp_path / "r.h5"), **args)
    target = str(tmp_path / "p.h5")
    with pytest.raises(KeyboardInterrupt):
        predict_file(FailsAfter(network, 6), [image], target, **args)  # 12 windows in all
    predict_file(network, [image], target, **args)
    with h5py.File(reference, "r") as a, h5py.File(target, "r") as b:
        assert np.array_equal(a["vol0"][:], b["vol0"][:])


def test_two_ranks_predict_a_2d_mednext_as_one_process(tiny_run, trained_2d, tmp_path):
    checkpoint = str(trained_2d / "checkpoint_00004.pth.tar")
    overrides = TWO_D + ["INFERENCE.OUTPUT_PATH", str(tmp_path), "INFERENCE.SAMPLES_PER_BATCH", "1"]
    torchrun(
        str(tiny_run / "cfg.yaml"),
        "--inference",
        "--checkpoint",
        checkpoint,
        *overrides,
        "INFERENCE.OUTPUT_NAME",
        "ranks.h5",
    )
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
    with h5py.File(tmp_path / "ranks.h5", "r") as a, h5py.File(tmp_path / "single.h5", "r") as b:
        assert np.array_equal(a["vol0"][:], b["vol0"][:])


@pytest.mark.parametrize(
    "overrides,message",
    [
        (["DATASET.DO_2D", "True"], r"DATASET\.DO_2D is True, but our engine needs MODEL\.INPUT_SIZE \[1, y, x\]"),
        (TWO_D + ["MODEL.TARGET_OPT", '["2"]', "MODEL.OUT_PLANES", "3"], r"no affinity target \(TARGET_OPT '2'\)"),
    ],
)
def test_2d_settings_we_cannot_honour_are_refused(tiny_run, tmp_path, overrides, message):
    with pytest.raises(ConfigError, match=message):
        cli.run_command(tiny_argv(tiny_run, out=tmp_path, overrides=overrides))
