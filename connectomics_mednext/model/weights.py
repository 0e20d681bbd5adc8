"""Weights from other places: one checkpoint reader, one loader with a filter per layout, and UpKern.

:func:`load_weights` fills a MedNeXt from a file, a payload, a state_dict or a module in any
layout of :data:`LAYOUTS` (the reference's nnU-Net ``.model``, PyTorch Connectomics' and our
``.pth.tar``, MONAI's MedNeXt), and reports every mismatch in one message
(:func:`describe_mismatch`). :func:`upkern_load_weights` initialises larger kernels from
smaller ones, as the reference's UpKern does.
"""

import os
import pickle
import re
import warnings
from typing import Any, Callable, Dict, List, Mapping, Optional, Tuple, Union

import torch
import torch.nn.functional as F
from torch import nn

from ..errors import CheckpointError, MissingFileError, argument, look_up_option
from .mednext import NUM_LEVELS

StateDict = Mapping[str, torch.Tensor]
WeightsSource = Union[nn.Module, StateDict, str, "os.PathLike[str]"]

# Keys of each kind a mismatch message lists before it counts the rest.
LISTED_KEYS = 10
# interpolate() mode for a depthwise kernel by its spatial rank.
KERNEL_RESIZE_MODES: Dict[int, str] = {1: "linear", 2: "bilinear", 3: "trilinear"}
# Keys containing these are copied as they are by UpKern, never resized.
UPKERN_COPY_MARKERS = ("bias", "norm", "dummy")


def load_checkpoint_file(
    path: Union[str, "os.PathLike[str]"], weights_only: bool = True, mmap: bool = False, name: str = "checkpoint"
) -> Any:
    """What a PyTorch checkpoint file holds, read onto the CPU: the one place checkpoints are read.

    Args:
        path: checkpoint file (ours, PyTC's, nnU-Net's ``.model`` or any ``torch.save`` file).
        weights_only: unpickle tensors and plain data only. nnU-Net checkpoints that also
            pickle numpy objects need ``False``; use it only for files you trust.
        mmap: map the tensors instead of reading them (for a look at the other entries).
        name: how the messages name the file (a flag such as ``--checkpoint``).

    Raises:
        MissingFileError: ``path`` does not exist.
        CheckpointError: the file is truncated, not a PyTorch checkpoint, or (with ``weights_only``)
            holds pickled objects.
    """
    path = os.fspath(path)
    if not os.path.isfile(path):
        raise MissingFileError(f"{name}: file {path!r} does not exist.")
    try:
        return torch.load(path, map_location="cpu", weights_only=weights_only, mmap=mmap)
    except pickle.UnpicklingError as error:
        if not weights_only:
            raise
        raise CheckpointError(
            f"{name} {path!r} holds more than tensors and plain data ({type(error).__name__}); "
            "if you trust the file, pass weights_only=False."
        ) from error
    except Exception as error:  # torch.load fails on a foreign file in many ways (KeyError, EOFError, ...)
        # torch's own reason is worth showing only when it is its archive reader speaking.
        reason = str(error).split(". ")[0].strip() if isinstance(error, RuntimeError) else ""
        raise CheckpointError(
            f"{name} {path!r} is not a readable PyTorch checkpoint (truncated, or another kind "
            f"of file){': ' + reason if reason else ''}."
        ) from error


def _strip_module_prefix(state: StateDict) -> Dict[str, torch.Tensor]:
    """Keys without the ``module.`` that DataParallel and DDP put in front."""
    return {k[len("module.") :] if k.startswith("module.") else k: v for k, v in state.items()}


def _from_monai(state: StateDict) -> Dict[str, torch.Tensor]:
    """MONAI's MedNeXt names -> ours (the reference's); MONAI numbers decoder parts from the bottleneck up."""
    renamed = {}
    for key, value in _strip_module_prefix(state).items():
        for pattern, replacement in MONAI_RENAMES:
            key = re.sub(pattern, replacement, key)
        renamed[key] = value
    return renamed


