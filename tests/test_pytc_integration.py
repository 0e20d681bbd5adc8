"""Against a real PyTorch Connectomics v1.0 install; skipped with a reason when it is absent.

PyTC runs in subprocesses (it seeds and configures global state). On a CPU-only machine the
import stand-ins in tools/pytc_standins replace torchvision and em_util.
"""

import os
import subprocess
import sys
import textwrap

import h5py
import numpy as np
import pytest
from conftest import binary_model_yaml

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
STANDINS = os.path.join(ROOT, "tools", "pytc_standins")


@pytest.fixture(scope="module")
def pytc_env():
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join(p for p in (ROOT, env.get("PYTHONPATH")) if p)
    probe = "from connectomics_mednext.pytc import import_pytc; import_pytc()"
    for extra in ([], [STANDINS]):
        trial = dict(env, PYTHONPATH=os.pathsep.join(extra + [env["PYTHONPATH"]]))
        result = subprocess.run([sys.executable, "-c", probe], env=trial, capture_output=True, text=True)
        if result.returncode == 0:
            return trial
    reason = (result.stderr.strip().splitlines() or ["unknown error"])[-1]
    pytest.skip(f"PyTorch Connectomics v1.0 is not importable: {reason}")


def run_python(code: str, env: dict) -> str:
    result = subprocess.run(
        [sys.executable, "-c", textwrap.dedent(code)], env=env, cwd=ROOT, capture_output=True, text=True, timeout=600
    )
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    return result.stdout


def test_register_plugs_mednext_into_pytc(pytc_env):
    out = run_python(
        """
        import glob, torch
        from connectomics.config import get_cfg_defaults
        stock = get_cfg_defaults()
        from connectomics_mednext.config import mednext_key_defaults
        def has(cfg, key):
            for name in key.split("."):
                if name not in cfg:
                    return False
                cfg = cfg[name]
            return True
        assert not any(has(stock, key) for key, _ in mednext_key_defaults()), "a key collides with PyTC's"
        from connectomics_mednext.pytc import register
        register(); register()
        import connectomics.engine.trainer as trainer
        from connectomics.utils.monitor import Monitor
        from connectomics_mednext import MedNeXt
        from connectomics_mednext.losses import DeepSupervisionLoss
        cfg = get_cfg_defaults()
        assert cfg.MODEL.KERNEL_SIZES == stock.MODEL.KERNEL_SIZES and cfg.MODEL.MEDNEXT_SIZE == "S"
        for path in sorted(glob.glob("configs/*.yaml")):
            c = get_cfg_defaults(); c.merge_from_file("configs/MedNeXt-Base.yaml"); c.merge_from_file(path)
        c = get_cfg_defaults(); c.merge_from_file("configs/MedNeXt-Base.yaml")
        c.merge_from_file("configs/Lucchi-Mitochondria-MedNeXt.yaml")
        sizes = ["MODEL.INPUT_SIZE", "[32, 32, 32]", "MODEL.OUTPUT_SIZE", "[32, 32, 32]"]
        c.merge_from_list(["SYSTEM.NUM_GPUS", "1", *sizes])
        model = trainer.build_model(c, torch.device("cpu"))
        assert isinstance(model.module, MedNeXt) and model.module.do_ds
        optimizer = trainer.build_optimizer(c, model)
        assert optimizer.param_groups[0]["eps"] == 1e-4 and type(optimizer).__name__ == "AdamWWithGradientClip"
        assert type(trainer.build_lr_scheduler(c, optimizer)).__name__ == "ConstantLR"
        c.merge_from_list(["SOLVER.LR_SCHEDULER_NAME", "Poly"])
        assert type(trainer.build_lr_scheduler(c, optimizer)).__name__ == "PolyLR"
        c.merge_from_list(["SOLVER.LR_SCHEDULER_NAME", "MultiStepLR"])
        assert type(trainer.build_lr_scheduler(c, optimizer)).__name__ == "MultiStepLR"
        assert isinstance(trainer.Criterion.build_from_cfg(c, torch.device("cpu")), DeepSupervisionLoss)
        c.merge_from_list(["MODEL.ARCHITECTURE", "unet_3d"])
        assert not isinstance(trainer.Criterion.build_from_cfg(c, torch.device("cpu")), DeepSupervisionLoss)
        print("REGISTERED")
    """,
        pytc_env,
    )
    assert "REGISTERED" in out


