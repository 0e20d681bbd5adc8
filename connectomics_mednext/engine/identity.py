"""The resume key's weights field: a fingerprint of the network's values.

The inputs' fields come from :func:`connectomics_mednext.io.volume_identity`.
"""

import hashlib

import torch


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
