"""``build_mednext(cfg)``: a MedNeXt from a YACS config (PyTC's schema plus our keys)."""

import json
from typing import Any, Dict, List, Optional, Tuple

import torch
from yacs.config import CfgNode as CN

from .errors import ConfigError, look_up_option
from .model import MedNeXt
from .model.blocks import odd_kernel
from .model.mednext import ACTIVATION_CHECKPOINTING_STYLES, NUM_LEVELS, NUM_STAGES
from .model.sizes import SIZES, size_kwargs

# YAML cannot say None, so the config names it 'none'.
CONFIG_ACTIVATION_CHECKPOINTING: Dict[str, Optional[str]] = {
    str(style).lower(): style for style in ACTIVATION_CHECKPOINTING_STYLES
}


def _kernel(value: Any, ndim: int) -> Any:
    """KERNEL_SIZE from YAML: an int, one value per axis, or 9 per-stage values."""
    if value is None:
        return 3
    if isinstance(value, int):
        kernel, stages = value, [value]
    elif len(value) == NUM_STAGES:
        kernel = [k if isinstance(k, int) else tuple(k) for k in value]
        stages = kernel
    else:
        kernel = tuple(value)
        stages = [kernel]
    try:
        for stage in stages:
            odd_kernel(stage, ndim)
    except (ValueError, TypeError) as error:
        raise ConfigError(
            f"MODEL.KERNEL_SIZE must be an odd int (3, 5, 7), {ndim} odd ints (one per axis) or "
            f"{NUM_STAGES} such per-stage values, got {value!r}."
        ) from error
    return kernel


def _strides(value: Any) -> Any:
    if value is None:
        return 2
    if not isinstance(value, (list, tuple)) or len(value) != NUM_LEVELS:
        raise ConfigError(
            f"MODEL.MEDNEXT.STRIDES must list {NUM_LEVELS} levels (each an int or [z, y, x]), got {value!r}."
        )
    return [s if isinstance(s, int) else tuple(s) for s in value]


def mednext_kwargs(cfg) -> Dict[str, Any]:
    """The :class:`MedNeXt` arguments described by ``cfg``, validated key by key.

    Args:
        cfg: a config holding PyTC's MODEL/DATASET keys and :func:`add_mednext_config`'s keys.
    """
    model_cfg, node = cfg.MODEL, cfg.MODEL.MEDNEXT
    look_up_option("MODEL.MEDNEXT_SIZE", model_cfg.MEDNEXT_SIZE, SIZES)
    look_up_option(
        "MODEL.MEDNEXT.CHECKPOINT_STYLE", node.CHECKPOINT_STYLE, ["preset", *CONFIG_ACTIVATION_CHECKPOINTING]
    )
    dim = "2d" if cfg.DATASET.DO_2D else "3d"
    kwargs = size_kwargs(model_cfg.MEDNEXT_SIZE)
    overrides = {"n_channels": node.N_CHANNELS, "exp_r": node.EXP_R, "block_counts": node.BLOCK_COUNTS}
    kwargs.update({name: value for name, value in overrides.items() if value is not None})
    if node.CHECKPOINT_STYLE != "preset":
        kwargs["checkpoint_style"] = CONFIG_ACTIVATION_CHECKPOINTING[node.CHECKPOINT_STYLE]
    kwargs.update(
        in_channels=model_cfg.IN_PLANES,
        n_classes=model_cfg.OUT_PLANES,
        kernel_size=_kernel(model_cfg.KERNEL_SIZE, 2 if dim == "2d" else 3),
        deep_supervision=model_cfg.DEEP_SUPERVISION,
        norm_type=node.NORM,
        grn=node.GRN,
        do_res=node.DO_RES,
        do_res_up_down=node.DO_RES_UP_DOWN,
        strides=_strides(node.STRIDES),
        dim=dim,
    )
    return kwargs


# MedNeXt argument -> the config key that sets it, for error messages.
ARGUMENT_KEYS: Dict[str, str] = {
    "exp_r": "MODEL.MEDNEXT.EXP_R",
    "block_counts": "MODEL.MEDNEXT.BLOCK_COUNTS",
    "n_channels": "MODEL.MEDNEXT.N_CHANNELS",
    "in_channels": "MODEL.IN_PLANES",
    "n_classes": "MODEL.OUT_PLANES",
    "norm_type": "MODEL.MEDNEXT.NORM",
    "strides": "MODEL.MEDNEXT.STRIDES",
    "kernel_size": "MODEL.KERNEL_SIZE",
    "deep_supervision": "MODEL.DEEP_SUPERVISION",
    "grn": "MODEL.MEDNEXT.GRN",
    "do_res_up_down": "MODEL.MEDNEXT.DO_RES_UP_DOWN",
    "do_res": "MODEL.MEDNEXT.DO_RES",
    "dim": "DATASET.DO_2D",
}
# MedNeXt arguments that change how the network runs, not what it computes.
EXECUTION_ARGUMENTS = ("checkpoint_style",)


