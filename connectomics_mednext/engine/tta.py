"""Test-time augmentation with PyTC's ``AUG_NUM`` and ``AUG_MODE``: flips (and an xy transpose).

``AUG_NUM`` 4 flips y and x, 8 also z, 16 also transposes y and x. Each variant's prediction is
activated, un-flipped and combined by ``AUG_MODE`` ('mean', 'min' or 'max').
"""

import itertools
from typing import Callable, Dict, List, Optional, Tuple

import torch
from torch import nn

from ..errors import ConfigError, look_up_option

# AUG_NUM -> (flipped spatial axes offered, whether y and x are also transposed)
VARIANTS: Dict[int, Tuple[Tuple[int, ...], bool]] = {
    4: ((-2, -1), False),
    8: ((-3, -2, -1), False),
    16: ((-3, -2, -1), True),
}
COMBINE: Dict[str, Callable[[torch.Tensor], torch.Tensor]] = {
    "mean": lambda s: s.mean(0),
    "min": lambda s: s.min(0).values,
    "max": lambda s: s.max(0).values,
}


class FlipEnsemble(nn.Module):
    """Probabilities of ``model`` averaged (or min/max) over flipped and transposed copies of the input.

    Args:
        model: returns logits for (B, C, z, y, x) windows.
        activation: logits -> probabilities.
        aug_num: 4, 8 or 16.
        aug_mode: 'mean', 'min' or 'max'.
    """

    def __init__(
        self, model: nn.Module, activation: Callable[[torch.Tensor], torch.Tensor], aug_num: int, aug_mode: str = "mean"
    ) -> None:
        super().__init__()
        if aug_num not in VARIANTS:
            raise ConfigError(f"INFERENCE.AUG_NUM must be None, 0 or one of {sorted(VARIANTS)}, got {aug_num!r}.")
        self.model, self.activation = model, activation
        self.combine = look_up_option("INFERENCE.AUG_MODE", aug_mode, COMBINE)
        axes, transpose = VARIANTS[aug_num]
        flips = [
            tuple(a for a, on in zip(axes, pattern) if on)
            for pattern in itertools.product((False, True), repeat=len(axes))
        ]
        self.variants: List[Tuple[Tuple[int, ...], bool]] = [
            (f, t) for t in ((False, True) if transpose else (False,)) for f in flips
        ]

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        outputs = []
        for flips, transpose in self.variants:
            if transpose and x.shape[-1] != x.shape[-2]:
                continue  # y and x must match to swap
            view = x.flip(flips) if flips else x
            view = view.transpose(-1, -2) if transpose else view
            out = self.activation(self.model(view))
            out = out.transpose(-1, -2) if transpose else out
            outputs.append(out.flip(flips) if flips else out)
        return self.combine(torch.stack(outputs))


def with_test_time_augmentation(
    model: nn.Module, activation: Callable[[torch.Tensor], torch.Tensor], aug_num: Optional[int], aug_mode: str
):
    """``(model, activation)`` to hand the sliding window: ``model`` itself when ``aug_num`` is None or 0.

    Args:
        model: the network.
        activation: logits -> probabilities.
        aug_num: INFERENCE.AUG_NUM.
        aug_mode: INFERENCE.AUG_MODE.
    """
    if not aug_num:
        return model, activation
    return FlipEnsemble(model, activation, aug_num, aug_mode), lambda probabilities: probabilities
