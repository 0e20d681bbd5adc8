"""PyTC's per-target loss combination, written for our engine.

``MODEL.TARGET_OPT`` lists targets; the network's channels are split among them in order.
For target ``i``, loss ``j`` is ``LOSS_WEIGHT[i][j] * LOSS_OPTION[i][j](OUTPUT_ACT[i][j](pred_i),
target_i, weight_ij)``. The call signature and return value ``(loss, losses_vis)`` are those of
PyTC's ``Criterion``, so :class:`DeepSupervisionLoss` wraps either.
"""

from typing import Callable, Dict, List, Optional, Sequence, Tuple

import torch
import torch.nn.functional as F

from ..data.targets import target_channels
from ..errors import ConfigError, look_up_option

LossFn = Callable[[torch.Tensor, torch.Tensor, Optional[torch.Tensor]], torch.Tensor]


def _weighted_mean(values: torch.Tensor, weight: Optional[torch.Tensor]) -> torch.Tensor:
    return values.mean() if weight is None else (values * weight).mean()


def weighted_bce_with_logits(pred, target, weight=None):
    """Binary cross-entropy on logits, optionally weighted per voxel."""
    return _weighted_mean(F.binary_cross_entropy_with_logits(pred, target, reduction="none"), weight)


def weighted_bce(pred, target, weight=None):
    """Binary cross-entropy on probabilities (PyTC's 'WeightedBCE'), optionally weighted per voxel."""
    probability = pred.clamp(1e-6, 1 - 1e-6)
    return _weighted_mean(F.binary_cross_entropy(probability, target, reduction="none"), weight)


def dice_loss(pred, target, weight=None, smooth: float = 1.0):
    """1 - soft Dice over the whole batch, on probabilities."""
    if weight is not None:
        pred, target = pred * weight, target * weight
    intersection = (pred * target).sum()
    return 1.0 - (2.0 * intersection + smooth) / (pred.sum() + target.sum() + smooth)


def weighted_ce(pred, target, weight=None):
    """Cross-entropy on logits (B, N, ...) against int64 classes (B, ...)."""
    values = F.cross_entropy(pred, target, reduction="none")
    return _weighted_mean(values, None if weight is None else weight.squeeze(1))


def weighted_mse(pred, target, weight=None):
    """Mean squared error, optionally weighted per voxel."""
    return _weighted_mean((pred - target) ** 2, weight)


LOSSES: Dict[str, LossFn] = {
    "WeightedBCE": weighted_bce,
    "WeightedBCEWithLogitsLoss": weighted_bce_with_logits,
    "DiceLoss": dice_loss,
    "WeightedCE": weighted_ce,
    "WeightedMSE": weighted_mse,
}
ACTIVATIONS: Dict[str, Callable[[torch.Tensor], torch.Tensor]] = {
    "none": lambda x: x,
    "sigmoid": torch.sigmoid,
    "softmax": lambda x: torch.softmax(x, dim=1),
    "tanh": torch.tanh,
}


class TargetCriterion:
    """Losses per target and per loss, configured like PyTC's ``Criterion``.

    Args:
        target_opt: TARGET_OPT codes.
        loss_opt: per target, loss names (keys of ``LOSSES``).
        output_act: per target, per loss, activation names (keys of ``ACTIVATIONS``).
        loss_weight: per target, per loss, weights.
    """

    def __init__(
        self,
        target_opt: Sequence[str],
        loss_opt: Sequence[Sequence[str]],
        output_act: Sequence[Sequence[str]],
        loss_weight: Sequence[Sequence[float]],
    ) -> None:
        for key, value in (
            ("MODEL.LOSS_OPTION", loss_opt),
            ("MODEL.OUTPUT_ACT", output_act),
            ("MODEL.LOSS_WEIGHT", loss_weight),
        ):
            if len(value) != len(target_opt) or any(len(v) != len(loss_opt[i]) for i, v in enumerate(value)):
                raise ConfigError(f"{key} must hold one list per target with one entry per loss, got {list(value)!r}.")
        for name in (n for names in loss_opt for n in names):
            look_up_option("MODEL.LOSS_OPTION", name, LOSSES)
        for name in (n for names in output_act for n in names):
            look_up_option("MODEL.OUTPUT_ACT", name, ACTIVATIONS)
        self.target_opt = list(target_opt)
        self.loss_opt = [list(x) for x in loss_opt]
        self.output_act = [list(x) for x in output_act]
        self.loss_weight = [list(x) for x in loss_weight]
        self.channels = [target_channels(code) for code in self.target_opt]

    @classmethod
    def from_cfg(cls, cfg) -> "TargetCriterion":
        """Build from ``MODEL.TARGET_OPT``, ``LOSS_OPTION``, ``OUTPUT_ACT`` and ``LOSS_WEIGHT``."""
        model = cfg.MODEL
        criterion = cls(model.TARGET_OPT, model.LOSS_OPTION, model.OUTPUT_ACT, model.LOSS_WEIGHT)
        if sum(criterion.channels) != model.OUT_PLANES:
            raise ConfigError(
                f"MODEL.OUT_PLANES is {model.OUT_PLANES} but MODEL.TARGET_OPT {list(model.TARGET_OPT)} "
                f"needs {sum(criterion.channels)} channels."
            )
        return criterion

    def split(self, pred: torch.Tensor) -> List[torch.Tensor]:
        """The network output split into one tensor per target."""
        return list(torch.split(pred, self.channels, dim=1))

    def __call__(
        self, pred: torch.Tensor, target: List[torch.Tensor], weight: List[List[Optional[torch.Tensor]]]
    ) -> Tuple[torch.Tensor, Dict[str, torch.Tensor]]:
        total = pred.new_zeros(())
        losses_vis: Dict[str, torch.Tensor] = {}
        for i, pred_i in enumerate(self.split(pred.float())):
            target_i = target[i].to(pred.device)
            for j, name in enumerate(self.loss_opt[i]):
                mask = weight[i][j]
                mask = mask.to(pred.device) if mask is not None and mask.dim() == pred.dim() else None
                value = self.loss_weight[i][j] * LOSSES[name](
                    ACTIVATIONS[self.output_act[i][j]](pred_i), target_i, mask
                )
                total = total + value
                losses_vis[f"{self.target_opt[i]}_{name}_{i}_{j}"] = value.detach()
        return total, losses_vis
