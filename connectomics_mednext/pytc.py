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

import argparse
import importlib
import importlib.metadata
import importlib.util
import os
import warnings
from collections import OrderedDict
from types import ModuleType
from typing import Dict, List

import torch

from .build import build_mednext, deep_supervision_weights
from .config import add_mednext_config, config_value, mednext_key_defaults, merge_config
from .losses import DeepSupervisionLoss, resample_modes_for_targets
from .model.mednext import DS_KEYS
from .solver import SCHEDULERS, set_adam_eps

ARCHITECTURE = "mednext"
_MARKER = "_connectomics_mednext_registered"
PYTC_MODULES = {
    "defaults": "connectomics.config.defaults",
    "config": "connectomics.config",
    "trainer": "connectomics.engine.trainer",
    "model_build": "connectomics.model.build",
    "monitor": "connectomics.utils.monitor",
    "system": "connectomics.utils.system",
}


# Modules PyTC v1.0 imports -> the pip package that provides them, for the missing-dependency message.
PIP_NAMES = {
    "cv2": "opencv-python",
    "skimage": "scikit-image",
    "sklearn": "scikit-learn",
    "yaml": "pyyaml",
    "GPUtil": "gputil",
    "PIL": "pillow",
}
# Modules that have no working pip install on a CPU-only machine: tools/pytc_standins has stand-ins.
STANDIN_MODULES = ("torchvision", "em_util")
INSTALL_HINT = (
    "install it from source (github.com/PytorchConnectomics/pytorch_connectomics, branch v1.0); the "
    "PyPI package named 'connectomics' is a different library"
)


class PyTCNotAvailable(ImportError):
    """PyTorch Connectomics v1.0 cannot be imported; the message says why and what to install."""


def _missing_dependency_hint(module: str) -> str:
    if module in STANDIN_MODULES:
        return (
            f"on a CPU-only machine put our stand-ins first on PYTHONPATH "
            f"(PYTHONPATH=tools/pytc_standins), or pip install {module}"
        )
    return f"pip install {PIP_NAMES.get(module, module)}"


def import_pytc() -> Dict[str, ModuleType]:
    """PyTC's modules that ``register`` patches, or :class:`PyTCNotAvailable` with the reason.

    The reason tells an absent PyTC from an installed one that fails to import because one of
    its own dependencies is missing, and names that dependency.
    """
    spec = importlib.util.find_spec("connectomics")
    if spec is None:
        raise PyTCNotAvailable(
            f"PyTorch Connectomics v1.0 is not importable (no module named 'connectomics'); {INSTALL_HINT}."
        )
    location = os.path.dirname(spec.origin or "") or "?"
    modules = {}
    for name, path in PYTC_MODULES.items():
        try:
            modules[name] = importlib.import_module(path)
        except ModuleNotFoundError as error:
            missing = (error.name or "").split(".")[0]
            if missing and missing != "connectomics":
                raise PyTCNotAvailable(
                    f"PyTorch Connectomics at {location} is installed but cannot be imported: it needs the module "
                    f"{missing!r}, which is missing; {_missing_dependency_hint(missing)}."
                ) from error
            raise PyTCNotAvailable(
                f"the 'connectomics' package at {location} is not PyTorch Connectomics v1.0 "
                f"({path} is missing); {INSTALL_HINT}."
            ) from error
        except ImportError as error:
            raise PyTCNotAvailable(f"PyTorch Connectomics at {location} fails to import ({path}: {error}).") from error
    if not hasattr(modules["defaults"], "_C") or not hasattr(modules["trainer"], "Trainer"):
        raise PyTCNotAvailable(
            f"the 'connectomics' package at {location} is not PyTorch Connectomics v1.0; {INSTALL_HINT}."
        )
    return modules


