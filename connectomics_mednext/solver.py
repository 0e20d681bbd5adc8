"""LR schedulers PyTC lacks (Constant, Poly) and the AdamW eps the MedNeXt recipe uses.

The schedulers keep only plain numbers in their state, so checkpoints holding them load
with ``torch.load(weights_only=True)``. Both are stepped once per iteration, as PyTC does.
"""
from typing import Callable, Dict, List

import torch
from torch.optim import Optimizer
from torch.optim.lr_scheduler import LRScheduler


class ConstantLR(LRScheduler):
    """Keep every group at its base learning rate (the MedNeXt preset for EM).

    Args:
        optimizer: the optimizer.
        last_epoch: index of the last step taken; -1 starts afresh.
    """

    def __init__(self, optimizer: Optimizer, last_epoch: int = -1) -> None:
        super().__init__(optimizer, last_epoch)

    def get_lr(self) -> List[float]:
        return list(self.base_lrs)


class PolyLR(LRScheduler):
    """``base_lr * (1 - step / total_steps) ** power``, the nnU-Net/MedNeXt trainers' decay.

    Args:
        optimizer: the optimizer.
        total_steps: steps until the rate reaches 0.
        power: the exponent (0.9 in nnU-Net).
        last_epoch: index of the last step taken; -1 starts afresh.
    """

    def __init__(self, optimizer: Optimizer, total_steps: int, power: float = 0.9, last_epoch: int = -1) -> None:
        if total_steps < 1:
            raise ValueError(f"total_steps must be at least 1, got {total_steps}.")
        self.total_steps = total_steps
        self.power = power
        super().__init__(optimizer, last_epoch)

    def get_lr(self) -> List[float]:
        remaining = max(0.0, 1.0 - min(self.last_epoch, self.total_steps) / self.total_steps)
        return [base * remaining**self.power for base in self.base_lrs]


def _constant(cfg, optimizer: Optimizer) -> LRScheduler:
    return ConstantLR(optimizer)


def _poly(cfg, optimizer: Optimizer) -> LRScheduler:
    return PolyLR(optimizer, cfg.SOLVER.ITERATION_TOTAL, cfg.SOLVER.POLY_POWER)


# SOLVER.LR_SCHEDULER_NAME -> builder(cfg, optimizer); PyTC's own names are left to PyTC.
SCHEDULERS: Dict[str, Callable[..., LRScheduler]] = {"Constant": _constant, "Poly": _poly}


def set_adam_eps(cfg, optimizer: Optimizer) -> Optimizer:
    """Set ``SOLVER.ADAM_EPS`` on every group of an Adam or AdamW optimizer; others are unchanged.

    Args:
        cfg: the config.
        optimizer: the optimizer built from it.
    """
    if isinstance(optimizer, (torch.optim.Adam, torch.optim.AdamW)):
        for group in optimizer.param_groups:
            group["eps"] = cfg.SOLVER.ADAM_EPS
    return optimizer
