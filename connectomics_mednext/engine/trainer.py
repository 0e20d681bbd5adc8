"""Our training loop: PyTC's config, checkpoints and TensorBoard layout, without PyTC."""
import os
import time
from datetime import timedelta
from typing import Dict, Optional, Tuple

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
from ..data.volumes import (
    check_finite,
    check_image_dtype,
    open_volume,
    read_whole,
    split_names,
)
from ..errors import ConfigError, InputError, UserError, look_up_option
from ..losses import DeepSupervisionLoss, resample_modes_for_targets
from ..losses.criterion import TargetCriterion
from ..segment.decoders import DECODERS
from ..segment.run import segment_file
from ..solver import build_native_solver, resume_solver
from .checkpoint import (
    checkpoint_path,
    load_checkpoint,
    load_weights_into,
    remove_stale_temporaries,
    save_checkpoint,
)
from .distributed import default_device, init_distributed
from .inference import make_activation, predict_to_hdf5
from .stop_signals import StopRequest
from .tta import with_test_time_augmentation

INFERENCE_TIMEOUT = timedelta(hours=24)
# Consecutive steps with a NaN or infinite gradient that are skipped before training stops.
MAX_SKIPPED_STEPS = 5


class NonFiniteLoss(UserError, RuntimeError):
    """Training diverged (a NaN or infinite loss, gradient or weight); nothing was saved from it."""


def _clip_gradients(cfg, model: torch.nn.Module) -> None:
    clip = cfg.SOLVER.CLIP_GRADIENTS
    if not clip.ENABLED:
        return
    clipper = look_up_option("SOLVER.CLIP_GRADIENTS.CLIP_TYPE", clip.CLIP_TYPE, GRADIENT_CLIPPERS)
    clipper(model.parameters(), clip)


# SOLVER.CLIP_GRADIENTS.CLIP_TYPE -> clipper. 'norm' clips the global norm over all parameters,
# as the MedNeXt recipe does (PyTC clips each parameter's norm on its own).
GRADIENT_CLIPPERS = {
    "norm": lambda params, clip: torch.nn.utils.clip_grad_norm_(params, clip.CLIP_VALUE, clip.NORM_TYPE),
    "value": lambda params, clip: torch.nn.utils.clip_grad_value_(params, clip.CLIP_VALUE),
}


# MODEL.AMP_DTYPE -> autocast dtype per device type; float16 gets a GradScaler.
AMP_DTYPES = {
    "auto": {"cuda": torch.float16, "cpu": torch.bfloat16},
    "bfloat16": {"cuda": torch.bfloat16, "cpu": torch.bfloat16},
    "float16": {"cuda": torch.float16},
}


def amp_dtype(cfg, device: torch.device) -> torch.dtype:
    """The autocast dtype ``MODEL.AMP_DTYPE`` asks for on ``device``."""
    choice = cfg.MODEL.AMP_DTYPE
    per_device = look_up_option("MODEL.AMP_DTYPE", choice, AMP_DTYPES)
    if device.type not in per_device:
        raise ConfigError(f"MODEL.AMP_DTYPE {choice!r} needs a GPU; on {device.type} use 'bfloat16' or 'auto'.")
    return per_device[device.type]


def dice_iou(prediction: np.ndarray, truth: np.ndarray) -> Dict[str, float]:
    """Dice and IoU of two boolean arrays (1.0 when both are empty)."""
    intersection = float(np.logical_and(prediction, truth).sum())
    total = float(prediction.sum() + truth.sum())
    union = total - intersection
    return {"dice": 2 * intersection / total if total else 1.0, "iou": intersection / union if union else 1.0}


def make_output_folder(path: str, key: str) -> None:
    """Create the folder ``key`` names, or raise one sentence saying why it cannot be written.

    Args:
        path: the folder.
        key: its config key, for the message.
    """
    try:
        os.makedirs(path, exist_ok=True)
    except OSError as error:
        raise InputError(f"{key} {path!r} cannot be created ({error.strerror}).") from error
    if not os.access(path, os.W_OK):
        raise InputError(f"{key} {path!r} is not writable.")