# MONAI's key prefix -> ours, as (pattern, replacement) for re.sub.
MONAI_RENAMES: List[Tuple[str, Callable[[re.Match], str]]] = [
    (r"^enc_stages\.(\d)\.", lambda m: f"enc_block_{m.group(1)}."),
    (r"^down_blocks\.(\d)\.", lambda m: f"down_{m.group(1)}."),
    (r"^up_blocks\.(\d)\.", lambda m: f"up_{NUM_LEVELS - 1 - int(m.group(1))}."),
    (r"^dec_stages\.(\d)\.", lambda m: f"dec_block_{NUM_LEVELS - 1 - int(m.group(1))}."),
    (r"^out_blocks\.(\d)\.", lambda m: f"out_{NUM_LEVELS - int(m.group(1))}."),
]
# Checkpoint layout -> the filter that turns its state_dict into ours, as timm's checkpoint_filter_fn does.
# The reference's nnU-Net ``.model`` files and PyTorch Connectomics' (and our) ``.pth.tar`` files
# hold our names, behind DataParallel's ``module.`` when trained that way.
LAYOUTS: Dict[str, Callable[[StateDict], Dict[str, torch.Tensor]]] = {
    "reference": _strip_module_prefix,
    "pytc": _strip_module_prefix,
    "monai": _from_monai,
}


def detect_layout(state: StateDict) -> str:
    """``'monai'`` when the keys are MONAI's MedNeXt's, else ``'reference'`` (also PyTC's and ours).

    Args:
        state: a state_dict.
    """
    return "monai" if any(k.split("module.")[-1].startswith("enc_stages.") for k in state) else "reference"


def extract_state_dict(payload: Any, source: str = "checkpoint") -> StateDict:
    """The state_dict in a checkpoint payload: the payload itself, or its ``state_dict`` (or ``model``) entry.

    Args:
        payload: what ``torch.load`` returned.
        source: how messages name it.
    """
    if not isinstance(payload, Mapping):
        raise CheckpointError(f"{source} holds a {type(payload).__name__}, expected a dict with a state_dict.")
    for key in ("state_dict", "model"):
        if key in payload and isinstance(payload[key], Mapping):
            payload = payload[key]
            break
    if not all(isinstance(v, torch.Tensor) for v in payload.values()):
        raise CheckpointError(f"{source} has no 'state_dict' entry and is not a state_dict itself.")
    return payload


def _read_in_layout(
    source: WeightsSource, layout: str, weights_only: bool, name: str
) -> Tuple[Dict[str, torch.Tensor], str]:
    """The state_dict in our names and the layout it came in."""
    if isinstance(source, nn.Module):
        return source.state_dict(), "reference"
    if isinstance(source, (str, os.PathLike)):
        source = load_checkpoint_file(source, weights_only=weights_only, name=name)
    state = extract_state_dict(source, name)
    layout = detect_layout(state) if layout == "auto" else layout
    return look_up_option(argument("layout"), layout, LAYOUTS)(state), layout


def read_weights(
    source: WeightsSource, layout: str = "auto", weights_only: bool = True, name: str = "checkpoint"
) -> Dict[str, torch.Tensor]:
    """A state_dict in our names from a module, a state_dict, a checkpoint payload or a checkpoint file.

    Args:
        source: where the weights are.
        layout: a key of :data:`LAYOUTS`, or ``'auto'`` (:func:`detect_layout`).
        weights_only: see :func:`load_checkpoint_file`.
        name: how messages name ``source``.
    """
    return _read_in_layout(source, layout, weights_only, name)[0]


def read_checkpoint(path: Union[str, "os.PathLike[str]"], weights_only: bool = True) -> Dict[str, torch.Tensor]:
    """The state_dict of a checkpoint file in our names (see :func:`read_weights`).

    Args:
        path: checkpoint file (reference ``.model``, PyTC or ours ``.pth.tar``, or MONAI's).
        weights_only: as in :func:`load_checkpoint_file`.
    """
    return read_weights(path, "auto", weights_only, name="checkpoint")


def mismatched_keys(expected: StateDict, given: StateDict) -> List[str]:
    """The keys that are missing from ``given``, extra in it, or of another shape, in ``expected``'s order.

    Args:
        expected: the model's state_dict.
        given: the state_dict to load.
    """
    extra = [k for k in given if k not in expected]
    return [k for k in expected if k not in given or given[k].shape != expected[k].shape] + extra


