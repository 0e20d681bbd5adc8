"""Our training loop: PyTC's config, checkpoints and TensorBoard layout, without PyTC."""
import os
import time
from datetime import timedelta
from typing import Dict, Optional

import h5py
import numpy as np
import torch
import torch.distributed as dist
from torch.nn.parallel import DistributedDataParallel
from torch.utils.tensorboard import SummaryWriter

from ..build import build_mednext, deep_supervision_weights
from ..data.padding import pad_widths
from ..data.sampler import CropSampler
from ..data.targets import make_target, target_foreground
from ..data.volumes import open_volume, read_whole, split_names
from ..losses import DeepSupervisionLoss, resample_modes_for_targets
from ..losses.criterion import TargetCriterion
from ..solver import build_native_solver
from .checkpoint import checkpoint_path, load_checkpoint, save_checkpoint
from .distributed import default_device, init_distributed
from .inference import make_activation, predict_to_hdf5
from .tta import with_test_time_augmentation


INFERENCE_TIMEOUT = timedelta(hours=24)


class NonFiniteLoss(RuntimeError):
    """The loss became NaN or infinite."""


def _clip_gradients(cfg, model: torch.nn.Module) -> None:
    clip = cfg.SOLVER.CLIP_GRADIENTS
    if not clip.ENABLED:
        return
    if clip.CLIP_TYPE == "norm":
        # The global norm over all parameters, as the MedNeXt recipe clips.
        torch.nn.utils.clip_grad_norm_(model.parameters(), clip.CLIP_VALUE, clip.NORM_TYPE)
    elif clip.CLIP_TYPE == "value":
        torch.nn.utils.clip_grad_value_(model.parameters(), clip.CLIP_VALUE)
    else:
        raise ValueError(f"SOLVER.CLIP_GRADIENTS.CLIP_TYPE must be 'norm' or 'value', got {clip.CLIP_TYPE!r}.")


# MODEL.AMP_DTYPE -> autocast dtype per device type; float16 gets a GradScaler.
AMP_DTYPES = {
    "auto": {"cuda": torch.float16, "cpu": torch.bfloat16},
    "bfloat16": {"cuda": torch.bfloat16, "cpu": torch.bfloat16},
    "float16": {"cuda": torch.float16},
}


def amp_dtype(cfg, device: torch.device) -> torch.dtype:
    """The autocast dtype ``MODEL.AMP_DTYPE`` asks for on ``device``."""
    choice = cfg.MODEL.AMP_DTYPE
    if choice not in AMP_DTYPES:
        raise ValueError(f"MODEL.AMP_DTYPE must be one of {sorted(AMP_DTYPES)}, got {choice!r}.")
    if device.type not in AMP_DTYPES[choice]:
        raise ValueError(f"MODEL.AMP_DTYPE {choice!r} needs a GPU; on {device.type} use 'bfloat16' or 'auto'.")
    return AMP_DTYPES[choice][device.type]


def dice_iou(prediction: np.ndarray, truth: np.ndarray) -> Dict[str, float]:
    """Dice and IoU of two boolean arrays (1.0 when both are empty)."""
    intersection = float(np.logical_and(prediction, truth).sum())
    total = float(prediction.sum() + truth.sum())
    union = total - intersection
    return {"dice": 2 * intersection / total if total else 1.0, "iou": intersection / union if union else 1.0}