def test_mednext_keys_set_for_another_architecture_are_warned_about(pytc_env):
    out = run_python(
        """
        import warnings
        from connectomics_mednext.pytc import register, warn_unused_mednext_keys
        register()
        from connectomics.config import get_cfg_defaults
        cfg = get_cfg_defaults()
        cfg.merge_from_list(["MODEL.ARCHITECTURE", "unet_3d", "MODEL.DEEP_SUPERVISION", "True"])
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            warn_unused_mednext_keys(cfg)
        for w in caught:
            print(w.message)
    """,
        pytc_env,
    )
    assert out.splitlines() == [
        "MODEL.DEEP_SUPERVISION is set but does nothing in PyTorch Connectomics here: "
        "MODEL.ARCHITECTURE is 'unet_3d', not 'mednext'."
    ]


def test_a_typo_in_a_pytc_run_gets_one_sentence(pytc_env, tmp_path):
    config = tmp_path / "typo.yaml"
    config.write_text("MODEL:\n  ARCHITECTURE: mednext\n  MEDNEXT_SIZ: S\n")
    result = subprocess.run(
        [sys.executable, os.path.join(ROOT, "scripts", "main.py"), "--engine", "pytc", "--config-file", str(config)],
        env=pytc_env,
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert result.returncode == 2 and "Traceback" not in result.stderr
    assert result.stderr.strip() == (
        f"error: {config}: MODEL.MEDNEXT_SIZ is not a config key; did you mean 'MODEL.MEDNEXT_SIZE'?"
    )


TINY_CONFIG = (
    """
SYSTEM:
  NUM_GPUS: 1
  NUM_CPUS: 0
"""
    + binary_model_yaml((32, 32, 32), "0", 4)
    + """DATASET:
  INPUT_PATH: {data}/
  IMAGE_NAME: img.h5
  LABEL_NAME: lab.h5
  VAL_IMAGE_NAME: val_img.h5
  VAL_LABEL_NAME: val_lab.h5
  OUTPUT_PATH: {out}/
  PAD_SIZE: [0, 0, 0]
SOLVER:
  ITERATION_TOTAL: 4
  ITERATION_SAVE: 2
  ITERATION_VAL: 2
  SAMPLES_PER_BATCH: 1
MONITOR:
  ITERATION_NUM: [1, 2]
INFERENCE:
  INPUT_SIZE: [32, 32, 32]
  OUTPUT_SIZE: [32, 32, 32]
  OUTPUT_ACT: ["sigmoid"]
  IMAGE_NAME: img.h5
  OUTPUT_PATH: {out}/test
  OUTPUT_NAME: result.h5
  PAD_SIZE: [0, 0, 0]
  STRIDE: [16, 16, 16]
  SAMPLES_PER_BATCH: 2
"""
)


def main_py(args, env) -> str:
    result = subprocess.run(
        [
            sys.executable,
            os.path.join(ROOT, "scripts", "main.py"),
            "--config-base",
            os.path.join(ROOT, "configs", "MedNeXt-Base.yaml"),
            *args,
        ],
        env=env,
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    return result.stdout


def test_train_with_deep_supervision_then_resume_then_infer(pytc_env, tmp_path):
    rng = np.random.default_rng(0)
    image = (rng.random((40, 96, 96)) * 255).astype(np.uint8)  # PyTC's augmentor needs 34x90x90 samples
    label = (image > 128).astype(np.uint8)
    for name, array in [
        ("img.h5", image),
        ("lab.h5", label),
        ("val_img.h5", image[:32, :48, :48]),
        ("val_lab.h5", label[:32, :48, :48]),
    ]:
        with h5py.File(tmp_path / name, "w") as f:
            f.create_dataset("main", data=array)
    out = tmp_path / "out"
    config = tmp_path / "tiny.yaml"
    config.write_text(TINY_CONFIG.format(data=tmp_path, out=out))

    trained = main_py(["--config-file", str(config)], pytc_env)
    assert trained.splitlines()[0].startswith("engine: PyTorch Connectomics v1.0 API, package version ")
    assert {"checkpoint_00002.pth.tar", "checkpoint_00004.pth.tar"} <= set(os.listdir(out))
    tags = run_python(
        f"""
        import glob
        from tensorboard.backend.event_processing.event_accumulator import EventAccumulator
        events = EventAccumulator(glob.glob("{out}/log*")[0]); events.Reload()
        print(sorted(events.Tags()["scalars"])); print(sorted(events.Tags()["images"]))
    """,
        pytc_env,
    )
    for tag in (
        "deep_supervision_scale0",
        "deep_supervision_scale4",
        "0_DiceLoss_0_1_x16x16x16",
        "Validation_Loss",
        "Consecutive_0_0",
        "Consecutive_0_0_Val",
    ):
        assert tag in tags

    main_py(
        [
            "--config-file",
            str(config),
            "--checkpoint",
            str(out / "checkpoint_00002.pth.tar"),
            "SOLVER.ITERATION_TOTAL",
            "6",
        ],
        pytc_env,
    )
    resumed = run_python(
        f"""
        import torch
        state = torch.load("{out}/checkpoint_00006.pth.tar", weights_only=True)
        print(state["iteration"], state["lr_scheduler"]["_last_lr"])
    """,
        pytc_env,
    )
    assert resumed.split()[0] == "6"

    main_py(
        ["--config-file", str(config), "--inference", "--checkpoint", str(out / "checkpoint_00006.pth.tar")], pytc_env
    )
    with h5py.File(out / "test" / "result.h5", "r") as f:
        assert list(f) == ["vol0"]
        assert f["vol0"].shape == (1, 40, 96, 96) and f["vol0"].dtype == np.uint8


def test_pytc_trains_and_infers_a_2d_mednext_with_do_2d(pytc_env, tmp_path):
    rng = np.random.default_rng(0)
    image = (rng.random((6, 96, 96)) * 255).astype(np.uint8)  # PyTC's 2D augmentor needs 1x90x90 samples
    label = (image > 128).astype(np.uint8)
    for name, array in [
        ("img.h5", image),
        ("lab.h5", label),
        ("val_img.h5", image[:, :48, :48]),
        ("val_lab.h5", label[:, :48, :48]),
    ]:
        with h5py.File(tmp_path / name, "w") as f:
            f.create_dataset("main", data=array)
    out = tmp_path / "out"
    config = tmp_path / "tiny2d.yaml"
    config.write_text(TINY_CONFIG.format(data=tmp_path, out=out))
    two_d = [
        "DATASET.DO_2D",
        "True",
        "MODEL.INPUT_SIZE",
        "[1, 32, 32]",
        "MODEL.OUTPUT_SIZE",
        "[1, 32, 32]",
        "INFERENCE.INPUT_SIZE",
        "[1, 32, 32]",
        "INFERENCE.OUTPUT_SIZE",
        "[1, 32, 32]",
        "INFERENCE.STRIDE",
        "[1, 16, 16]",
        "INFERENCE.AUG_NUM",
        "None",
    ]
    trained = main_py(["--config-file", str(config), *two_d], pytc_env)
    assert trained.splitlines()[0].startswith("engine: PyTorch Connectomics v1.0 API")
    state = run_python(
        f"""
        import torch
        state = torch.load("{out}/checkpoint_00004.pth.tar", weights_only=True)
        print(state["state_dict"]["stem.weight"].dim())
    """,
        pytc_env,
    )
    assert state.split()[-1] == "4"  # PyTC built and trained our 2D MedNeXt
    main_py(
        ["--config-file", str(config), "--inference", "--checkpoint", str(out / "checkpoint_00004.pth.tar"), *two_d],
        pytc_env,
    )
    with h5py.File(out / "test" / "result.h5", "r") as f:
        assert f["vol0"].shape == (1, 6, 96, 96) and f["vol0"][:].std() > 0
