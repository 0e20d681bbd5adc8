"""Random training crops read lazily from the volumes (any format :mod:`connectomics_mednext.io` reads).

Each crop comes with its targets, weights and augmentation.
"""

from typing import List, Optional, Sequence, Tuple, Union

import numpy as np
import torch

from ..errors import ConfigError, InputError, failure_reason, look_up_option
from ..io import check_image_dtype, check_labels, check_mask, check_same_shape, open_volume, split_names, volume_name
from .augment import Augmenter
from .intensity import standardise, to_unit_range
from .padding import pad_volume, pad_widths
from .targets import balance_weight, make_target

# WEIGHT_OPT code -> weight from (target, valid mask); None is PyTC's "no weight" placeholder.
WEIGHTS = {
    "0": lambda target, mask: mask,
    "1": lambda target, mask: balance_weight(target) * (1.0 if mask is None else mask),
}


def _pad_all(volumes: List, widths, mode: str, read_size: Sequence[int]) -> List:
    """Each volume padded by ``widths`` (``DATASET.PAD_SIZE``), and further (in ``mode``) where a crop of
    ``read_size`` (the input size plus the augmentations' margins) would not fit."""
    padded = []
    for volume in volumes:
        more = [max(0, r - (n + a + b)) for r, n, (a, b) in zip(read_size, volume.shape, widths)]
        total = tuple((a + m // 2, b + m - m // 2) for (a, b), m in zip(widths, more))
        padded.append(pad_volume(volume, total, mode, volume_name(volume)))
    return padded


def _drop_z(batch: np.ndarray) -> np.ndarray:
    """A batch of one-plane crops, (B, ..., 1, y, x), as 2D ones, (B, ..., y, x); placeholders stay."""
    return batch[..., 0, :, :] if batch.ndim >= 4 and batch.shape[-3] == 1 else batch


class CropSampler:
    """Draw batches of random ``MODEL.INPUT_SIZE`` crops; only the crops are read from disk.

    Volumes, labels and masks are padded by ``DATASET.PAD_SIZE`` in ``DATASET.PAD_MODE``, as PyTC
    pads them, through a lazy view.

    Args:
        cfg: the config (DATASET, MODEL keys).
        image_key: config key of the image names (``IMAGE_NAME`` or ``VAL_IMAGE_NAME``).
        label_key: config key of the label names.
        mask_key: config key of the valid-mask names.
        seed: seed of the crop and augmentation generator: an int, or several (e.g. the run's seed
            and the rank, so each rank draws its own crops).
        do_augment: apply the augmentations ``AUGMENTOR`` enables (:class:`~.augment.Augmenter`).
    """

    def __init__(
        self,
        cfg,
        image_key: str = "IMAGE_NAME",
        label_key: str = "LABEL_NAME",
        mask_key: str = "VALID_MASK_NAME",
        seed: Union[int, Sequence[int]] = 0,
        do_augment: bool = True,
    ) -> None:
        data = cfg.DATASET
        self.images = [open_volume(p) for p in split_names(data[image_key], data.INPUT_PATH, f"DATASET.{image_key}")]
        self.labels = [open_volume(p) for p in split_names(data[label_key], data.INPUT_PATH, f"DATASET.{label_key}")]
        check_same_shape(self.images, self.labels, f"DATASET.{label_key}")
        self.masks: Optional[List] = None
        if data[mask_key]:
            self.masks = [open_volume(p) for p in split_names(data[mask_key], data.INPUT_PATH, f"DATASET.{mask_key}")]
            check_same_shape(self.images, self.masks, f"DATASET.{mask_key}")
        for image in self.images:
            check_image_dtype(image, f"DATASET.{image_key}")
        for label in self.labels:
            check_labels(label, f"DATASET.{label_key}")
        for mask in self.masks or []:
            check_mask(mask, f"DATASET.{mask_key}")
        self.size = tuple(cfg.MODEL.INPUT_SIZE)
        widths = pad_widths(data.PAD_SIZE, "DATASET.PAD_SIZE")
        for image in self.images:
            padded = tuple(n + a + b for n, (a, b) in zip(image.shape, widths))
            if any(v < s for v, s in zip(padded, self.size)):
                raise ConfigError(
                    f"MODEL.INPUT_SIZE {list(self.size)} is larger than volume {volume_name(image)!r} "
                    f"of shape {padded} (after DATASET.PAD_SIZE)."
                )
        self.augmenter = Augmenter(cfg.AUGMENTOR, bool(data.DO_2D)) if do_augment else None
        self.read_size = self.augmenter.sample_size(self.size) if self.augmenter else self.size
        self.images = _pad_all(self.images, widths, data.PAD_MODE, self.read_size)
        self.labels = _pad_all(self.labels, widths, data.PAD_MODE, self.read_size)
        self.masks = None if self.masks is None else _pad_all(self.masks, widths, data.PAD_MODE, self.read_size)
        self.do_2d = bool(data.DO_2D)  # crops of one z plane, returned without their z axis
        self.target_opt = list(cfg.MODEL.TARGET_OPT)
        self.weight_opt = [list(w) for w in cfg.MODEL.WEIGHT_OPT]
        for code in (w for ws in self.weight_opt for w in ws):
            look_up_option("MODEL.WEIGHT_OPT", code, WEIGHTS)
        self.rng = np.random.default_rng(seed)
        sizes = np.array([np.prod(v.shape) for v in self.images], dtype=np.float64)
        self.volume_p = sizes / sizes.sum()

    def _crop(self) -> Tuple[np.ndarray, np.ndarray, Optional[np.ndarray]]:
        index = self.rng.choice(len(self.images), p=self.volume_p)
        start = [int(self.rng.integers(0, n - s + 1)) for n, s in zip(self.images[index].shape, self.read_size)]
        box = tuple(slice(a, a + s) for a, s in zip(start, self.read_size))
        volumes = [self.images[index], self.labels[index]] + ([] if self.masks is None else [self.masks[index]])
        try:
            crops = [volume[box] for volume in volumes]
        except OSError as error:
            raise InputError(
                f"A training crop at (z, y, x) {tuple(start)} of {[volume_name(v) for v in volumes]} (padded) could "
                f"not be read ({failure_reason(error)}): is one of these files damaged?"
            ) from error
        mask = None if self.masks is None else (crops[2] > 0).astype(np.float32)
        return crops[0], crops[1], mask

    @property
    def state(self) -> dict:
        """The crop generator's state, for checkpoints."""
        return self.rng.bit_generator.state

    @state.setter
    def state(self, value: dict) -> None:
        self.rng.bit_generator.state = value

    def sample(self, batch: int) -> Tuple[torch.Tensor, List[torch.Tensor], List[List[torch.Tensor]]]:
        """A batch in PyTC's layout: image (B, 1, z, y, x), one target per code, weights per target per loss."""
        images, targets, weights = [], [[] for _ in self.target_opt], [[[] for _ in w] for w in self.weight_opt]
        for _ in range(batch):
            image, label, mask = self._crop()
            image = to_unit_range(image)
            if self.augmenter is not None:
                image, label, mask = self.augmenter(self.rng, [image, label, mask], self.size)
            images.append(standardise(image)[None])
            for i, code in enumerate(self.target_opt):
                target = make_target(label, code)
                targets[i].append(target)
                for j, wopt in enumerate(self.weight_opt[i]):
                    weight = WEIGHTS[wopt](target, None if mask is None else mask[None])
                    weights[i][j].append(np.zeros((1,), dtype=np.int64) if weight is None else weight)
        batch_of = (
            (lambda arrays: torch.from_numpy(_drop_z(np.stack(arrays))))
            if self.do_2d
            else (lambda arrays: torch.from_numpy(np.stack(arrays)))
        )
        return (
            batch_of(images),
            [batch_of(t) for t in targets],
            [[batch_of(w) for w in per_target] for per_target in weights],
        )
