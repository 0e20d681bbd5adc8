"""The deep-supervision loss wrapper against small hand-computed examples."""

from collections import OrderedDict

import pytest
import torch

from connectomics_mednext.losses import DeepSupervisionLoss, resample_modes_for_targets


def squared_error(pred, target, weight):
    """A PyTC-style criterion: one target, one loss, an optional weight mask."""
    mask = weight[0][0]
    error = (pred - target[0].float()) ** 2
    if mask.dim() == pred.dim():
        error = error * mask
    loss = error.mean()
    return loss, {"0_MSE_0_0": loss}


def outputs(*shapes):
    return OrderedDict((f"out_{i}", torch.zeros(shape)) for i, shape in enumerate(shapes))


PLACEHOLDER = torch.zeros(1, 1, dtype=torch.long)


def test_weights_and_centre_sampling_match_a_hand_computation():
    target = torch.arange(64.0).reshape(1, 1, 4, 4, 4)
    loss_fn = DeepSupervisionLoss(squared_error, [0.75, 0.25])
    loss, vis = loss_fn(outputs((1, 1, 4, 4, 4), (1, 1, 2, 2, 2)), [target], [[PLACEHOLDER]])
    full = sum(i * i for i in range(64)) / 64  # 1333.5
    # The 1/2 scale sees voxels (1, 3) on each axis: 16z + 4y + x for z, y, x in {1, 3}.
    half = sum((16 * z + 4 * y + x) ** 2 for z in (1, 3) for y in (1, 3) for x in (1, 3)) / 8  # 2037
    assert loss.item() == pytest.approx(0.75 * full + 0.25 * half)
    assert vis["0_MSE_0_0"].item() == pytest.approx(full)
    assert vis["0_MSE_0_0_x2x2x2"].item() == pytest.approx(half)
    assert vis["deep_supervision_scale1"].item() == pytest.approx(half)


def test_weight_masks_are_centre_sampled_and_placeholders_pass_through():
    seen = []

    def recording(pred, target, weight):
        seen.append(weight[0][0])
        return pred.sum() * 0, {}

    mask = torch.arange(64.0).reshape(1, 1, 4, 4, 4)
    loss_fn = DeepSupervisionLoss(recording, [0.5, 0.5])
    loss_fn(outputs((1, 1, 4, 4, 4), (1, 1, 2, 2, 2)), [torch.zeros(1, 1, 4, 4, 4)], [[mask]])
    assert torch.equal(seen[1], mask[..., 1::2, 1::2, 1::2])
    seen.clear()
    loss_fn(outputs((1, 1, 4, 4, 4), (1, 1, 2, 2, 2)), [torch.zeros(1, 1, 4, 4, 4)], [[PLACEHOLDER]])
    assert seen[1] is PLACEHOLDER


def test_semantic_targets_without_channel_axis_keep_their_dtype():
    seen = []

    def recording(pred, target, weight):
        seen.append(target[0])
        return pred.sum() * 0, {}

    labels = torch.randint(0, 3, (2, 8, 8, 8))
    DeepSupervisionLoss(recording, [0.5, 0.5])(outputs((2, 3, 8, 8, 8), (2, 3, 4, 4, 4)), [labels], [[PLACEHOLDER]])
    assert seen[1].dtype == torch.int64 and seen[1].shape == (2, 4, 4, 4)
    assert torch.equal(seen[1], labels[:, 1::2, 1::2, 1::2])


def test_anisotropic_factors_are_per_axis():
    seen = []

    def recording(pred, target, weight):
        seen.append(target[0])
        return pred.sum() * 0, {}

    target = torch.rand(1, 3, 4, 8, 8)
    DeepSupervisionLoss(recording, [1.0, 1.0])(outputs((1, 3, 4, 8, 8), (1, 3, 4, 4, 4)), [target], [[PLACEHOLDER]])
    assert torch.equal(seen[1], target[:, :, :, 1::2, 1::2])


def test_continuous_targets_are_block_averaged():
    seen = []

    def recording(pred, target, weight):
        seen.append(target[0])
        return pred.sum() * 0, {}

    target = torch.arange(16.0).reshape(1, 1, 1, 4, 4)
    DeepSupervisionLoss(recording, [1.0, 1.0], ["area"])(
        outputs((1, 1, 1, 4, 4), (1, 1, 1, 2, 2)), [target], [[PLACEHOLDER]]
    )
    assert seen[1].flatten().tolist() == [2.5, 4.5, 10.5, 12.5]


def test_resample_modes_follow_pytc_target_codes():
    assert resample_modes_for_targets(["0", "2", "4-1-1", "9-3", "5-2d-0-0-5.0", "5-3d-1-1-2.0", "6"]) == [
        "nearest",
        "nearest",
        "nearest",
        "nearest",
        "area",
        "nearest",
        "area",
    ]


def test_a_tensor_prediction_goes_straight_to_the_criterion():
    loss_fn = DeepSupervisionLoss(squared_error, [0.5, 0.5])
    loss, vis = loss_fn(torch.ones(1, 1, 2, 2, 2), [torch.zeros(1, 1, 2, 2, 2)], [[PLACEHOLDER]])
    assert loss.item() == 1.0 and list(vis) == ["0_MSE_0_0"]


def test_mismatched_outputs_and_weights_are_reported():
    with pytest.raises(ValueError, match="3 deep-supervision outputs but 2 scale weights"):
        DeepSupervisionLoss(squared_error, [0.5, 0.5])(
            outputs((1, 1, 4, 4, 4), (1, 1, 2, 2, 2), (1, 1, 1, 1, 1)), [torch.zeros(1, 1, 4, 4, 4)], [[PLACEHOLDER]]
        )
    with pytest.raises(ValueError, match="target_modes must be among"):
        DeepSupervisionLoss(squared_error, [1.0], ["bicubic"])
