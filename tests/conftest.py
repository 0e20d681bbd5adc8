"""Shared fixtures: where the shared data lives, a tiny MedNeXt configuration and a tiny trained run."""

import os
import socket
import subprocess
import sys
from pathlib import Path

import h5py
import numpy as np
import pytest
import torch

SHARED = Path(__file__).resolve().parents[1].parent / "shared"
FIXTURES = SHARED / "fixtures" / "mednext_reference"
DATA = SHARED / "data"

TINY = dict(
    in_channels=1,
    n_channels=4,
    n_classes=2,
    exp_r=2,
    kernel_size=3,
    do_res=True,
    do_res_up_down=True,
    block_counts=[1] * 9,
)


def binary_model_yaml(size, target: str = "0", channels: int = 4) -> str:
    """The MODEL section of a tiny one-target config (BCE with logits + Dice), as YAML text."""
    return f"""
MODEL:
  INPUT_SIZE: {list(size)}
  OUTPUT_SIZE: {list(size)}
  OUT_PLANES: 1
  TARGET_OPT: ["{target}"]
  WEIGHT_OPT: [["1", "0"]]
  LOSS_OPTION: [["WeightedBCEWithLogitsLoss", "DiceLoss"]]
  OUTPUT_ACT: [["none", "sigmoid"]]
  LOSS_WEIGHT: [[1.0, 1.0]]
  MEDNEXT:
    N_CHANNELS: {channels}
    BLOCK_COUNTS: [1, 1, 1, 1, 1, 1, 1, 1, 1]
"""


ROOT = Path(__file__).resolve().parents[1]
BASE = str(ROOT / "configs" / "MedNeXt-Base.yaml")
TINY_SHAPE = (24, 40, 40)

TINY_RUN_CONFIG = """{model}DATASET:
  INPUT_PATH: {data}/
  IMAGE_NAME: image.h5
  LABEL_NAME: label.h5
  OUTPUT_PATH: {data}/trained/
  PAD_SIZE: [0, 0, 0]
SOLVER:
  ITERATION_TOTAL: 2
  ITERATION_SAVE: 1
  SAMPLES_PER_BATCH: 1
MONITOR:
  ITERATION_NUM: [1, 100]
INFERENCE:
  OUTPUT_ACT: ["sigmoid"]
  IMAGE_NAME: image.h5
  OUTPUT_PATH: {data}/trained/test
  STRIDE: [8, 16, 16]
"""


@pytest.fixture(scope="session")
def tiny_run(tmp_path_factory) -> Path:
    """A folder with image.h5 and label.h5 (synthetic, 24 x 40 x 40), ``cfg.yaml`` (use it with
    ``--config-base`` BASE) and ``trained/checkpoint_0000{1,2}.pth.tar`` of that config."""
    from connectomics_mednext import cli
    from connectomics_mednext.data.synthetic import make_em_volume

    path = tmp_path_factory.mktemp("tiny_run")
    volume = make_em_volume(TINY_SHAPE, cells=8, mitochondria=4, seed=3)
    for name in ("image", "label"):
        with h5py.File(path / f"{name}.h5", "w") as f:
            f.create_dataset("main", data=volume[name])
    (path / "cfg.yaml").write_text(TINY_RUN_CONFIG.format(model=binary_model_yaml((16, 32, 32), "0", 4), data=path))
    cli.run_command(["--engine", "native", "--config-base", BASE, "--config-file", str(path / "cfg.yaml")])
    return path


def tiny_argv(run: Path, *flags: str, out: Path = None, overrides=()) -> list:
    """A command line for the tiny run's config: flags, then (optionally) both output folders moved
    under ``out``, then KEY VALUE overrides."""
    argv = ["--engine", "native", "--config-base", BASE, "--config-file", str(run / "cfg.yaml"), *flags]
    if out is not None:
        argv += ["DATASET.OUTPUT_PATH", str(out), "INFERENCE.OUTPUT_PATH", os.path.join(str(out), "test")]
    return argv + list(overrides)


