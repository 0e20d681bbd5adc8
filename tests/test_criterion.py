"""Our per-target loss combination (PyTC's names and layout)."""

import pytest
import torch

from connectomics_mednext.config import get_native_defaults
from connectomics_mednext.losses.criterion import LOSSES, TargetCriterion


def test_losses_combine_per_target_with_weights():
    criterion = TargetCriterion(
        ["0", "9-3"],
        [["WeightedBCEWithLogitsLoss", "DiceLoss"], ["WeightedCE"]],
        [["none", "sigmoid"], ["none"]],
        [[1.0, 2.0], [0.5]],
    )
    pred = torch.randn(2, 4, 4, 4, 4)
    binary = torch.rand(2, 1, 4, 4, 4).round()
    classes = torch.randint(0, 3, (2, 4, 4, 4))
    placeholder = torch.zeros(2, 1, dtype=torch.long)
    loss, vis = criterion(pred, [binary, classes], [[placeholder, placeholder], [placeholder]])
    expected = (
        LOSSES["WeightedBCEWithLogitsLoss"](pred[:, :1], binary)
        + 2.0 * LOSSES["DiceLoss"](torch.sigmoid(pred[:, :1]), binary)
        + 0.5 * LOSSES["WeightedCE"](pred[:, 1:], classes)
    )
    assert loss.item() == pytest.approx(expected.item(), rel=1e-6)
    assert list(vis) == ["0_WeightedBCEWithLogitsLoss_0_0", "0_DiceLoss_0_1", "9-3_WeightedCE_1_0"]


def test_weight_masks_scale_the_loss():
    criterion = TargetCriterion(["0"], [["WeightedMSE"]], [["none"]], [[1.0]])
    pred, target = torch.ones(1, 1, 2, 2, 2), torch.zeros(1, 1, 2, 2, 2)
    mask = torch.zeros(1, 1, 2, 2, 2)
    mask[..., 0] = 1
    assert criterion(pred, [target], [[mask]])[0].item() == pytest.approx(0.5)


def test_config_errors_name_the_key():
    cfg = get_native_defaults()
    cfg.merge_from_list(["MODEL.TARGET_OPT", "['2']", "MODEL.OUT_PLANES", "1"])
    with pytest.raises(ValueError, match="MODEL.OUT_PLANES is 1 but .* needs 3 channels"):
        TargetCriterion.from_cfg(cfg)
    with pytest.raises(ValueError, match="MODEL.LOSS_OPTION must be one of .*, got 'Focal'"):
        TargetCriterion(["0"], [["Focal"]], [["none"]], [[1.0]])
    with pytest.raises(ValueError, match="MODEL.LOSS_WEIGHT must hold one list per target"):
        TargetCriterion(["0"], [["DiceLoss"]], [["sigmoid"]], [[1.0, 2.0]])
