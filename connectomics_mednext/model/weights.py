"""Loading reference MedNeXt checkpoints and UpKern (kernel up-sampling) initialisation."""

import os
import pickle
import warnings
from typing import Any, Dict, Mapping, Union

import torch
import torch.nn.functional as F
from torch import nn

from ..errors import CheckpointError, MissingFileError

StateDict = Mapping[str, torch.Tensor]
WeightsSource = Union[nn.Module, StateDict, str, "os.PathLike[str]"]

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


def read_checkpoint(path: Union[str, "os.PathLike[str]"], weights_only: bool = True) -> Dict[str, torch.Tensor]:
    """Read a state_dict from a reference (nnU-Net ``.model``) or PyTorch checkpoint file.

    The file may hold the state_dict itself or a dict with a ``state_dict`` (or ``model``)
    entry; a leading ``module.`` (DataParallel/DDP) is stripped from every key.

    Args:
        path: checkpoint file.
        weights_only: as in :func:`load_checkpoint_file`.
    """
    return extract_state_dict(load_checkpoint_file(path, weights_only=weights_only), source=os.fspath(path))


def extract_state_dict(payload: Mapping, source: str = "checkpoint") -> Dict[str, torch.Tensor]:
    """Find the state_dict in a checkpoint payload and strip ``module.`` prefixes.

    Args:
        payload: what ``torch.load`` returned.
        source: name used in error messages.
    """
    if not isinstance(payload, Mapping):
        raise ValueError(f"{source} holds a {type(payload).__name__}, expected a dict with a state_dict.")
    for key in ("state_dict", "model"):
        if key in payload and isinstance(payload[key], Mapping):
            payload = payload[key]
            break
    if not all(isinstance(v, torch.Tensor) for v in payload.values()):
        raise ValueError(f"{source} has no 'state_dict' entry and is not a state_dict itself.")
    return {k[len("module.") :] if k.startswith("module.") else k: v for k, v in payload.items()}


def _as_state_dict(source: WeightsSource, weights_only: bool = True) -> Dict[str, torch.Tensor]:
    if isinstance(source, nn.Module):
        return source.state_dict()
    if isinstance(source, (str, os.PathLike)):
        return read_checkpoint(source, weights_only=weights_only)
    return extract_state_dict(source)


def describe_mismatch(expected: StateDict, given: StateDict) -> str:
    """One message listing missing, unexpected and mis-shaped keys; '' when they all match.

    Args:
        expected: the model's state_dict.
        given: the state_dict to load.
    """

    def listing(keys) -> str:
        keys = sorted(keys)
        shown = ", ".join(keys[:20])
        return shown + (f", ... ({len(keys) - 20} more)" if len(keys) > 20 else "")

    missing = set(expected) - set(given)
    unexpected = set(given) - set(expected)
    misshaped = [
        f"{k} (model {tuple(expected[k].shape)}, checkpoint {tuple(given[k].shape)})"
        for k in sorted(set(expected) & set(given))
        if expected[k].shape != given[k].shape
    ]
    parts = []
    if missing:
        parts.append(f"missing keys: {listing(missing)}")
    if unexpected:
        parts.append(f"unexpected keys: {listing(unexpected)}")
    if misshaped:
        parts.append(f"mis-shaped keys: {listing(misshaped)}")
    return "; ".join(parts)


def load_reference_weights(model: nn.Module, source: WeightsSource, weights_only: bool = True) -> nn.Module:
    """Load reference MedNeXt weights strictly, with one clear error on any mismatch.

    Args:
        model: the network to fill.
        source: a module, a state_dict, a checkpoint payload or a checkpoint file path.
        weights_only: see :func:`read_checkpoint`.
    """
    state = _as_state_dict(source, weights_only)
    mismatch = describe_mismatch(model.state_dict(), state)
    if mismatch:
        raise ValueError(f"The checkpoint does not fit this MedNeXt: {mismatch}.")
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
    source = _as_state_dict(pretrained, weights_only)
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