def reference_fixture(name: str) -> dict:
    """Load a golden reference fixture, skipping the test when the folder is absent."""
    path = FIXTURES / name
    if not path.is_file():
        pytest.skip(f"reference fixture {path} is not present")
    return torch.load(path, weights_only=True)


@pytest.fixture(autouse=True)
def _seed():
    torch.manual_seed(0)


class FailsAfter(torch.nn.Module):
    """Wraps a model and raises after ``calls`` forward passes, like a killed job."""

    def __init__(self, model, calls):
        super().__init__()
        self.model, self.calls = model, calls

    def forward(self, x):
        self.calls -= 1
        if self.calls < 0:
            raise KeyboardInterrupt
        return self.model(x)


def predict_file(
    model,
    volumes,
    path,
    window,
    stride,
    channels,
    activation,
    device=None,
    identity=None,
    rank=0,
    world_size=1,
    **settings,
) -> str:
    """A :class:`Predictor` with these settings, run on ``volumes`` into the HDF5 file ``path``."""
    from connectomics_mednext.engine.predictor import Predictor, SlidingWindow

    predictor = Predictor(
        model,
        activation,
        channels,
        SlidingWindow(window, stride, **settings),
        device or torch.device("cpu"),
        identity,
        rank,
        world_size,
    )
    return predictor.predict_to_file(volumes, path)


def torchrun(config: str, *extra: str, base: str = None) -> subprocess.CompletedProcess:
    """``scripts/main.py --distributed`` on two gloo ranks of one thread each; asserts it succeeded."""
    env = dict(os.environ, OMP_NUM_THREADS="1", PYTHONPATH=str(ROOT))
    with socket.socket() as probe:  # a free port for the rendezvous
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    result = subprocess.run(
        [
            sys.executable,
            "-m",
            "torch.distributed.run",
            "--nproc_per_node=2",
            f"--master_port={port}",
            os.path.join(ROOT, "scripts", "main.py"),
            "--engine",
            "native",
            "--distributed",
            "--config-base",
            base or BASE,
            "--config-file",
            config,
            *extra,
        ],
        env=env,
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert result.returncode == 0, result.stdout[-2000:] + result.stderr[-2000:]
    return result


def run_one_thread(argv: list) -> subprocess.CompletedProcess:
    """``scripts/main.py argv`` in one process of one thread, the arithmetic of each torchrun rank above;
    asserts it succeeded."""
    result = subprocess.run(
        [sys.executable, os.path.join(ROOT, "scripts", "main.py"), *argv],
        env=dict(os.environ, OMP_NUM_THREADS="1", PYTHONPATH=str(ROOT)),
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert result.returncode == 0, result.stderr[-2000:]
    return result


def same_partition(a: np.ndarray, b: np.ndarray) -> bool:
    """Whether two labelings group the voxels identically (ids may differ), background included."""
    pairs = np.unique(np.stack([a.ravel(), b.ravel()], axis=1), axis=0)
    return len(pairs) == len(np.unique(a)) == len(np.unique(b))


def write_prediction(path, channels: np.ndarray) -> str:
    """Probabilities (C, Z, Y, X) in 0..1 as a prediction file in PyTC's layout (``vol0``, uint8 x 255)."""
    with h5py.File(path, "w") as f:
        f.create_dataset("vol0", data=np.clip(np.rint(channels * 255), 0, 255).astype(np.uint8))
    return str(path)


def daisy_workers_of(pid: int) -> list:
    """The pids of daisy's worker processes that ``pid`` started (read from /proc)."""
    found = []
    for entry in filter(str.isdigit, os.listdir("/proc")):
        try:
            with open(f"/proc/{entry}/cmdline", "rb") as handle:
                command = handle.read().decode(errors="replace")
            with open(f"/proc/{entry}/stat") as handle:
                parent = int(handle.read().rsplit(")", 1)[1].split()[1])
        except (OSError, ValueError):
            continue
        if "daisy._subprocess_worker" in command and parent == pid:
            found.append(int(entry))
    return found
