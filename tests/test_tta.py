"""Test-time flips: exact for a flip-equivariant model, and combined per AUG_MODE."""

import pytest
import torch

from connectomics_mednext.engine.tta import FlipEnsemble, with_test_time_augmentation


class Scale(torch.nn.Module):
    """A pointwise model: equivariant to every flip and transpose."""

    def forward(self, x):
        return 2 * x


class ReadsFirstX(torch.nn.Module):
    """Not equivariant: every voxel gets the value at x = 0 of its row."""

    def forward(self, x):
        return x[..., :1].expand_as(x).clone()


@pytest.mark.parametrize("aug_num", [4, 8, 16])
def test_equivariant_model_is_unchanged(aug_num):
    x = torch.randn(2, 1, 4, 6, 6)
    ensemble = FlipEnsemble(Scale(), torch.sigmoid, aug_num)
    assert len(ensemble.variants) == aug_num
    assert torch.allclose(ensemble(x), torch.sigmoid(2 * x), atol=1e-6)


def test_modes_combine_the_variants():
    x = torch.arange(4.0).reshape(1, 1, 1, 1, 4)
    identity = lambda t: t  # noqa: E731
    # Flipping x makes the model read x = 3 instead of x = 0: values 0 and 3 only.
    assert FlipEnsemble(ReadsFirstX(), identity, 4, "max")(x).unique().tolist() == [3.0]
    assert FlipEnsemble(ReadsFirstX(), identity, 4, "min")(x).unique().tolist() == [0.0]
    assert FlipEnsemble(ReadsFirstX(), identity, 4, "mean")(x).unique().tolist() == [1.5]


def test_no_augmentation_returns_the_model_itself():
    model = Scale()
    assert with_test_time_augmentation(model, torch.sigmoid, None, "mean")[0] is model
    with pytest.raises(ValueError, match="INFERENCE.AUG_NUM"):
        FlipEnsemble(model, torch.sigmoid, 6)
    with pytest.raises(ValueError, match="INFERENCE.AUG_MODE"):
        FlipEnsemble(model, torch.sigmoid, 4, "median")
