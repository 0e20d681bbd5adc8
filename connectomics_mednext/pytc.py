"""The one module that knows PyTorch Connectomics (PyTC) v1.0's internals.

``register()`` makes ``MODEL.ARCHITECTURE: mednext`` work in PyTC's own Trainer:

- our keys join PyTC's default tree ``connectomics.config.defaults._C``;
- ``connectomics.engine.trainer`` star-imports ``build_model``, ``build_optimizer``,
  ``build_lr_scheduler`` and ``Criterion``, so those names are rebound *in that module*;
  each wrapper handles MedNeXt (or our scheduler names) and defers to PyTC otherwise;
- ``Monitor.visualize`` is given only the full-resolution output of a deep-supervised
  MedNeXt, since PyTC compares every output against full-resolution labels.

Calling ``register()`` again changes nothing.
"""
import importlib
from collections import OrderedDict
from types import ModuleType
from typing import Dict

from .build import build_mednext, deep_supervision_weights
from .config import add_mednext_config
from .losses import DeepSupervisionLoss, resample_modes_for_targets
from .model.mednext import DS_KEYS
from .solver import SCHEDULERS, set_adam_eps

ARCHITECTURE = "mednext"
_MARKER = "_connectomics_mednext_registered"
PYTC_MODULES = {
    "defaults": "connectomics.config.defaults",
    "trainer": "connectomics.engine.trainer",
    "model_build": "connectomics.model.build",
    "monitor": "connectomics.utils.monitor",
}


class PyTCNotAvailable(ImportError):
    """PyTorch Connectomics v1.0 cannot be imported."""


def import_pytc() -> Dict[str, ModuleType]:
    """PyTC's modules that ``register`` patches, or :class:`PyTCNotAvailable` with the reason."""
    modules = {}
    for name, path in PYTC_MODULES.items():
        try:
            modules[name] = importlib.import_module(path)
        except ImportError as error:
            raise PyTCNotAvailable(
                f"PyTorch Connectomics v1.0 is not importable ({path}: {error}). Install it from source "
                "(github.com/PytorchConnectomics/pytorch_connectomics, branch v1.0); the PyPI package "
                "named 'connectomics' is a different library."
            ) from error
    if not hasattr(modules["defaults"], "_C") or not hasattr(modules["trainer"], "Trainer"):
        raise PyTCNotAvailable("The importable 'connectomics' package is not PyTorch Connectomics v1.0.")
    return modules


def is_pytc_available() -> bool:
    """Whether PyTorch Connectomics v1.0 can be imported."""
    try:
        import_pytc()
    except PyTCNotAvailable:
        return False
    return True


def register() -> None:
    """Plug MedNeXt into PyTC v1.0 (see the module docstring). Idempotent.

    Raises:
        PyTCNotAvailable: PyTC v1.0 is not importable.
    """
    modules = import_pytc()
    add_mednext_config(modules["defaults"]._C)
    trainer = modules["trainer"]
    if getattr(trainer, _MARKER, False):
        return
    _patch_trainer(trainer, modules["model_build"])
    _patch_monitor(modules["monitor"].Monitor)
    setattr(trainer, _MARKER, True)


def _patch_trainer(trainer: ModuleType, model_build: ModuleType) -> None:
    pytc_build_model = trainer.build_model
    pytc_build_optimizer = trainer.build_optimizer
    pytc_build_lr_scheduler = trainer.build_lr_scheduler
    pytc_criterion = trainer.Criterion

    def build_model(cfg, device, rank=None):
        if cfg.MODEL.ARCHITECTURE != ARCHITECTURE:
            return pytc_build_model(cfg, device, rank)
        # Every parameter takes part in each training step (dummy_tensor needs no grad),
        # so DDP can skip its search for unused parameters.
        return model_build.make_parallel(build_mednext(cfg), cfg, device, rank, find_unused_parameters=False)

    def build_optimizer(cfg, model):
        return set_adam_eps(cfg, pytc_build_optimizer(cfg, model))

    def build_lr_scheduler(cfg, optimizer):
        builder = SCHEDULERS.get(cfg.SOLVER.LR_SCHEDULER_NAME)
        return builder(cfg, optimizer) if builder else pytc_build_lr_scheduler(cfg, optimizer)

    class Criterion(pytc_criterion):
        """PyTC's Criterion, wrapped in the deep-supervision loss for a deep-supervised MedNeXt."""

        @classmethod
        def build_from_cfg(cls, cfg, device):
            criterion = pytc_criterion.build_from_cfg(cfg, device)
            weights = deep_supervision_weights(cfg) if cfg.MODEL.ARCHITECTURE == ARCHITECTURE else None
            if weights is None:
                return criterion
            return DeepSupervisionLoss(criterion, weights, resample_modes_for_targets(cfg.MODEL.TARGET_OPT))

    trainer.build_model = build_model
    trainer.build_optimizer = build_optimizer
    trainer.build_lr_scheduler = build_lr_scheduler
    trainer.Criterion = Criterion


def _patch_monitor(monitor_class: type) -> None:
    pytc_visualize = monitor_class.visualize

    def visualize(self, volume, label, output, weight, iter_total, suffix=None, **kwargs):
        if isinstance(output, OrderedDict) and next(iter(output), None) == DS_KEYS[0]:
            output = output[DS_KEYS[0]]
        return pytc_visualize(self, volume, label, output, weight, iter_total, suffix, **kwargs)

    monitor_class.visualize = visualize
