"""Arrays from callers: numpy, or torch tensors, without importing torch for those who pass none."""

import sys
from typing import Any

import numpy as np


def as_numpy(array: Any) -> np.ndarray:
    """``array`` as numpy: a torch tensor is detached and copied to the host; anything else goes to ``np.asarray``.

    Args:
        array: a numpy array, a torch tensor, or anything numpy takes.
    """
    torch = sys.modules.get("torch")  # a tensor exists only if torch was imported
    if torch is not None and isinstance(array, torch.Tensor):
        return array.detach().cpu().numpy()
    return np.asarray(array)
