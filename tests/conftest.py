"""Shared fixtures: where the shared data lives and a tiny MedNeXt configuration."""
from pathlib import Path

import pytest
import torch

SHARED = Path(__file__).resolve().parents[1].parent / "shared"
FIXTURES = SHARED / "fixtures" / "mednext_reference"
DATA = SHARED / "data"

TINY = dict(in_channels=1, n_channels=4, n_classes=2, exp_r=2, kernel_size=3, do_res=True,
            do_res_up_down=True, block_counts=[1] * 9)


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