def network_description(cfg) -> Dict[str, Any]:
    """What decides the network's outputs besides its weights, as plain data: its MedNeXt arguments.

    Args:
        cfg: a config holding PyTC's MODEL/DATASET keys and :func:`add_mednext_config`'s keys.
    """
    kwargs = {k: v for k, v in mednext_kwargs(cfg).items() if k not in EXECUTION_ARGUMENTS}
    return json.loads(json.dumps(kwargs))  # tuples as lists, as a stored key reads back


def network_differences(trained: Dict[str, Any], configured: Dict[str, Any]) -> List[str]:
    """One "KEY a (trained) vs b (configured)" phrase per config key whose network argument differs.

    Args:
        trained: :func:`network_description` of the config the weights were trained with.
        configured: that of the config at hand.
    """
    return [
        f"{ARGUMENT_KEYS.get(name, name)} {trained.get(name)!r} (trained) vs {configured.get(name)!r}"
        for name in sorted(set(trained) | set(configured))
        if trained.get(name) != configured.get(name)
    ]


def build_mednext(cfg: CN) -> MedNeXt:
    """Build the MedNeXt that ``cfg`` describes and check that ``MODEL.INPUT_SIZE`` fits it.

    Raises :class:`ConfigError` (a ValueError) naming the offending key.

    Args:
        cfg: a config holding PyTC's MODEL/DATASET keys and :func:`add_mednext_config`'s keys.
    """
    kwargs = mednext_kwargs(cfg)
    try:
        model = MedNeXt(**kwargs)
    except ValueError as error:
        message = str(error)
        key = next((k for arg, k in ARGUMENT_KEYS.items() if message.startswith(arg)), "MODEL.MEDNEXT")
        raise ConfigError(f"{key}: {message}") from error
    for size_key in ("INPUT_SIZE", "OUTPUT_SIZE"):
        size = list(cfg.MODEL[size_key])
        if kwargs["dim"] == "2d":
            size = size[-2:]
        try:
            model.check_input_size(size)
        except ValueError as error:
            raise ConfigError(f"MODEL.{size_key} {list(cfg.MODEL[size_key])} does not fit MedNeXt: {error}") from error
    return model


def deep_supervision_weights(cfg) -> Optional[List[float]]:
    """The per-scale loss weights (full resolution first), or None without deep supervision.

    Args:
        cfg: the config.
    """
    if not cfg.MODEL.DEEP_SUPERVISION:
        return None
    weights = cfg.MODEL.MEDNEXT.DS_WEIGHTS
    if weights is None:
        weights = [0.5**i for i in range(NUM_LEVELS + 1)]
    weights = list(weights)
    if len(weights) != NUM_LEVELS + 1 or any(w < 0 for w in weights) or sum(weights) <= 0:
        raise ConfigError(
            f"MODEL.MEDNEXT.DS_WEIGHTS must be {NUM_LEVELS + 1} non-negative numbers with a positive sum "
            f"(full resolution first), got {cfg.MODEL.MEDNEXT.DS_WEIGHTS!r}."
        )
    total = float(sum(weights))
    return [w / total for w in weights]


# Words in a parameter name -> the config keys that decide whether it exists.
PRESENCE_KEYS: List[Tuple[str, str]] = [
    ("out_", "MODEL.DEEP_SUPERVISION"),
    ("grn", "MODEL.MEDNEXT.GRN"),
    ("res_conv", "MODEL.MEDNEXT.DO_RES_UP_DOWN"),
]
BLOCK_COUNT_KEYS = "MODEL.MEDNEXT_SIZE or MODEL.MEDNEXT.BLOCK_COUNTS"
CHANNEL_KEYS = "MODEL.MEDNEXT_SIZE, MODEL.MEDNEXT.N_CHANNELS, MODEL.MEDNEXT.EXP_R, MODEL.IN_PLANES or MODEL.OUT_PLANES"
KERNEL_KEYS = "MODEL.KERNEL_SIZE (or DATASET.DO_2D)"


def config_keys_to_check(name: str, expected: Optional[torch.Tensor], given: Optional[torch.Tensor]) -> str:
    """The clause naming the config keys that likely differ when weights do not fit the configured network.

    Args:
        name: the first parameter that does not fit.
        expected: the configured network's tensor, or None when it lacks the parameter.
        given: the checkpoint's tensor, or None when it lacks the parameter.
    """
    if expected is not None and given is not None:
        # Same channels but other spatial extent (or rank): the kernel; otherwise the widths.
        same_channels = expected.dim() == given.dim() and expected.shape[:2] == given.shape[:2]
        keys = KERNEL_KEYS if same_channels or expected.dim() != given.dim() else CHANNEL_KEYS
    else:
        keys = next((key for word, key in PRESENCE_KEYS if word in name), BLOCK_COUNT_KEYS)
    return f"; check {keys} against the config it was trained with"