class Trainer:
    """Train a MedNeXt from a config, as PyTC's Trainer does, with our data, loss and solver.

    Each training step is proven before it is kept: a checkpoint is written only after the
    weights it holds have given a finite loss on the next batch, so no saved checkpoint can
    turn NaN on resume. SIGTERM or SIGINT stop at the next step with a checkpoint.

    Args:
        cfg: the frozen config.
        device: where to train.
        checkpoint: a checkpoint to resume from (ours or PyTC's layout).
        rank: this process's rank under DDP (rank 0 logs, validates and writes).
        world_size: number of DDP processes; 1 trains without DDP.
        seed: the run's seed; crops and augmentation of rank ``r`` come from ``(seed, r)``.
            Weight initialisation is seeded by the caller, before the model is built.
    """

    def __init__(self, cfg, device: torch.device, checkpoint: Optional[str] = None, rank: int = 0,
                 world_size: int = 1, seed: int = 0) -> None:
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
        self.sampler = CropSampler(cfg, seed=(seed, rank))  # a different crop stream per rank
        if cfg.DATASET.VAL_IMAGE_NAME:  # refuse bad validation volumes now, not hours into the run
            self._validation_volumes()
        self.start_iter = cfg.MODEL.PRE_MODEL_ITER
        self.newest_checkpoint: Optional[str] = None
        self.bad_gradients = 0  # consecutive steps skipped for a non-finite gradient
        self.amp_dtype = amp_dtype(cfg, device) if cfg.MODEL.MIXED_PRECESION else None
        self.scaler = torch.amp.GradScaler(device.type) if self.amp_dtype == torch.float16 else None
        if checkpoint is not None:
            self._resume(load_checkpoint(checkpoint), checkpoint)

    def _resume(self, state, path: str) -> None:
        load_weights_into(self.model, state, path)
        if "optimizer" in state and "lr_scheduler" in state:
            changes = resume_solver(self.optimizer, self.scheduler, state["optimizer"], state["lr_scheduler"], path)
            if changes and self.is_main:
                print(f"Resuming {path!r} with the config's {', '.join(changes)}; the checkpoint's optimizer "
                      "moments and schedule progress are kept.", flush=True)
        self.start_iter = int(state.get("iteration", self.start_iter))
        self.newest_checkpoint = path
        if self.scaler is not None and "scaler" in state:
            # The loss scale learnt so far; a fresh one would spend steps overflowing again.
            self.scaler.load_state_dict(state["scaler"])
        rng = state.get("rng")
        if rng is not None:
            torch.set_rng_state(rng["torch"])
            states = rng["sampler"]
            self.sampler.state = states[self.rank % len(states)]

    def save(self, iteration: int, crops_state: dict) -> str:
        """Write ``checkpoint_<iteration>.pth.tar`` (rank 0) and return its path; every rank must call it.

        Args:
            iteration: iterations done.
            crops_state: this rank's crop generator state from before the next batch was drawn.
        """
        states = [crops_state]
        if self.world_size > 1:
            states = [None] * self.world_size
            dist.all_gather_object(states, crops_state)
        if not all(torch.isfinite(p).all() for p in self.model.parameters()):
            raise self._diverged(f"The weights became NaN or infinite by iteration {iteration}")
        path = checkpoint_path(self.output_dir, iteration)
        if self.is_main:
            save_checkpoint(path, iteration, self.model, self.optimizer, self.scheduler, states, self.cfg.dump(),
                            self.scaler)
            print(f"[Iteration {iteration:05d}] saved {path}", flush=True)
        self.newest_checkpoint = path
        return path

    def _diverged(self, what: str) -> NonFiniteLoss:
        newest = self.newest_checkpoint
        where = (f"the newest checkpoint, with finite weights, is {newest!r}" if newest and os.path.isfile(newest)
                 else "no checkpoint was written")
        return NonFiniteLoss(f"{what}; training stopped without saving, and {where}. Lower SOLVER.BASE_LR or "
                             "check the data.")

    def _agree(self, finite: bool, stop: bool) -> Tuple[bool, bool]:
        """(every rank's loss is finite, some rank was asked to stop): all ranks act on the same answer."""
        flags = torch.tensor([float(not finite), float(stop)], device=self.device)
        if self.world_size > 1:  # every rank must stop together, or the others wait forever
            dist.all_reduce(flags, op=dist.ReduceOp.MAX)
        return not bool(flags[0]), bool(flags[1])

    def _forward(self):
        start = time.perf_counter()
        image, target, weight = self.sampler.sample(self.cfg.SOLVER.SAMPLES_PER_BATCH)
        data_time = time.perf_counter() - start
        with torch.autocast(self.device.type, dtype=self.amp_dtype or torch.float32, enabled=self.amp_dtype is not None):
            pred = self.network(image.to(self.device))
            loss, losses_vis = self.criterion(pred, target, weight)
        return loss, losses_vis, pred, image, target, data_time

    def _apply(self, loss: torch.Tensor, iteration: int) -> None:
        """Backward, clip and step; a step whose gradient is not finite is skipped (the weights stay, the
        schedule moves on, as with GradScaler), and :data:`MAX_SKIPPED_STEPS` in a row stop training."""
        self.optimizer.zero_grad(set_to_none=True)
        if self.scaler is not None:
            # The scaler skips steps with non-finite gradients itself and lowers its scale.
            self.scaler.scale(loss).backward()
            self.scaler.unscale_(self.optimizer)
            _clip_gradients(self.cfg, self.model)
            self.scaler.step(self.optimizer)
            self.scaler.update()
        else:
            loss.backward()
            norm = torch.nn.utils.get_total_norm([p.grad for p in self.model.parameters() if p.grad is not None])
            if torch.isfinite(norm):
                self.bad_gradients = 0
                _clip_gradients(self.cfg, self.model)
                self.optimizer.step()
            else:
                # As GradScaler does for fp16: the step is skipped and the weights stay as they were;
                # only a run of such steps means the training has diverged.
                self.bad_gradients += 1
                if self.bad_gradients >= MAX_SKIPPED_STEPS:
                    raise self._diverged(f"The gradient norm was {norm.item()} for {self.bad_gradients} steps in a "
                                         f"row, up to iteration {iteration}")
                if self.is_main:
                    print(f"[Iteration {iteration:05d}] skipped: the gradient norm is {norm.item()}; the weights are "
                          "unchanged.", flush=True)
        self.scheduler.step()

    def _proven_final_save(self, iteration: int) -> str:
        """Check the last weights on one more batch (its crops are put back), then save them."""
        crops_state = self.sampler.state
        with torch.no_grad():
            loss = self._forward()[0]
        self.sampler.state = crops_state
        finite, _ = self._agree(bool(torch.isfinite(loss.detach())), False)
        if not finite:
            raise self._diverged(f"The loss became {loss.item()} after iteration {iteration}")
        return self.save(iteration, crops_state)

    def train(self) -> Optional[str]:
        """Run from the start (or resumed) iteration to ``SOLVER.ITERATION_TOTAL``; return the last checkpoint.

        Returns None (and says so) when the resumed checkpoint is already at the total.
        """
        cfg = self.cfg
        total = cfg.SOLVER.ITERATION_TOTAL
        if self.start_iter >= total:
            if self.is_main:
                print(f"Nothing to train: the checkpoint is at iteration {self.start_iter} and SOLVER.ITERATION_TOTAL "
                      f"is {total}; raise SOLVER.ITERATION_TOTAL to train longer.", flush=True)
            return None
        if self.is_main:
            make_output_folder(self.output_dir, "DATASET.OUTPUT_PATH")
            for stale in remove_stale_temporaries(self.output_dir):
                print(f"Removed {stale!r}, left by a run killed while saving.", flush=True)
        writer = SummaryWriter(os.path.join(self.output_dir, "log")) if self.is_main else None
        self.model.train()
        began = time.perf_counter()
        iteration = self.start_iter
        save_due = False
        try:
            with StopRequest() as stop:
                while iteration < total:
                    crops_state = self.sampler.state
                    loss, losses_vis, pred, image, target, data_time = self._forward()
                    finite, stopping = self._agree(bool(torch.isfinite(loss.detach())), stop.requested)
                    if not finite:
                        raise self._diverged(f"The loss became {loss.item()} at iteration {iteration + 1}")
                    # This batch's finite loss proves the weights of the previous step: now they may be saved.
                    if save_due or stopping:
                        path = self.save(iteration, crops_state)
                        save_due = False
                    if stopping:
                        if self.is_main:
                            print(f"Stopped by {stop.name or 'another rank'} at iteration {iteration}: saved {path}; "
                                  f"resume with --checkpoint {path}", flush=True)
                        raise SystemExit(stop.exit_code if stop.requested else 1)
                    self._apply(loss, iteration + 1)
                    iteration += 1
                    save_due = iteration % cfg.SOLVER.ITERATION_SAVE == 0
                    if self.is_main:
                        self._log(writer, iteration, loss, losses_vis, pred, image, target, data_time, began)
                path = self._proven_final_save(iteration)
        finally:
            if writer is not None:
                writer.close()
        if self.is_main:
            print(f"Training finished at iteration {iteration}: saved {path}", flush=True)
        return path

    def _log(self, writer, iteration: int, loss, losses_vis, pred, image, target, data_time: float,
             began: float) -> None:
        cfg = self.cfg
        scalar_every, image_every = cfg.MONITOR.ITERATION_NUM
        total = cfg.SOLVER.ITERATION_TOTAL
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

    def _log_images(self, writer, image, target, pred, iteration: int) -> None:
        full = pred if isinstance(pred, torch.Tensor) else next(iter(pred.values()))
        middle = image.shape[2] // 2
        writer.add_image("Input", (image[0, :, middle] * 0.5 + 0.5).clamp(0, 1), iteration)
        first = torch.split(full.detach().float(), self.channels, dim=1)[0][0, :1, middle]
        writer.add_image("Prediction", torch.sigmoid(first).cpu(), iteration)
        label = target[0][0]
        label = label[:1, middle].float() if label.dim() == 4 else label[None, middle].float() / max(1, label.max())
        writer.add_image("Label", label.cpu(), iteration)

    def _validation_volumes(self):
        data = self.cfg.DATASET
        image = open_volume(split_names(data.VAL_IMAGE_NAME, data.INPUT_PATH, "DATASET.VAL_IMAGE_NAME")[0])
        label = open_volume(split_names(data.VAL_LABEL_NAME, data.INPUT_PATH, "DATASET.VAL_LABEL_NAME")[0])
        check_image_dtype(image, "DATASET.VAL_IMAGE_NAME")
        check_finite(label, "DATASET.VAL_LABEL_NAME")
        return image, label

    @torch.no_grad()
    def validate(self) -> Dict[str, float]:
        """Dice and IoU of the first target on the validation volume.

        Channel targets use their first channel at probability 0.5; a semantic target ('9-N')
        is scored as foreground (any class but 0) of the arg-max.
        """
        cfg = self.cfg
        self.model.eval()
        image, label = self._validation_volumes()
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


