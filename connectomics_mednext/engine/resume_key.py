"""The resume key of a prediction: everything that decides its bytes, assembled in this module alone.

An interrupted prediction output is continued only by a run whose key is equal; a run with any
other key starts that volume afresh (the outputs compare keys with
:func:`connectomics_mednext.io.resume.changed_fields`). The key holds:

- ``weights``: a SHA-256 of the network's state dict (:func:`weights_fingerprint`);
- what the predictor applies after the network (the activation and test-time augmentation);
- the sliding window's settings that shape the bytes (window, stride, blending, padding);
- the output's channels and dtype, and the blocks it was cut into;
- ``input``: the input volume's identity (:func:`connectomics_mednext.io.volume_identity`);
- ``world_size``, for outputs where each rank writes a file of its own.
"""

import hashlib
from typing import Any, Dict, List, Optional

import numpy as np
import torch

from ..geometry import Box
from ..io import OUTPUT_DTYPE, volume_identity


def weights_fingerprint(model: torch.nn.Module) -> str:
    """SHA-256 of the state dict's names, dtypes, shapes and values.

    Args:
        model: the network (or a wrapper holding it).
    """
    digest = hashlib.sha256()
    for name, tensor in model.state_dict().items():
        tensor = tensor.detach().cpu().contiguous()
        digest.update(f"{name}:{tensor.dtype}:{tuple(tensor.shape)};".encode())
        digest.update(tensor.reshape(-1).view(torch.uint8).numpy().tobytes())
    return digest.hexdigest()


def prediction_key(
    weights: str,
    applied: Dict[str, Any],
    sliding_window,
    channels: int,
    volume,
    blocks: List[Box],
    world_size: Optional[int] = None,
) -> Dict[str, Any]:
    """The resume key of one volume's prediction, as plain data.

    Args:
        weights: :func:`weights_fingerprint` of the network.
        applied: what the predictor applies beyond the network, as plain data (activation, flips).
        sliding_window: the :class:`~connectomics_mednext.engine.predictor.SlidingWindow`.
        channels: the output's channels.
        volume: the lazy input volume.
        blocks: the output blocks.
        world_size: the ranks, for an output with one file per rank; None where ranks share one array.
    """
    key = {
        "weights": weights,
        **applied,
        "window": sliding_window.window,
        "stride": sliding_window.stride,
        "blending": sliding_window.blending,
        "pad": sliding_window.pad,
        "pad_mode": sliding_window.pad_mode,
        "unpad": sliding_window.unpad,
        "channels": channels,
        "dtype": np.dtype(OUTPUT_DTYPE).name,
        "input": volume_identity(volume),
        "blocks": [block.to_json() for block in blocks],
    }
    if world_size is not None:
        key["world_size"] = world_size
    return key
