"""Shared fixtures: where the shared data lives and a tiny MedNeXt configuration."""
from pathlib import Path

import pytest
import torch

SHARED = Path(__file__).resolve().parents[1].parent / "shared"
FIXTURES = SHARED / "fixtures" / "mednext_reference"
DATA = SHARED / "data"

TINY = dict(in_channels=1, n_channels=4, n_classes=2, exp_r=2, kernel_size=3, do_res=True,
            do_res_up_down=True, block_counts=[1] * 9)


def reference_fixture(name: str) -> dict:
    """Load a golden reference fixture, skipping the test when the folder is absent."""
    path = FIXTURES / name
    if not path.is_file():
        pytest.skip(f"reference fixture {path} is not present")
    return torch.load(path, weights_only=True)


@pytest.fixture(autouse=True)
def _seed():
    torch.manual_seed(0)