def main_train(cfg, checkpoint: Optional[str] = None, distributed: bool = False, seed: int = 0) -> Optional[str]:
    """Train with our engine (``scripts/main.py`` without PyTC); under torchrun with ``distributed``.

    Args:
        cfg: the frozen config.
        checkpoint: a checkpoint to resume from.
        distributed: join torchrun's process group.
        seed: seeds weight initialisation (the same on every rank) and each rank's crops.
    """
    rank, world_size, device = init_distributed() if distributed else (0, 1, default_device())
    try:
        torch.manual_seed(seed)
        path = Trainer(cfg, device, checkpoint, rank, world_size, seed).train()
        if distributed:
            # Rank 0 writes the last checkpoint while the others are done; tearing gloo down
            # under a peer that is still busy can abort that peer.
            dist.barrier()
        return path
    finally:
        if distributed:
            dist.destroy_process_group()


def main_infer(cfg, checkpoint: Optional[str], distributed: bool = False) -> str:
    """Predict ``INFERENCE.IMAGE_NAME`` into ``INFERENCE.OUTPUT_PATH/OUTPUT_NAME`` (datasets ``vol0``, ...).

    Under torchrun with ``distributed``, the ranks share the output's blocks and rank 0 joins them.
    """
    if checkpoint is None:
        raise ConfigError("--inference needs --checkpoint naming the weights to predict with.")
    inference = cfg.INFERENCE
    if inference.DECODE is not None:
        look_up_option("INFERENCE.DECODE", inference.DECODE, DECODERS)
    names = split_names(inference.IMAGE_NAME, cfg.DATASET.INPUT_PATH, "INFERENCE.IMAGE_NAME")
    volumes = [open_volume(name) for name in names]
    for volume in volumes:
        check_image_dtype(volume, "INFERENCE.IMAGE_NAME")
    model = build_mednext(cfg)
    load_weights_into(model, load_checkpoint(checkpoint), checkpoint)
    channels = TargetCriterion.from_cfg(cfg).channels
    pad_key = "INFERENCE.PAD_SIZE" if inference.PAD_SIZE is not None else "DATASET.PAD_SIZE"
    pad = pad_widths(inference.PAD_SIZE if inference.PAD_SIZE is not None else cfg.DATASET.PAD_SIZE, pad_key)
    window = tuple(inference.INPUT_SIZE or cfg.MODEL.INPUT_SIZE)
    try:
        model.check_input_size(window)
    except ValueError as error:
        key = "INFERENCE.INPUT_SIZE" if inference.INPUT_SIZE else "MODEL.INPUT_SIZE"
        raise ConfigError(f"{key} {list(window)} does not fit MedNeXt: {error}") from error
    make_output_folder(inference.OUTPUT_PATH, "INFERENCE.OUTPUT_PATH")
    output = os.path.join(inference.OUTPUT_PATH, inference.OUTPUT_NAME)
    # Ranks wait for the slowest one before rank 0 joins the files: that can take hours.
    rank, world_size, device = init_distributed(INFERENCE_TIMEOUT) if distributed else (0, 1, default_device())
    try:
        model.to(device).eval()
        predictor, activation = with_test_time_augmentation(
            model, make_activation(list(inference.OUTPUT_ACT), channels), inference.AUG_NUM, inference.AUG_MODE)
        identity = {"output_act": list(inference.OUTPUT_ACT), "aug_num": inference.AUG_NUM,
                    "aug_mode": inference.AUG_MODE}
        predict_to_hdf5(predictor, volumes, output, window, tuple(inference.STRIDE), sum(channels), activation,
                        inference.SAMPLES_PER_BATCH, inference.BLENDING, device, identity=identity, pad=pad,
                        pad_mode=cfg.DATASET.PAD_MODE, unpad=inference.UNPAD,
                        block_size=tuple(inference.STREAM_BLOCK_SIZE), rank=rank, world_size=world_size)
    finally:
        if distributed:
            dist.destroy_process_group()
    if rank == 0:
        print(f"Prediction saved as: {output}")
        if inference.DECODE is not None:
            for index in range(len(volumes)):
                labels = segmentation_path(output, index, len(volumes))
                count = segment_file(output, labels, inference.DECODE, dataset=f"vol{index}")
                print(f"Segmentation saved as: {labels} ({count} objects, INFERENCE.DECODE {inference.DECODE})")
    return output


def segmentation_path(prediction: str, index: int, volumes: int) -> str:
    """``<name>_seg.h5`` beside the prediction (``<name>_vol<i>_seg.h5`` when it holds several volumes)."""
    stem = os.path.splitext(prediction)[0]
    return f"{stem}_seg.h5" if volumes == 1 else f"{stem}_vol{index}_seg.h5"
