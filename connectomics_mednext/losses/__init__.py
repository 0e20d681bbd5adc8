"""Loss helpers: the deep-supervision wrapper and target resampling."""

from .deep_supervision import DeepSupervisionLoss, resample_modes_for_targets

__all__ = ["DeepSupervisionLoss", "resample_modes_for_targets"]
