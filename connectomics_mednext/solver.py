"""LR schedulers PyTC lacks (Constant, Poly), our engine's solver, and the Adam eps of the MedNeXt recipe.

The schedulers keep only plain numbers in their state, so checkpoints holding them load
with ``torch.load(weights_only=True)``. Both are stepped once per iteration, as PyTC does.
"""

import math
from typing import Any, Callable, Dict, List, Mapping

import torch
from torch.optim import Optimizer
from torch.optim.lr_scheduler import LRScheduler

from .errors import CheckpointError, argument, look_up_option
from .model.blocks import LayerNorm


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


class WarmupCosineLR(LRScheduler):
    """Linear warm-up from ``warmup_factor * base_lr`` over ``warmup_iters``, then cosine decay to 0.

    Args:
        optimizer: the optimizer.
        total_steps: steps until the rate reaches 0.
        warmup_factor: starting fraction of the base rate.
        warmup_iters: warm-up length in steps.
        last_epoch: index of the last step taken; -1 starts afresh.
    """

    def __init__(
        self,
        optimizer: Optimizer,
        total_steps: int,
        warmup_factor: float = 0.001,
        warmup_iters: int = 1000,
        last_epoch: int = -1,
    ) -> None:
        self.total_steps = total_steps
        self.warmup_factor = warmup_factor
        self.warmup_iters = warmup_iters
        super().__init__(optimizer, last_epoch)

    def get_lr(self) -> List[float]:
        step = self.last_epoch
        factor = 0.5 * (1.0 + math.cos(math.pi * min(step, self.total_steps) / self.total_steps))
        if step < self.warmup_iters:
            alpha = step / self.warmup_iters
            factor *= self.warmup_factor * (1 - alpha) + alpha
        return [base * factor for base in self.base_lrs]


def _constant(cfg, optimizer: Optimizer) -> LRScheduler:
    return ConstantLR(optimizer)


def _poly(cfg, optimizer: Optimizer) -> LRScheduler:
    return PolyLR(optimizer, cfg.SOLVER.ITERATION_TOTAL, cfg.SOLVER.POLY_POWER)


def _multistep(cfg, optimizer: Optimizer) -> LRScheduler:
    return torch.optim.lr_scheduler.MultiStepLR(optimizer, milestones=list(cfg.SOLVER.STEPS), gamma=cfg.SOLVER.GAMMA)


# SOLVER.LR_SCHEDULER_NAME -> builder(cfg, optimizer). In PyTC, register() adds these two and
# leaves PyTC's own names to PyTC.
SCHEDULERS: Dict[str, Callable[..., LRScheduler]] = {"Constant": _constant, "Poly": _poly}


def _warmup_cosine(cfg, optimizer: Optimizer) -> LRScheduler:
    solver = cfg.SOLVER
    return WarmupCosineLR(optimizer, solver.ITERATION_TOTAL, solver.WARMUP_FACTOR, solver.WARMUP_ITERS)


# Our engine's schedulers: ours plus PyTC's MultiStepLR and WarmupCosineLR.
NATIVE_SCHEDULERS: Dict[str, Callable[..., LRScheduler]] = {
    **SCHEDULERS,
    "MultiStepLR": _multistep,
    "WarmupCosineLR": _warmup_cosine,
}


def _sgd(cfg, params) -> Optimizer:
    return torch.optim.SGD(params, lr=cfg.SOLVER.BASE_LR, momentum=cfg.SOLVER.MOMENTUM)


def _adam_family(optimizer_class):
    def build(cfg, params) -> Optimizer:
        return optimizer_class(params, lr=cfg.SOLVER.BASE_LR, betas=tuple(cfg.SOLVER.BETAS), eps=cfg.SOLVER.ADAM_EPS)

    return build


OPTIMIZERS: Dict[str, Callable[..., Optimizer]] = {
    "SGD": _sgd,
    "Adam": _adam_family(torch.optim.Adam),
    "AdamW": _adam_family(torch.optim.AdamW),
}


def build_native_solver(cfg, model: torch.nn.Module):
    """Optimizer and LR scheduler for our engine, with PyTC's weight-decay groups.

    Norm parameters get ``SOLVER.WEIGHT_DECAY_NORM``, biases ``WEIGHT_DECAY_BIAS`` (and
    ``BIAS_LR_FACTOR``), everything else ``WEIGHT_DECAY``, as in PyTC.

    Args:
        cfg: the config.
        model: the network.
    """
    solver = cfg.SOLVER
    look_up_option("SOLVER.NAME", solver.NAME, OPTIMIZERS)
    look_up_option("SOLVER.LR_SCHEDULER_NAME", solver.LR_SCHEDULER_NAME, NATIVE_SCHEDULERS)
    norms = (torch.nn.GroupNorm, torch.nn.LayerNorm, LayerNorm)
    groups = []
    for module in model.modules():
        for name, param in module.named_parameters(recurse=False):
            if not param.requires_grad:
                continue
            lr, decay = solver.BASE_LR, solver.WEIGHT_DECAY
            if isinstance(module, norms):
                decay = solver.WEIGHT_DECAY_NORM
            elif name == "bias":
                lr, decay = solver.BASE_LR * solver.BIAS_LR_FACTOR, solver.WEIGHT_DECAY_BIAS
            groups.append({"params": [param], "lr": lr, "weight_decay": decay})
    optimizer = OPTIMIZERS[solver.NAME](cfg, groups)
    return optimizer, NATIVE_SCHEDULERS[solver.LR_SCHEDULER_NAME](cfg, optimizer)


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