class Trainer:
    """Train a MedNeXt from a config, as PyTC's Trainer does, with our data, loss and solver.

    Args:
        cfg: the frozen config.
        device: where to train.
        checkpoint: a checkpoint to resume from (ours or PyTC's layout).
        rank: this process's rank under DDP (rank 0 logs, validates and writes).
        world_size: number of DDP processes; 1 trains without DDP.
    """

    def __init__(self, cfg, device: torch.device, checkpoint: Optional[str] = None, rank: int = 0,
                 world_size: int = 1) -> None:
        self.cfg = cfg
        self.device = device
        self.rank, self.world_size = rank, world_size
        self.is_main = rank == 0
        self.output_dir = cfg.DATASET.OUTPUT_PATH
        self.model = build_mednext(cfg).to(device)
        # Every parameter is used in each step (dummy_tensor needs no grad): no unused-parameter search.
        self.network = self.model if world_size == 1 else DistributedDataParallel(
            self.model, device_ids=[device.index] if device.type == "cuda" else None, find_unused_parameters=False)
        self.optimizer, self.scheduler = build_native_solver(cfg, self.model)
        criterion = TargetCriterion.from_cfg(cfg)
        self.channels = criterion.channels
        weights = deep_supervision_weights(cfg)
        self.criterion = criterion if weights is None else DeepSupervisionLoss(
            criterion, weights, resample_modes_for_targets(cfg.MODEL.TARGET_OPT))
        self.sampler = CropSampler(cfg, seed=rank)  # a different crop stream per rank
        self.start_iter = cfg.MODEL.PRE_MODEL_ITER
        if checkpoint is not None:
            self._resume(load_checkpoint(checkpoint))
        self.amp_dtype = amp_dtype(cfg, device) if cfg.MODEL.MIXED_PRECESION else None
        self.scaler = torch.amp.GradScaler("cuda") if self.amp_dtype == torch.float16 else None

    def _resume(self, state) -> None:
        self.model.load_state_dict(state["state_dict"])
        if "optimizer" in state:
            self.optimizer.load_state_dict(state["optimizer"])
        if "lr_scheduler" in state:
            self.scheduler.load_state_dict(state["lr_scheduler"])
        self.start_iter = int(state.get("iteration", self.start_iter))
        rng = state.get("rng")
        if rng is not None:
            torch.set_rng_state(rng["torch"])
            states = rng["sampler"]
            self.sampler.rng.bit_generator.state = states[self.rank % len(states)]

    def save(self, iteration: int, gather: bool = True) -> str:
        """Write ``checkpoint_<iteration>.pth.tar`` (rank 0) and return its path.

        Under DDP every rank must call it (the crop generators of all ranks are gathered),
        unless ``gather`` is False.
        """
        states = [self.sampler.rng.bit_generator.state]
        if self.world_size > 1 and gather:
            states = [None] * self.world_size
            dist.all_gather_object(states, self.sampler.rng.bit_generator.state)
        path = checkpoint_path(self.output_dir, iteration)
        if self.is_main:
            save_checkpoint(path, iteration, self.model, self.optimizer, self.scheduler, states)
        return path

    def _step(self, iteration: int):
        start = time.perf_counter()
        image, target, weight = self.sampler.sample(self.cfg.SOLVER.SAMPLES_PER_BATCH)
        data_time = time.perf_counter() - start
        self.optimizer.zero_grad(set_to_none=True)
        with torch.autocast(self.device.type, dtype=self.amp_dtype or torch.float32, enabled=self.amp_dtype is not None):
            pred = self.network(image.to(self.device))
            loss, losses_vis = self.criterion(pred, target, weight)
        finite = torch.isfinite(loss.detach()).float()
        if self.world_size > 1:  # every rank must stop together, or the others wait forever
            dist.all_reduce(finite, op=dist.ReduceOp.MIN)
        if not finite:
            raise NonFiniteLoss(
                f"The loss became {loss.item()} at iteration {iteration}; training stopped. The last "
                f"checkpoint in {self.output_dir!r} is from before it. Lower SOLVER.BASE_LR or check the data."
            )
        if self.scaler is not None:
            self.scaler.scale(loss).backward()
            self.scaler.unscale_(self.optimizer)
            _clip_gradients(self.cfg, self.model)
            self.scaler.step(self.optimizer)
            self.scaler.update()
        else:
            loss.backward()
            _clip_gradients(self.cfg, self.model)
            self.optimizer.step()
        self.scheduler.step()
        return loss.detach(), losses_vis, pred, image, target, data_time

    def train(self) -> None:
        """Run from the start (or resumed) iteration to ``SOLVER.ITERATION_TOTAL``."""
        cfg = self.cfg
        os.makedirs(self.output_dir, exist_ok=True)
        writer = SummaryWriter(os.path.join(self.output_dir, "log")) if self.is_main else None
        scalar_every, image_every = cfg.MONITOR.ITERATION_NUM
        total = cfg.SOLVER.ITERATION_TOTAL
        self.model.train()
        began = time.perf_counter()
        iteration = self.start_iter
        try:
            while iteration < total:
                loss, losses_vis, pred, image, target, data_time = self._step(iteration)
                iteration += 1
                if iteration % cfg.SOLVER.ITERATION_SAVE == 0:
                    self.save(iteration)
                if not self.is_main:
                    continue
                if iteration % scalar_every == 0:
                    writer.add_scalar("Loss", loss.item(), iteration)
                    writer.add_scalar("Learning Rate", self.optimizer.param_groups[0]["lr"], iteration)
                    writer.add_scalar("Data Time", data_time, iteration)
                    for name, value in losses_vis.items():
                        writer.add_scalar(f"Loss/{name}", float(value), iteration)
                if iteration % image_every == 0:
                    self._log_images(writer, image, target, pred, iteration)
                if cfg.DATASET.VAL_IMAGE_NAME and iteration % cfg.SOLVER.ITERATION_VAL == 0:
                    scores = self.validate()
                    for name, value in scores.items():
                        writer.add_scalar(f"Validation/{name}", value, iteration)
                    print(f"[Iteration {iteration:05d}] validation Dice {scores['dice']:.4f} IoU {scores['iou']:.4f}",
                          flush=True)
                    self.model.train()
                elapsed = time.perf_counter() - began
                eta = elapsed / (iteration - self.start_iter) * (total - iteration)
                print(f"[Iteration {iteration:05d}/{total}] loss={loss.item():.5f} "
                      f"lr={self.optimizer.param_groups[0]['lr']:.2e} data={data_time:.3f}s ETA {eta / 60:.1f} min",
                      flush=True)
        except KeyboardInterrupt:
            path = self.save(iteration, gather=False)  # other ranks may be gone: no collective
            if self.is_main:
                print(f"Interrupted: saved {path}", flush=True)
            raise SystemExit(130)
        finally:
            if writer is not None:
                writer.close()

    def _log_images(self, writer, image, target, pred, iteration: int) -> None:
        full = pred if isinstance(pred, torch.Tensor) else next(iter(pred.values()))
        middle = image.shape[2] // 2
        writer.add_image("Input", (image[0, :, middle] * 0.5 + 0.5).clamp(0, 1), iteration)
        first = torch.split(full.detach().float(), self.channels, dim=1)[0][0, :1, middle]
        writer.add_image("Prediction", torch.sigmoid(first).cpu(), iteration)
        label = target[0][0]
        label = label[:1, middle].float() if label.dim() == 4 else label[None, middle].float() / max(1, label.max())
        writer.add_image("Label", label.cpu(), iteration)

    @torch.no_grad()
    def validate(self) -> Dict[str, float]:
        """Dice and IoU of the first target on the validation volume.

        Channel targets use their first channel at probability 0.5; a semantic target ('9-N')
        is scored as foreground (any class but 0) of the arg-max.
        """
        cfg = self.cfg
        self.model.eval()
        image = open_volume(split_names(cfg.DATASET.VAL_IMAGE_NAME, cfg.DATASET.INPUT_PATH, "DATASET.VAL_IMAGE_NAME")[0])
        label = open_volume(split_names(cfg.DATASET.VAL_LABEL_NAME, cfg.DATASET.INPUT_PATH, "DATASET.VAL_LABEL_NAME")[0])
        path = os.path.join(self.output_dir, "validation.h5")
        if os.path.exists(path + ".partial"):
            os.remove(path + ".partial")  # left by a crash, computed with older weights
        window = tuple(cfg.MODEL.INPUT_SIZE)
        predict_to_hdf5(self.model, [image], path, window, tuple(max(1, w // 2) for w in window), sum(self.channels),
                        make_activation(["sigmoid"] * len(self.channels), self.channels), device=self.device)
        code = cfg.MODEL.TARGET_OPT[0]
        truth = make_target(read_whole(label), code)
        with h5py.File(path, "r") as f:
            if truth.dtype == np.int64:  # semantic: no channel axis
                prediction = f["vol0"][: self.channels[0]].argmax(0) > 0
            else:
                prediction = f["vol0"][0] >= 128
        os.remove(path)
        return dice_iou(prediction, target_foreground(truth))


def main_train(cfg, checkpoint: Optional[str] = None, distributed: bool = False) -> None:
    """Train with our engine (``scripts/main.py`` without PyTC); under torchrun with ``distributed``."""
    rank, world_size, device = init_distributed() if distributed else (0, 1, default_device())
    try:
        Trainer(cfg, device, checkpoint, rank, world_size).train()
    finally:
        if distributed:
            dist.destroy_process_group()


def main_infer(cfg, checkpoint: Optional[str], distributed: bool = False) -> str:
    """Predict ``INFERENCE.IMAGE_NAME`` into ``INFERENCE.OUTPUT_PATH/OUTPUT_NAME`` (datasets ``vol0``, ...).

    Under torchrun with ``distributed``, the ranks share the output's blocks and rank 0 joins them.
    """
    if checkpoint is None:
        raise SystemExit("--inference needs --checkpoint.")
    # Ranks wait for the slowest one before rank 0 joins the files: that can take hours.
    rank, world_size, device = init_distributed(INFERENCE_TIMEOUT) if distributed else (0, 1, default_device())
    try:
        inference = cfg.INFERENCE
        model = build_mednext(cfg).to(device)
        state = load_checkpoint(checkpoint)
        model.load_state_dict(state["state_dict"])
        model.eval()
        channels = TargetCriterion.from_cfg(cfg).channels
        window = tuple(inference.INPUT_SIZE or cfg.MODEL.INPUT_SIZE)
        os.makedirs(inference.OUTPUT_PATH, exist_ok=True)
        output = os.path.join(inference.OUTPUT_PATH, inference.OUTPUT_NAME)
        names = split_names(inference.IMAGE_NAME, cfg.DATASET.INPUT_PATH, "INFERENCE.IMAGE_NAME")
        pad_key = "INFERENCE.PAD_SIZE" if inference.PAD_SIZE is not None else "DATASET.PAD_SIZE"
        pad = pad_widths(inference.PAD_SIZE if inference.PAD_SIZE is not None else cfg.DATASET.PAD_SIZE, pad_key)
        predictor, activation = with_test_time_augmentation(
            model, make_activation(list(inference.OUTPUT_ACT), channels), inference.AUG_NUM, inference.AUG_MODE)
        predict_to_hdf5(predictor, [open_volume(name) for name in names], output, window, tuple(inference.STRIDE),
                        sum(channels), activation, inference.SAMPLES_PER_BATCH, inference.BLENDING, device,
                        source=f"{os.path.abspath(checkpoint)}@{state.get('iteration')}", pad=pad,
                        pad_mode=cfg.DATASET.PAD_MODE, unpad=inference.UNPAD,
                        block_size=tuple(inference.STREAM_BLOCK_SIZE), rank=rank, world_size=world_size)
    finally:
        if distributed:
            dist.destroy_process_group()
    if rank == 0:
        print(f"Prediction saved as: {output}")
    return output
