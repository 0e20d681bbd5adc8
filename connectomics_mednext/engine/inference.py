"""``--inference`` with our engine: a predictor from the config and a checkpoint, run on the volumes.

The predictor (:mod:`.predictor`) streams each ``INFERENCE.IMAGE_NAME`` volume into
``INFERENCE.OUTPUT_PATH/OUTPUT_NAME`` (datasets ``vol0``, ...), resuming an interrupted file;
``INFERENCE.DECODE`` then turns the probabilities into instance labels.
"""

import os
from datetime import timedelta
from typing import Any, Mapping, Optional, Sequence, Union

import torch
import torch.distributed as dist

from ..build import build_mednext, network_description
from ..config import check_native_values, load_native_cfg, merge_values
from ..data.padding import pad_widths
from ..errors import ConfigError, argument, argument_names, closest, look_up_option
from ..io import check_image_dtype, open_volume, split_names
from ..log import get_logger
from ..losses.criterion import ACTIVATIONS, TargetCriterion
from ..segment.decoders import DECODERS
from ..segment.run import segment_file
from .checkpoint import check_trained_network, load_checkpoint, load_weights_into, saved_config_file
from .distributed import default_device, init_distributed
from .output_folder import make_output_folder
from .predictor import Activation, PlaneByPlane, Predictor, SlidingWindow
from .tta import with_test_time_augmentation

logger = get_logger(__name__)
# Ranks wait for the slowest one before rank 0 joins the files: that can take hours.
INFERENCE_TIMEOUT = timedelta(hours=24)
# What the decoder's arguments are called when INFERENCE.DECODE runs it.
DECODE_NAMES = {
    "mode": "INFERENCE.DECODE",
    "prediction": "the prediction",
    "output": "the segmentation",
}


def make_activation(output_act: Sequence[str], channels: Sequence[int]) -> Activation:
    """Apply ``output_act[i]`` to the channels of target ``i``.

    Args:
        output_act: one ``ACTIVATIONS`` name per target (``INFERENCE.OUTPUT_ACT``).
        channels: the channels of each target.
    """
    if len(output_act) != len(channels):
        raise ConfigError(
            f"INFERENCE.OUTPUT_ACT must give one activation per target ({len(channels)}), got {list(output_act)!r}."
        )
    for name, width in zip(output_act, channels):
        look_up_option("INFERENCE.OUTPUT_ACT", name, ACTIVATIONS)
        if name == "softmax" and width < 2:
            raise ConfigError(
                "INFERENCE.OUTPUT_ACT 'softmax' on a target of one channel gives 1 everywhere; use 'sigmoid' there "
                "(softmax is for targets of two or more classes)."
            )

    def activate(x: torch.Tensor) -> torch.Tensor:
        parts = torch.split(x, list(channels), dim=1)
        return torch.cat([ACTIVATIONS[a](p) for a, p in zip(output_act, parts)], dim=1)

    return activate


def inference_window(cfg, model) -> SlidingWindow:
    """The sliding-window settings of ``cfg.INFERENCE``, checked against the network.

    Args:
        cfg: the config.
        model: the MedNeXt that will take the windows.
    """
    inference = cfg.INFERENCE
    pad_key = "INFERENCE.PAD_SIZE" if inference.PAD_SIZE is not None else "DATASET.PAD_SIZE"
    pad = pad_widths(inference.PAD_SIZE if inference.PAD_SIZE is not None else cfg.DATASET.PAD_SIZE, pad_key)
    window = tuple(inference.INPUT_SIZE or cfg.MODEL.INPUT_SIZE)
    try:
        model.check_input_size(window[1:] if cfg.DATASET.DO_2D else window)
    except ValueError as error:
        key = "INFERENCE.INPUT_SIZE" if inference.INPUT_SIZE else "MODEL.INPUT_SIZE"
        raise ConfigError(f"{key} {list(window)} does not fit MedNeXt: {error}") from error
    return SlidingWindow(
        window,
        tuple(inference.STRIDE),
        inference.BLENDING,
        inference.SAMPLES_PER_BATCH,
        pad,
        cfg.DATASET.PAD_MODE,
        inference.UNPAD,
        tuple(inference.STREAM_BLOCK_SIZE),
    )


def load_trained_model(cfg, checkpoint: str) -> torch.nn.Module:
    """The MedNeXt of ``cfg`` with the weights of ``checkpoint``, on the CPU.

    Args:
        cfg: the config.
        checkpoint: the weights.
    """
    model = build_mednext(cfg)
    load_weights_into(model, load_checkpoint(checkpoint), checkpoint)
    return model


def build_predictor(
    cfg, model: torch.nn.Module, sliding_window: SlidingWindow, device: torch.device, rank: int = 0, world_size: int = 1
) -> Predictor:
    """The predictor ``cfg.INFERENCE`` describes, running ``model`` on ``device``.

    Args:
        cfg: the config.
        model: the trained MedNeXt.
        sliding_window: :func:`inference_window`'s settings for ``model``.
        device: where the network runs.
        rank: this process's rank.
        world_size: the processes sharing the blocks.
    """
    inference = cfg.INFERENCE
    channels = TargetCriterion.from_cfg(cfg).channels
    network = model.to(device).eval()
    if cfg.DATASET.DO_2D:
        network = PlaneByPlane(network)
    network, activation = with_test_time_augmentation(
        network, make_activation(list(inference.OUTPUT_ACT), channels), inference.AUG_NUM, inference.AUG_MODE
    )
    applied = {
        "network": network_description(cfg),
        "output_act": list(inference.OUTPUT_ACT),
        "aug_num": inference.AUG_NUM,
        "aug_mode": inference.AUG_MODE,
    }
    return Predictor(network, activation, sum(channels), sliding_window, device, applied, rank, world_size)