# Solver settings a checkpoint holds -> the config key that sets them, for the resume message.
SOLVER_SETTING_KEYS = {
    "initial_lr": "SOLVER.BASE_LR",
    "weight_decay": "SOLVER.WEIGHT_DECAY",
    "betas": "SOLVER.BETAS",
    "eps": "SOLVER.ADAM_EPS",
    "momentum": "SOLVER.MOMENTUM",
    "total_steps": "SOLVER.ITERATION_TOTAL",
    "power": "SOLVER.POLY_POWER",
    "milestones": "SOLVER.STEPS",
    "gamma": "SOLVER.GAMMA",
    "warmup_factor": "SOLVER.WARMUP_FACTOR",
    "warmup_iters": "SOLVER.WARMUP_ITERS",
}
# Scheduler state that is progress (taken from the checkpoint) rather than settings (taken from the config).
SCHEDULE_PROGRESS = ("last_epoch", "_step_count")
SCHEDULE_DERIVED = ("base_lrs", "_last_lr", "_is_initial", "_get_lr_called_within_step")


def _plain(value: Any) -> Any:
    if isinstance(value, (list, tuple)):
        return [_plain(v) for v in value]
    return dict(value) if isinstance(value, Mapping) else value


def resume_solver(
    optimizer: Optimizer, scheduler: LRScheduler, optimizer_state: dict, scheduler_state: dict, source: str
) -> List[str]:
    """Load a checkpoint's optimizer moments and schedule progress, keeping the config's settings.

    A resumed run with an unchanged config continues exactly. A setting the config changes
    (the learning rate, the schedule's length, ...) is honoured from the next step on, never
    silently replaced by the checkpoint's; the returned lines say what changed.

    Args:
        optimizer: the optimizer built from the config.
        scheduler: the scheduler built from the config.
        optimizer_state: the checkpoint's ``optimizer`` entry.
        scheduler_state: the checkpoint's ``lr_scheduler`` entry.
        source: the checkpoint's file, for messages.

    Raises:
        CheckpointError: the checkpoint holds another optimizer or scheduler.
    """
    fresh_groups = [{k: v for k, v in g.items() if k != "params"} for g in optimizer.param_groups]
    fresh_schedule = scheduler.state_dict()
    saved_groups = optimizer_state.get("param_groups", [])
    if len(saved_groups) != len(fresh_groups) or any(
        set(s) - {"params"} != set(f) for s, f in zip(saved_groups, fresh_groups)
    ):
        raise CheckpointError(
            f"{argument('checkpoint')} {source!r} holds the state of another optimizer; set SOLVER.NAME and "
            "the SOLVER.WEIGHT_DECAY_* keys as when it was trained."
        )
    if set(scheduler_state) != set(fresh_schedule):
        raise CheckpointError(
            f"{argument('checkpoint')} {source!r} holds the state of another LR scheduler; set "
            "SOLVER.LR_SCHEDULER_NAME as when it was trained."
        )
    try:
        optimizer.load_state_dict(optimizer_state)
    except ValueError as error:
        raise CheckpointError(
            f"{argument('checkpoint')} {source!r} holds an optimizer state that does not fit this network ({error})."
        ) from error
    changes: Dict[str, str] = {}
    for group, fresh in zip(optimizer.param_groups, fresh_groups):
        for name, value in fresh.items():
            if name != "lr" and _plain(group[name]) != _plain(value):
                changes.setdefault(name, f"{SOLVER_SETTING_KEYS.get(name, name)} ({name} {group[name]} -> {value})")
                group[name] = value
    skipped = SCHEDULE_PROGRESS + SCHEDULE_DERIVED
    for name, value in fresh_schedule.items():
        if name not in skipped and _plain(scheduler_state[name]) != _plain(value):
            changes.setdefault(
                name, f"{SOLVER_SETTING_KEYS.get(name, name)} ({name} {scheduler_state[name]} -> {value})"
            )
    scheduler.load_state_dict(
        {
            **scheduler_state,
            **{k: v for k, v in fresh_schedule.items() if k not in skipped},
            "base_lrs": [g["initial_lr"] for g in optimizer.param_groups],
        }
    )
    if changes:
        # MultiStepLR's get_lr() steps from the current rate; its closed form gives the rate at last_epoch.
        rates = scheduler._get_closed_form_lr() if hasattr(scheduler, "_get_closed_form_lr") else scheduler.get_lr()
        for group, rate in zip(optimizer.param_groups, rates):
            group["lr"] = rate
        scheduler._last_lr = list(rates)
    return list(changes.values())
