"""Deep supervision around any criterion returning ``(loss, losses_vis)``, PyTC's ``Criterion`` included.

Every target and weight mask is resampled to each output's size:
- labels, masks, binary maps, affinities and boundaries take the centre voxel of each
  ``f``-block (``y[f//2::f]`` per axis), as the MedNeXt reference does, so values stay valid
  labels;
- continuous targets (PyTC's unquantised distance transforms, codes '5' and '6') are
  averaged over each block, which keeps a smooth map smooth;
- anything that is not a full-resolution volume (PyTC's int64 ``(B, 1)`` "no weight"
  placeholders) passes through unchanged.
Factors are taken per axis from the output sizes, so anisotropic strides work.
"""

from collections import OrderedDict
from typing import Callable, Dict, List, Optional, Sequence, Tuple, Union

import numpy as np
import torch
import torch.nn.functional as F

Array = Union[torch.Tensor, np.ndarray]
Criterion = Callable[..., Tuple[torch.Tensor, Dict[str, torch.Tensor]]]
AVG_POOL = {1: F.avg_pool1d, 2: F.avg_pool2d, 3: F.avg_pool3d}


def _centre_sample(x: Array, factors: Sequence[int]) -> Array:
    ndim = len(factors)
    index = (slice(None),) * (x.ndim - ndim) + tuple(slice(f // 2, None, f) for f in factors)
    return x[index]


def _block_average(x: Array, factors: Sequence[int]) -> torch.Tensor:
    ndim = len(factors)
    x = torch.as_tensor(x)
    lead = x.shape[: x.dim() - ndim]
    flat = x.reshape((-1, 1) + tuple(x.shape[x.dim() - ndim :])).float()
    pooled = AVG_POOL[ndim](flat, kernel_size=tuple(factors), stride=tuple(factors))
    return pooled.reshape(tuple(lead) + tuple(pooled.shape[2:])).to(x.dtype)


# How a target is brought to a coarser scale.
RESAMPLERS: Dict[str, Callable[[Array, Sequence[int]], Array]] = {
    "nearest": _centre_sample,
    "area": _block_average,
}


def resample_modes_for_targets(target_opt: Sequence[str]) -> List[str]:
    """One resampling mode per PyTC target code: 'area' for continuous maps, else 'nearest'.

    Args:
        target_opt: PyTC's ``MODEL.TARGET_OPT`` codes, e.g. ``['0', '2', '5-2d-0-0-5.0']``.
    """
    modes = []
    for code in target_opt:
        fields = code.split("-")
        # '5-<mode>-<padding>-<quantize>-...': a quantised map holds class indices.
        quantised = fields[0] == "5" and len(fields) > 3 and bool(int(fields[3]))
        modes.append("area" if fields[0] in ("5", "6") and not quantised else "nearest")
    return modes


class DeepSupervisionLoss:
    """Sum a criterion over the deep-supervision outputs, each against resampled targets.

    Args:
        criterion: called as ``criterion(pred, targets, weights)`` and returning
            ``(loss, losses_vis)``; ``targets`` is a list (one per target) and ``weights`` a
            list per target of lists per loss, as in PyTC.
        weights: loss weight per output, full resolution first (normalised by the caller).
        target_modes: per target, a key of ``RESAMPLERS``; ``None`` means 'nearest' for all.
    """

    def __init__(self, criterion: Criterion, weights: Sequence[float], target_modes: Optional[Sequence[str]] = None):
        unknown = [m for m in (target_modes or []) if m not in RESAMPLERS]
        if unknown:
            raise ValueError(f"target_modes must be among {sorted(RESAMPLERS)}, got {unknown}.")
        self.criterion = criterion
        self.weights = list(weights)
        self.target_modes = list(target_modes) if target_modes is not None else None

    def __call__(
        self, pred, target: List[Array], weight: List[List[Array]]
    ) -> Tuple[torch.Tensor, Dict[str, torch.Tensor]]:
        if isinstance(pred, torch.Tensor):  # eval mode, or no deep supervision
            return self.criterion(pred, target, weight)
        outputs = list(pred.values()) if isinstance(pred, (dict, OrderedDict)) else list(pred)
        if len(outputs) != len(self.weights):
            raise ValueError(f"Got {len(outputs)} deep-supervision outputs but {len(self.weights)} scale weights.")
        full = outputs[0].shape[2:]
        total: Union[float, torch.Tensor] = 0.0
        losses_vis: Dict[str, torch.Tensor] = {}
        for scale, (scale_weight, output) in enumerate(zip(self.weights, outputs)):
            if scale_weight == 0:
                continue
            factors = [a // b for a, b in zip(full, output.shape[2:])]
            loss, vis = self.criterion(
                output, self.resample_targets(target, factors, full), self.resample_weights(weight, factors, full)
            )
            total = total + scale_weight * loss
            suffix = "" if scale == 0 else f"_x{'x'.join(map(str, factors))}"
            losses_vis.update({f"{name}{suffix}": value for name, value in vis.items()})
            losses_vis[f"deep_supervision_scale{scale}"] = loss.detach()
        return total, losses_vis

    def resample_targets(self, targets: List[Array], factors: Sequence[int], full: Sequence[int]) -> List[Array]:
        """Each target at the scale given by ``factors`` (identity when all are 1).

        Args:
            targets: one array per target, spatial axes last.
            factors: downsampling per spatial axis.
            full: the full-resolution spatial shape.
        """
        modes = self.target_modes or ["nearest"] * len(targets)
        if len(modes) != len(targets):
            raise ValueError(f"Got {len(targets)} targets but {len(modes)} target_modes.")
        return [self._resample(t, RESAMPLERS[mode], factors, full) for t, mode in zip(targets, modes)]

    def resample_weights(
        self, weights: List[List[Array]], factors: Sequence[int], full: Sequence[int]
    ) -> List[List[Array]]:
        """Weight masks at the scale given by ``factors``, centre-sampled; placeholders unchanged."""
        return [[self._resample(w, _centre_sample, factors, full) for w in per_target] for per_target in weights]

    @staticmethod
    def _resample(x: Optional[Array], resampler, factors: Sequence[int], full: Sequence[int]):
        if x is None or all(f == 1 for f in factors):
            return x
        if tuple(x.shape[x.ndim - len(full) :]) != tuple(full):
            return x  # a placeholder, not a volume
        return resampler(x, factors)