def describe_mismatch(expected: StateDict, given: StateDict) -> str:
    """One message listing missing, unexpected and mis-shaped keys; '' when they all match.

    Keys are listed in the model's order (unexpected ones in the checkpoint's), the first
    :data:`LISTED_KEYS` of each kind.

    Args:
        expected: the model's state_dict.
        given: the state_dict to load.
    """

    def listing(keys) -> str:
        shown = ", ".join(keys[:LISTED_KEYS])
        return shown + (f", ... ({len(keys) - LISTED_KEYS} more)" if len(keys) > LISTED_KEYS else "")

    names = mismatched_keys(expected, given)
    missing = [k for k in names if k not in given]
    unexpected = [k for k in names if k not in expected]
    misshaped = [
        f"{k} (model {tuple(expected[k].shape)}, checkpoint {tuple(given[k].shape)})"
        for k in names
        if k in expected and k in given
    ]
    parts = []
    if missing:
        parts.append(f"missing keys: {listing(missing)}")
    if unexpected:
        parts.append(f"unexpected keys: {listing(unexpected)}")
    if misshaped:
        parts.append(f"mis-shaped keys: {listing(misshaped)}")
    return "; ".join(parts)


def load_weights(
    model: nn.Module,
    source: WeightsSource,
    layout: str = "auto",
    weights_only: bool = True,
    name: str = "The checkpoint",
    advice: Optional[Callable[[str, Optional[torch.Tensor], Optional[torch.Tensor]], str]] = None,
) -> nn.Module:
    """Load weights of any known layout into ``model`` strictly; one clear error on any mismatch.

    Args:
        model: the network to fill.
        source: a module, a state_dict, a checkpoint payload or a checkpoint file path.
        layout: a key of :data:`LAYOUTS` (``'reference'``, ``'pytc'``, ``'monai'``), or ``'auto'``.
        weights_only: see :func:`load_checkpoint_file`.
        name: how the message names ``source``.
        advice: (first mismatched key, the model's tensor, the checkpoint's) -> a clause saying what
            to check, appended to the message; either tensor is None where the key is absent.
    """
    state, layout = _read_in_layout(source, layout, weights_only, name)
    expected = model.state_dict()
    if layout == "monai" and "dummy_tensor" in expected:
        # MONAI has no dummy_tensor (the reference's helper for activation checkpointing): keep the model's.
        state = {"dummy_tensor": expected["dummy_tensor"], **state}
    mismatch = describe_mismatch(expected, state)
    if mismatch:
        first = mismatched_keys(expected, state)[0]
        clause = advice(first, expected.get(first), state.get(first)) if advice else ""
        raise CheckpointError(f"{name} does not fit this MedNeXt: {mismatch}{clause}.")
    model.load_state_dict(state, strict=True)
    return model


def upkern_load_weights(network: nn.Module, pretrained: WeightsSource, weights_only: bool = True) -> nn.Module:
    """Initialise ``network`` from a model with smaller (or other) depthwise kernels (UpKern).

    For every key of ``network``: keys containing 'bias', 'norm' or 'dummy' and tensors of
    equal shape are copied; kernels of another spatial size are resized with linear
    interpolation (``align_corners=False``), per axis, so anisotropic kernels work; keys
    absent from ``pretrained`` keep their initial values, with a warning.

    Args:
        network: the target network, modified in place and returned.
        pretrained: a module, a state_dict or a checkpoint file path.
        weights_only: see :func:`read_checkpoint`.
    """
    source = read_weights(pretrained, "auto", weights_only, name="pretrained")
    target = network.state_dict()
    not_loaded = []
    for key, value in target.items():
        if key not in source:
            not_loaded.append(key)
            continue
        given = source[key]
        if given.shape == value.shape:
            target[key] = given
            continue
        if any(marker in key for marker in UPKERN_COPY_MARKERS) or given.shape[:2] != value.shape[:2]:
            raise ValueError(
                f"UpKern cannot map {key}: pretrained shape {tuple(given.shape)}, network shape "
                f"{tuple(value.shape)}. Only kernel sizes may differ; n_classes and channel counts must match."
            )
        spatial = value.shape[2:]
        if len(spatial) not in KERNEL_RESIZE_MODES:
            raise ValueError(f"UpKern cannot resize {key} with shape {tuple(value.shape)}.")
        target[key] = F.interpolate(
            given.to(value.dtype), size=tuple(spatial), mode=KERNEL_RESIZE_MODES[len(spatial)], align_corners=False
        )
    if not_loaded:
        warnings.warn(
            f"UpKern: {len(not_loaded)} keys not in the pretrained weights keep their init: {not_loaded}",
            stacklevel=2,
        )
    network.load_state_dict(target, strict=True)
    return network
