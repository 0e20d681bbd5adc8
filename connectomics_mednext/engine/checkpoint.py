"""PyTC-layout checkpoints (``checkpoint_%05d.pth.tar``): written atomically and durably, read with clear errors."""

import glob
import os
from typing import Any, Dict, List, Optional, Tuple

import torch

from .. import __version__
from ..errors import CheckpointError
from ..model.weights import extract_state_dict, load_checkpoint_file

TEMPORARY_SUFFIX = ".tmp"
# Words in a parameter name -> the config keys that decide whether it exists.
PRESENCE_KEYS: List[Tuple[str, str]] = [
    ("out_", "MODEL.DEEP_SUPERVISION"),
    ("grn", "MODEL.MEDNEXT.GRN"),
    ("res_conv", "MODEL.MEDNEXT.DO_RES_UP_DOWN"),
]
BLOCK_COUNT_KEYS = "MODEL.MEDNEXT_SIZE or MODEL.MEDNEXT.BLOCK_COUNTS"
CHANNEL_KEYS = "MODEL.MEDNEXT_SIZE, MODEL.MEDNEXT.N_CHANNELS, MODEL.MEDNEXT.EXP_R, MODEL.IN_PLANES or MODEL.OUT_PLANES"
KERNEL_KEYS = "MODEL.KERNEL_SIZE (or DATASET.DO_2D)"


def checkpoint_path(output_dir: str, iteration: int) -> str:
    """``<output_dir>/checkpoint_<iteration:05d>.pth.tar``, PyTC's name."""
    return os.path.join(output_dir, "checkpoint_%05d.pth.tar" % iteration)


def save_checkpoint(
    path: str,
    iteration: int,
    model,
    optimizer,
    scheduler,
    sampler_states: List[Dict[str, Any]],
    config: Optional[str] = None,
    scaler=None,
) -> None:
    """Write the checkpoint to a temporary file, flush it to disk, then rename it.

    A kill at any moment leaves either the previous file or the complete new one under the
    final name, never a half file; after a power loss the renamed file holds its data, too.
    Besides PyTC's entries the checkpoint describes itself: the config it was trained with (as
    YAML), the package version and the GradScaler's state.

    Args:
        path: final file name.
        iteration: iterations done.
        model: the network (unwrapped).
        optimizer: the optimizer.
        scheduler: the LR scheduler.
        sampler_states: the crop generators' states, one per rank.
        config: the full config as YAML text (``cfg.dump()``).
        scaler: the fp16 GradScaler, when training uses one.
    """
    state = {
        "iteration": iteration,
        "state_dict": model.state_dict(),
        "optimizer": optimizer.state_dict(),
        "lr_scheduler": scheduler.state_dict(),
        # Crops come from the sampler's own generator; torch's drives dropout-free init only,
        # but is kept so a resumed run matches an uninterrupted one.
        "rng": {"torch": torch.get_rng_state(), "sampler": sampler_states},
        "version": __version__,
    }
    if config is not None:
        state["config"] = config
    if scaler is not None:
        state["scaler"] = scaler.state_dict()
    temporary = path + TEMPORARY_SUFFIX
    with open(temporary, "wb") as handle:
        torch.save(state, handle)
        handle.flush()
        os.fsync(handle.fileno())
    os.replace(temporary, path)
    _fsync_folder(os.path.dirname(path) or ".")


def _fsync_folder(folder: str) -> None:
    # The rename itself lives in the folder's entry table; without this it can be lost on power failure.
    descriptor = os.open(folder, os.O_RDONLY)
    try:
        os.fsync(descriptor)
    finally:
        os.close(descriptor)


def remove_stale_temporaries(output_dir: str) -> List[str]:
    """Delete ``checkpoint_*.pth.tar.tmp`` files a kill during a save left behind; return their paths.

    Args:
        output_dir: the training output folder.
    """
    stale = sorted(glob.glob(os.path.join(glob.escape(output_dir), "checkpoint_*.pth.tar" + TEMPORARY_SUFFIX)))
    for path in stale:
        os.remove(path)
    return stale


def load_checkpoint(path: str, mmap: bool = False) -> Dict[str, Any]:
    """Read a checkpoint written by us or by PyTC (tensors and plain data only).

    Args:
        path: the file.
        mmap: map the tensors instead of reading them (for a look at the other entries).

    Raises:
        MissingFileError: ``path`` does not exist.
        CheckpointError: the file is truncated, not a PyTorch checkpoint, or holds no weights.
    """
    state = load_checkpoint_file(path, mmap=mmap, name="--checkpoint")
    if not isinstance(state, dict) or "state_dict" not in state:
        raise CheckpointError(
            f"--checkpoint {path!r} has no 'state_dict' entry; expected a checkpoint written by "
            "our engine or PyTorch Connectomics."
        )
    return state


def checkpoint_config(path: str) -> str:
    """The YAML text of the config a checkpoint was trained with.

    Raises:
        CheckpointError: the checkpoint holds none (PyTC and older versions save none).
    """
    state = load_checkpoint(path, mmap=True)  # the weights stay on disk
    if not isinstance(state.get("config"), str):
        raise CheckpointError(
            f"--checkpoint {path!r} holds no config (PyTorch Connectomics and versions before 0.2 "
            "save none); give the config it was trained with as --config-file."
        )
    return state["config"]


def _likely_keys(name: str, expected: Optional[torch.Tensor], given: Optional[torch.Tensor]) -> str:
    if expected is not None and given is not None:
        # Same channels but other spatial extent (or rank): the kernel; otherwise the widths.
        same_channels = expected.dim() == given.dim() and expected.shape[:2] == given.shape[:2]
        return KERNEL_KEYS if same_channels or expected.dim() != given.dim() else CHANNEL_KEYS
    for word, key in PRESENCE_KEYS:
        if word in name:
            return key
    return BLOCK_COUNT_KEYS


def load_weights_into(model: torch.nn.Module, state: Dict[str, Any], path: str) -> None:
    """Load ``state['state_dict']`` strictly; on a mismatch name the first layer and the keys that likely differ.

    Args:
        model: the network the config built.
        state: what :func:`load_checkpoint` returned.
        path: the checkpoint's file, for the message.

    Raises:
        CheckpointError: the weights do not fit the network.
    """
    given = extract_state_dict(state["state_dict"], source=path)
    expected = model.state_dict()
    for name in list(expected) + [k for k in given if k not in expected]:
        mine, theirs = expected.get(name), given.get(name)
        if mine is not None and theirs is not None and mine.shape == theirs.shape:
            continue
        if mine is None:
            what = f"has layer {name} {tuple(theirs.shape)}, which this config's network lacks"
        elif theirs is None:
            what = f"lacks layer {name} {tuple(mine.shape)}, which this config's network has"
        else:
            what = f"has {name} of shape {tuple(theirs.shape)} where this config's network has {tuple(mine.shape)}"
        raise CheckpointError(
            f"--checkpoint {path!r} does not fit the configured network: it {what}; check "
            f"{_likely_keys(name, mine, theirs)} against the config it was trained with."
        )
    model.load_state_dict(given, strict=True)
