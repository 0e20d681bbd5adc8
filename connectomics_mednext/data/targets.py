"""Training targets from instance or binary labels, by PyTC ``TARGET_OPT`` code, and loss weights.

- '0': binary foreground (label > 0), 1 channel;
- '2': affinities to the previous voxel along z, y and x (same non-zero instance), 3 channels;
- '4[-size-bg]': instance boundaries (a voxel whose 6-neighbour holds another id), 1 channel;
- '9-N': semantic classes 0..N-1 as int64 without a channel axis.
"""

from typing import Callable, Dict, Tuple

import numpy as np

from ..errors import ConfigError, InputError, argument, look_up_option


def _binary(label: np.ndarray, code: str) -> np.ndarray:
    return (label > 0).astype(np.float32)[None]


def _neighbours(axis: int) -> Tuple[Tuple[slice, ...], Tuple[slice, ...]]:
    """Index boxes of every voxel with a predecessor along ``axis``, and of those predecessors."""
    here, prev = [slice(None)] * 3, [slice(None)] * 3
    here[axis], prev[axis] = slice(1, None), slice(None, -1)
    return tuple(here), tuple(prev)


def _affinity(label: np.ndarray, code: str) -> np.ndarray:
    out = np.zeros((3,) + label.shape, dtype=np.float32)
    for axis in range(3):
        here, prev = _neighbours(axis)
        out[axis][here] = (label[here] == label[prev]) & (label[here] > 0)
    return out


def _boundary(label: np.ndarray, code: str) -> np.ndarray:
    edge = np.zeros(label.shape, dtype=bool)
    for axis in range(3):
        here, prev = _neighbours(axis)
        differs = label[here] != label[prev]
        edge[here] |= differs
        edge[prev] |= differs
    return edge.astype(np.float32)[None]


def _semantic(label: np.ndarray, code: str) -> np.ndarray:
    classes = int(code.split("-")[1])
    if label.size and int(label.max()) >= classes:
        raise InputError(
            f"{argument('target_opt')} {code!r} expects classes 0..{classes - 1}, but the label holds "
            f"{int(label.max())}."
        )
    return label.astype(np.int64)


TARGETS: Dict[str, Tuple[Callable[[np.ndarray, str], np.ndarray], Callable[[str], int]]] = {
    # code's first field -> (make target, number of output channels)
    "0": (_binary, lambda code: 1),
    "2": (_affinity, lambda code: 3),
    "4": (_boundary, lambda code: 1),
    "9": (_semantic, lambda code: int(code.split("-")[1])),
}


def _entry(code: str):
    head = code.split("-")[0]
    look_up_option(argument("target_opt"), head, TARGETS)
    if head == "9" and len(code.split("-")) < 2:
        raise ConfigError(f"{argument('target_opt')} code {code!r} needs the class count, e.g. '9-3'.")
    return TARGETS[head]


def make_target(label: np.ndarray, code: str) -> np.ndarray:
    """The target for one TARGET_OPT code from a (z, y, x) label crop.

    Args:
        label: instance or class labels.
        code: a PyTC TARGET_OPT code.
    """
    return _entry(code)[0](label, code)


def target_channels(code: str) -> int:
    """Output channels the network spends on this target."""
    return _entry(code)[1](code)


def target_foreground(target: np.ndarray) -> np.ndarray:
    """A target as a boolean foreground: its first channel above 0.5, or any class but 0 for a
    semantic target (int64, no channel axis).

    Args:
        target: what :func:`make_target` returned.
    """
    return target > 0 if target.dtype == np.int64 else target[0] > 0.5


def balance_weight(target: np.ndarray) -> np.ndarray:
    """WEIGHT_OPT '1': weights that give foreground and background equal total weight.

    Args:
        target: a binary float target.
    """
    foreground = float(target.mean())
    if foreground in (0.0, 1.0):
        return np.ones_like(target, dtype=np.float32)
    return np.where(target > 0.5, 0.5 / foreground, 0.5 / (1.0 - foreground)).astype(np.float32)