def describe_pytc(modules: Dict[str, ModuleType]) -> str:
    """ "PyTorch Connectomics <version> from <folder>", for the start-up line.

    Args:
        modules: what :func:`import_pytc` returned.
    """
    try:
        version = importlib.metadata.version("connectomics")
    except importlib.metadata.PackageNotFoundError:
        version = "(no package metadata)"
    package = os.path.dirname(os.path.dirname(modules["defaults"].__file__))
    return f"PyTorch Connectomics v1.0 API, package version {version}, from {package}"


def is_pytc_available() -> bool:
    """Whether PyTorch Connectomics v1.0 can be imported."""
    try:
        import_pytc()
    except PyTCNotAvailable:
        return False
    return True


# Our keys that only a MedNeXt reads (PyTC's other networks ignore them) or only our engine reads.
MEDNEXT_ONLY_PREFIXES = ("MODEL.MEDNEXT_SIZE", "MODEL.KERNEL_SIZE", "MODEL.DEEP_SUPERVISION", "MODEL.MEDNEXT.")
NATIVE_ONLY_KEYS = ("MODEL.AMP_DTYPE", "INFERENCE.STREAM_BLOCK_SIZE", "INFERENCE.DECODE")


def unused_mednext_keys(cfg) -> List[str]:
    """Our keys set away from their defaults that PyTC's run with ``cfg`` will not read.

    Args:
        cfg: PyTC's loaded config, with :func:`add_mednext_config`'s keys.
    """
    unused = []
    for key, default in mednext_key_defaults():
        node = config_value(cfg, key)
        value = list(node) if isinstance(node, tuple) else node
        default = list(default) if isinstance(default, tuple) else default
        if value == default:
            continue
        if key in NATIVE_ONLY_KEYS or (
            key.startswith(MEDNEXT_ONLY_PREFIXES) and cfg.MODEL.ARCHITECTURE != ARCHITECTURE
        ):
            unused.append(key)
    return unused


def warn_unused_mednext_keys(cfg) -> None:
    """Warn, once per key, about our keys that do nothing in this PyTC run.

    Args:
        cfg: PyTC's loaded config.
    """
    for key in unused_mednext_keys(cfg):
        reason = (
            "only our engine reads it"
            if key in NATIVE_ONLY_KEYS
            else f"MODEL.ARCHITECTURE is {cfg.MODEL.ARCHITECTURE!r}, not {ARCHITECTURE!r}"
        )
        warnings.warn(f"{key} is set but does nothing in PyTorch Connectomics here: {reason}.", stacklevel=2)


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


def run_pytc(args: argparse.Namespace) -> None:
    """Register MedNeXt in PyTC, then run PyTC's training or inference as its ``main.py`` does.

    Args:
        args: the parsed command line of ``scripts/main.py`` (PyTC's flags).
    """
    register()
    modules = import_pytc()
    pytc_config = modules["config"]
    # Our reading first, for one sentence per mistake; then PyTC's own, which also applies its overrides.
    merge_config(add_mednext_config(pytc_config.get_cfg_defaults()), args.config_file, args.config_base, args.opts)
    cfg = pytc_config.load_cfg(args, add_cfg_func=add_mednext_config)
    warn_unused_mednext_keys(cfg)
    device = modules["system"].init_devices(args, cfg)
    if args.local_rank in (0, None):
        print("PyTorch:", torch.__version__)
        print(cfg)
        if not os.path.exists(cfg.DATASET.OUTPUT_PATH):
            os.makedirs(cfg.DATASET.OUTPUT_PATH)
            pytc_config.save_all_cfg(cfg, cfg.DATASET.OUTPUT_PATH)
    mode = "test" if args.inference else "train"
    trainer = modules["trainer"].Trainer(cfg, device, mode, rank=args.local_rank, checkpoint=args.checkpoint)
    if cfg.DATASET.DO_CHUNK_TITLE != 0:
        trainer.run_chunk(mode)
    elif not args.inference:
        trainer.train()
    elif cfg.INFERENCE.DO_SINGLY:
        trainer.test_singly()
    else:
        trainer.test()
    print(f"Rank: {args.local_rank}. Device: {device}. Process is finished!")
