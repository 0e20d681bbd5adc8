"""``make_grid`` for PyTC's TensorBoard images."""
import math

import torch


def make_grid(tensor: torch.Tensor, nrow: int = 8, padding: int = 2, normalize: bool = False,
              scale_each: bool = False, pad_value: float = 0.0) -> torch.Tensor:
    """Tile a (N, C, H, W) batch into one (3, H', W') image, ``nrow`` images per row.

    Args:
        tensor: images; one channel is repeated to three.
        nrow: images per row.
        padding: pixels between images.
        normalize: rescale to [0, 1] (per image with ``scale_each``, else over the batch).
        scale_each: normalise each image on its own.
        pad_value: value of the padding pixels.
    """
    images = tensor.detach().float().clone()
    if images.dim() == 3:
        images = images.unsqueeze(0)
    if images.shape[1] == 1:
        images = images.expand(-1, 3, -1, -1).clone()
    if normalize:
        groups = images if scale_each else images.unsqueeze(0)
        for group in groups:
            low, high = float(group.min()), float(group.max())
            group.sub_(low).div_(max(high - low, 1e-5))
    count, channels, height, width = images.shape
    columns = min(nrow, count)
    rows = int(math.ceil(count / columns))
    grid = images.new_full((channels, rows * (height + padding) + padding,
                            columns * (width + padding) + padding), pad_value)
    for index in range(count):
        row, column = divmod(index, columns)
        top = row * (height + padding) + padding
        left = column * (width + padding) + padding
        grid[:, top:top + height, left:left + width] = images[index]
    return grid