def inference_overrides(cfg, overrides: Mapping[str, Any]) -> None:
    """Merge ``INFERENCE`` keys given in lower case (``stride=[16, 32, 32]``) into ``cfg``, checked as YAML values are.

    Args:
        cfg: a config, not frozen.
        overrides: lower-case ``INFERENCE`` key -> value.
    """
    keys = {name.lower(): name for name in cfg.INFERENCE}
    for name in overrides:
        if name not in keys:
            hint = closest(name, keys)
            suggestion = f"; did you mean {hint!r}?" if hint else f"; the INFERENCE keys are {sorted(keys)}."
            raise ConfigError(f"{name!r} is not an INFERENCE key{suggestion}")
    merge_values(cfg, {"INFERENCE": {keys[name]: value for name, value in overrides.items()}}, "the overrides")


def predictor_from_checkpoint(
    checkpoint: str,
    config_file: Optional[str] = None,
    config_base: Optional[str] = None,
    device: Optional[Union[str, torch.device]] = None,
    overrides: Optional[Mapping[str, Any]] = None,
) -> Predictor:
    """:meth:`Predictor.from_checkpoint`: the network, weights and ``INFERENCE`` settings a checkpoint describes.

    Args:
        checkpoint: the ``.pth.tar`` file.
        config_file: a config to use instead of the checkpoint's.
        config_base: a base config merged before ``config_file``.
        device: where the network runs; default the first GPU if there is one, else the CPU.
        overrides: lower-case ``INFERENCE`` key -> value.
    """
    if config_file is None:  # the checkpoint's own network, by construction
        with saved_config_file(checkpoint) as saved:
            cfg = load_native_cfg(saved, config_base, freeze=False)
    else:
        cfg = load_native_cfg(config_file, config_base, freeze=False)
    inference_overrides(cfg, overrides or {})  # INFERENCE keys only: the network stays as loaded
    cfg.freeze()
    check_native_values(cfg)
    if config_file is not None:
        check_trained_network(cfg, checkpoint)
    model = load_trained_model(cfg, checkpoint)
    return build_predictor(cfg, model, inference_window(cfg, model), torch.device(device or default_device()))


def segmentation_path(prediction: str, index: int, volumes: int) -> str:
    """``<name>_seg.h5`` beside the prediction (``<name>_vol<i>_seg.h5`` when it holds several volumes).

    Args:
        prediction: the prediction file.
        index: the volume.
        volumes: how many volumes the file holds.
    """
    stem = os.path.splitext(prediction)[0]
    return f"{stem}_seg.h5" if volumes == 1 else f"{stem}_vol{index}_seg.h5"


def main_infer(
    cfg,
    checkpoint: Optional[str],
    distributed: bool = False,
    workers: Optional[int] = None,
    worker_command: Optional[str] = None,
) -> str:
    """Predict ``INFERENCE.IMAGE_NAME`` into ``INFERENCE.OUTPUT_PATH/OUTPUT_NAME`` (datasets ``vol0``, ...).

    Under torchrun with ``distributed``, the ranks share the output's blocks and rank 0 joins them.
    With ``workers``, daisy's workers pull the blocks of a zarr output (:mod:`.daisy_prediction`).

    Args:
        cfg: the frozen config.
        checkpoint: the weights.
        distributed: join torchrun's process group.
        workers: daisy workers computing the blocks; None computes them in this process (or its ranks).
        worker_command: starts each daisy worker elsewhere (``srun ...``); None: on this machine.
    """
    if checkpoint is None:
        raise ConfigError(f"{argument('inference')} needs {argument('checkpoint')} naming the weights to predict with.")
    inference = cfg.INFERENCE
    if inference.DECODE is not None:
        look_up_option("INFERENCE.DECODE", inference.DECODE, DECODERS)
    names = split_names(inference.IMAGE_NAME, cfg.DATASET.INPUT_PATH, "INFERENCE.IMAGE_NAME")
    volumes = [open_volume(name) for name in names]
    for volume in volumes:
        check_image_dtype(volume, "INFERENCE.IMAGE_NAME")
    check_trained_network(cfg, checkpoint)
    model = load_trained_model(cfg, checkpoint)
    # A window the network cannot take is refused before any process group exists.
    sliding_window = inference_window(cfg, model)
    output = os.path.join(inference.OUTPUT_PATH, inference.OUTPUT_NAME)
    run_blocks = None
    if workers is not None:
        if distributed:
            raise ConfigError("--workers and --distributed are two ways to share the blocks; choose one.")
        from .daisy_prediction import daisy_block_runner  # daisy is an extra

        run_blocks = daisy_block_runner(cfg, checkpoint, names, output, workers, worker_command)
    elif worker_command:
        raise ConfigError("--worker-command starts daisy workers; give --workers N too.")
    make_output_folder(inference.OUTPUT_PATH, "INFERENCE.OUTPUT_PATH")
    rank, world_size, device = init_distributed(INFERENCE_TIMEOUT) if distributed else (0, 1, default_device())
    try:
        with argument_names({"output_path": "INFERENCE.OUTPUT_NAME"}):
            predictor = build_predictor(cfg, model, sliding_window, device, rank, world_size)
            predictor.predict_to_file(volumes, output, run_blocks)
    finally:
        if distributed:
            dist.destroy_process_group()
    if rank == 0:
        logger.info(f"Prediction saved as: {output}")
        if inference.DECODE is not None:
            for index in range(len(volumes)):
                labels = segmentation_path(output, index, len(volumes))
                with argument_names(DECODE_NAMES):
                    count = segment_file(output, labels, inference.DECODE, dataset=f"vol{index}")
                logger.info(f"Segmentation saved as: {labels} ({count} objects, INFERENCE.DECODE {inference.DECODE})")
    return output
