"""PyTC-layout checkpoints (``checkpoint_%05d.pth.tar``), written atomically, with RNG states."""
import os
from typing import Any, Dict, List

import torch


def checkpoint_path(output_dir: str, iteration: int) -> str:
    """``<output_dir>/checkpoint_<iteration:05d>.pth.tar``, PyTC's name."""
    return os.path.join(output_dir, "checkpoint_%05d.pth.tar" % iteration)


def save_checkpoint(path: str, iteration: int, model, optimizer, scheduler, sampler_states: List[Dict[str, Any]]) -> None:
    """Write the checkpoint to a temporary file, then rename it, so no half file ever has the final name.

    Args:
        path: final file name.
        iteration: iterations done.
        model: the network (unwrapped).
        optimizer: the optimizer.
        scheduler: the LR scheduler.
        sampler_states: the crop generators' states, one per rank.
    """
    state = {
        "iteration": iteration,
        "state_dict": model.state_dict(),
        "optimizer": optimizer.state_dict(),
        "lr_scheduler": scheduler.state_dict(),
        # Crops come from the sampler's own generator; torch's drives dropout-free init only,
        # but is kept so a resumed run matches an uninterrupted one.
        "rng": {"torch": torch.get_rng_state(), "sampler": sampler_states},
    }
    temporary = path + ".tmp"
    torch.save(state, temporary)
    os.replace(temporary, path)


def load_checkpoint(path: str) -> Dict[str, Any]:
    """Read a checkpoint written by us or by PyTC (tensors and plain data only)."""
    if not os.path.isfile(path):
        raise FileNotFoundError(f"--checkpoint: file {path!r} does not exist.")
    state = torch.load(path, map_location="cpu", weights_only=True)
    if "state_dict" not in state:
        raise ValueError(f"--checkpoint {path!r} has no 'state_dict' entry.")
    return state


