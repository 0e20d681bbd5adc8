"""PyTC-layout checkpoints (``checkpoint_%05d.pth.tar``): written atomically and durably, read with clear errors."""

import glob
import io
import os
import re
import tempfile
from contextlib import contextmanager
from typing import Any, Dict, Iterator, List, Optional

import torch

from ..build import config_keys_to_check, network_description, network_differences
from ..config import load_native_cfg, without_paths
from ..errors import CheckpointError, ConfigError, WriteError, argument, failure_reason
from ..model.weights import load_checkpoint_file, load_weights
from ..version import __version__

TEMPORARY_SUFFIX = ".tmp"


def checkpoint_path(output_dir: str, iteration: int) -> str:
    """``<output_dir>/checkpoint_<iteration:05d>.pth.tar``, PyTC's name."""
    return os.path.join(output_dir, "checkpoint_%05d.pth.tar" % iteration)


# The --checkpoint value that resumes from the newest checkpoint of DATASET.OUTPUT_PATH, or starts
# afresh when there is none: what a scheduler's requeue of the same command needs (nnU-Net's --c).
NEWEST = "last"
CHECKPOINT_NAME = re.compile(r"checkpoint_(\d+)\.pth\.tar$")


def run_checkpoints(output_dir: str) -> List[str]:
    """The checkpoints a run left in ``output_dir``, oldest iteration first.

    Args:
        output_dir: the training output folder.
    """
    if not os.path.isdir(output_dir or "."):
        return []
    names = [name for name in os.listdir(output_dir or ".") if CHECKPOINT_NAME.match(name)]
    return [os.path.join(output_dir, name) for name in sorted(names, key=_iteration)]


def resolve_newest(checkpoint: Optional[str], output_dir: str) -> Optional[str]:
    """``checkpoint``, or for :data:`NEWEST` the newest checkpoint in ``output_dir`` (None when it has none).

    Args:
        checkpoint: what ``--checkpoint`` says.
        output_dir: ``DATASET.OUTPUT_PATH``.
    """
    if checkpoint != NEWEST:
        return checkpoint
    found = run_checkpoints(output_dir)
    return found[-1] if found else None


def _iteration(name: str) -> int:
    return int(CHECKPOINT_NAME.search(name).group(1))


def check_output_folder(output_dir: str, checkpoint: Optional[str]) -> None:
    """Refuse to train into a folder that holds checkpoints of another run, which saves would replace.

    A run resumed from one of the folder's own checkpoints continues that run; anything else
    would write its checkpoints between, or over, the other run's.

    Args:
        output_dir: ``DATASET.OUTPUT_PATH``.
        checkpoint: the checkpoint resumed from, or None for a fresh start.
    """
    found = run_checkpoints(output_dir)
    if not found:
        return
    if checkpoint is not None and os.path.isfile(checkpoint):
        if os.path.samefile(os.path.dirname(os.path.abspath(checkpoint)), output_dir or "."):
            return
    newest = found[-1]
    start = "a fresh run" if checkpoint is None else f"a run resumed from {checkpoint!r}"
    raise ConfigError(
        f"DATASET.OUTPUT_PATH {output_dir!r} holds the checkpoints of another run (newest {newest!r}), which "
        f"{start} would replace; resume it with {argument('checkpoint')} {newest} (or {argument('checkpoint')} "
        f"{NEWEST}), or choose another DATASET.OUTPUT_PATH."
    )


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
    # Serialised in memory first: a file that cannot be written then fails with the system's reason
    # (torch's own writer reports a full disk as an internal position mismatch).
    payload = io.BytesIO()
    torch.save(state, payload)
    try:
        with open(temporary, "wb") as handle:
            handle.write(payload.getbuffer())
            handle.flush()
            os.fsync(handle.fileno())
    except OSError as error:
        if os.path.exists(temporary):
            os.remove(temporary)
        raise WriteError(f"The checkpoint {path!r} could not be saved ({failure_reason(error)})") from error
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
    state = load_checkpoint_file(path, mmap=mmap, name=argument("checkpoint"))
    if not isinstance(state, dict) or "state_dict" not in state:
        raise CheckpointError(
            f"{argument('checkpoint')} {path!r} has no 'state_dict' entry; expected a checkpoint written by "
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
            f"{argument('checkpoint')} {path!r} holds no config (PyTorch Connectomics and versions before 0.2 "
            "save none); give the config it was trained with as " + argument("config_file") + "."
        )
    return state["config"]


@contextmanager
def saved_config_file(path: str) -> Iterator[str]:
    """A temporary YAML file holding the config a checkpoint was trained with, less its paths; removed afterwards.

    Both engines read configs from files, so a config that lives in a checkpoint is read from here.
    It supplies the network and the inference settings, never where files are read or written
    (:data:`~connectomics_mednext.config.PATH_KEYS`): a shared checkpoint cannot point a run at
    someone's files. Those come from the command line, or default to the current folder.

    Args:
        path: the checkpoint.
    """
    with _temporary_config_file(without_paths(checkpoint_config(path))) as config_file:
        yield config_file


@contextmanager
def _temporary_config_file(text: str) -> Iterator[str]:
    """``text`` in a temporary YAML file, removed afterwards."""
    with tempfile.TemporaryDirectory() as folder:
        config_file = os.path.join(folder, "checkpoint_config.yaml")
        with open(config_file, "w", encoding="utf-8") as handle:
            handle.write(text)
        yield config_file


def load_weights_into(model: torch.nn.Module, state: Dict[str, Any], path: str) -> None:
    """Load a checkpoint's weights strictly; on a mismatch name the keys and the config keys that likely differ.

    Args:
        model: the network the config built.
        state: what :func:`load_checkpoint` returned.
        path: the checkpoint's file, for the message.

    Raises:
        CheckpointError: the weights do not fit the network.
    """
    name = f"{argument('checkpoint')} {path!r}"
    load_weights(model, state["state_dict"], layout="pytc", name=name, advice=config_keys_to_check)


def check_trained_network(cfg, path: str) -> None:
    """Refuse a config whose network differs from the one a checkpoint was trained with, naming the keys.

    Weights can fit another network (other strides, norms or residuals leave their shapes
    alone), so the config saved in the checkpoint is compared key by key. PyTorch
    Connectomics' checkpoints hold no config; for them the weights' fit is all there is.

    Args:
        cfg: the config that will build the network.
        path: the checkpoint.
    """
    text = load_checkpoint(path, mmap=True).get("config")
    if not isinstance(text, str):
        return
    with _temporary_config_file(text) as saved:  # read once; the network's keys are no paths
        trained = load_native_cfg(saved, freeze=False)
    differences = network_differences(network_description(trained), network_description(cfg))
    if differences:
        raise ConfigError(
            f"{argument('checkpoint')} {path!r} was trained with another network: {'; '.join(differences)}; "
            f"predict with the config it was trained with (without {argument('config_file')}, the one it holds)."
        )
