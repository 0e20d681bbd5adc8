"""Our training loop: PyTC's config, checkpoints and TensorBoard layout, without PyTC.

:class:`Trainer.train` is a list of named steps (forward, agree, save, optimizer step, log,
validate) and hooks (:meth:`Trainer.on_train_start`, :meth:`Trainer.on_iteration_end`,
:meth:`Trainer.on_train_end`, as nnU-Net's trainer has) that a reader can find and a subclass
can change.
"""

import logging
import os
import time
from dataclasses import dataclass
from typing import Dict, Optional, Tuple

import numpy as np
import torch
import torch.distributed as dist
from torch.nn.parallel import DistributedDataParallel
from torch.utils.tensorboard import SummaryWriter
from yacs.config import CfgNode as CN

from ..build import build_mednext, deep_supervision_weights
from ..data.sampler import CropSampler
from ..data.targets import make_target, target_foreground
from ..errors import ConfigError, UserError, WriteError, argument, look_up_option
from ..evaluate.voxel import overlap_scores
from ..io import OutputLock, check_image_dtype, check_labels, open_volume, read_whole, split_names
from ..log import add_text_log, get_logger, remove_text_log
from ..losses import DeepSupervisionLoss, resample_modes_for_targets
from ..losses.criterion import TargetCriterion
from ..solver import build_native_solver, resume_solver
from .checkpoint import (
    NEWEST,
    check_output_folder,
    checkpoint_path,
    load_checkpoint,
    load_weights_into,
    remove_stale_temporaries,
    resolve_newest,
    save_checkpoint,
)
from .distributed import default_device, init_distributed
from .inference import inference_window, make_activation
from .output_folder import make_output_folder
from .predictor import PlaneByPlane, Predictor, SlidingWindow
from .stop_signals import StopRequest, TrainingStopped

logger = get_logger(__name__)
# Consecutive steps with a NaN or infinite gradient that are skipped before training stops.
MAX_SKIPPED_STEPS = 5
# Iteration lines always printed at the start of a run, whatever MONITOR.ITERATION_NUM says.
FIRST_LINES = 3


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


@dataclass
class ForwardStep:
    """One batch through the network: what the loss, the log and TensorBoard need.

    Args:
        loss: the total loss.
        losses: its named parts, for TensorBoard.
        prediction: the network's output.
        image: the input batch.
        target: the targets.
        data_time: seconds spent drawing the batch.
    """

    loss: torch.Tensor
    losses: Dict[str, float]
    prediction: object
    image: torch.Tensor
    target: list
    data_time: float

    @property
    def finite(self) -> bool:
        return bool(torch.isfinite(self.loss.detach()))


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

    def __init__(
        self,
        cfg: CN,
        device: torch.device,
        checkpoint: Optional[str] = None,
        rank: int = 0,
        world_size: int = 1,
        seed: int = 0,
    ) -> None:
        self.cfg = cfg
        self.device = device
        self.rank, self.world_size = rank, world_size
        self.is_main = rank == 0
        self.output_dir = cfg.DATASET.OUTPUT_PATH
        self.model = build_mednext(cfg).to(device)
        # Every parameter is used in each step (dummy_tensor needs no grad): no unused-parameter search.
        self.network = (
            self.model
            if world_size == 1
            else DistributedDataParallel(
                self.model, device_ids=[device.index] if device.type == "cuda" else None, find_unused_parameters=False
            )
        )
        self.optimizer, self.scheduler = build_native_solver(cfg, self.model)
        criterion = TargetCriterion.from_cfg(cfg)
        self.channels = criterion.channels
        weights = deep_supervision_weights(cfg)
        self.criterion = (
            criterion
            if weights is None
            else DeepSupervisionLoss(criterion, weights, resample_modes_for_targets(cfg.MODEL.TARGET_OPT))
        )
        self.sampler = CropSampler(cfg, seed=(seed, rank))  # a different crop stream per rank
        self.validation_window: Optional[SlidingWindow] = None
        if cfg.DATASET.VAL_IMAGE_NAME:  # refuse bad validation volumes and windows now, not hours into the run
            image, _ = self._validation_volumes()
            self.validation_window = inference_window(cfg, self.model)
            self.validation_window.check_fits(image)
        self.start_iter = cfg.MODEL.PRE_MODEL_ITER
        self.newest_checkpoint: Optional[str] = None
        self.bad_gradients = 0  # consecutive steps skipped for a non-finite gradient
        self.amp_dtype = amp_dtype(cfg, device) if cfg.MODEL.MIXED_PRECESION else None
        self.scaler = torch.amp.GradScaler(device.type) if self.amp_dtype == torch.float16 else None
        print_lines, tensorboard, text_log = cfg.MONITOR.LOG_OPT
        # PyTC's LOG_OPT: [print iteration lines, TensorBoard, text log].
        self.iteration_level = logging.INFO if print_lines == 1 else logging.DEBUG
        self.use_tensorboard, self.use_text_log = tensorboard > 0, text_log > 0
        self.writer: Optional[SummaryWriter] = None
        if checkpoint is not None:
            self._resume(load_checkpoint(checkpoint), checkpoint)

    def _resume(self, state, path: str) -> None:
        load_weights_into(self.model, state, path)
        if "optimizer" in state and "lr_scheduler" in state:
            changes = resume_solver(self.optimizer, self.scheduler, state["optimizer"], state["lr_scheduler"], path)
            if changes:
                logger.info(
                    f"Resuming {path!r} with the config's {', '.join(changes)}; the checkpoint's optimizer "
                    "moments and schedule progress are kept."
                )
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

    # The loop and its steps, in the order they run.

    def train(self) -> Optional[str]:
        """Run from the start (or resumed) iteration to ``SOLVER.ITERATION_TOTAL``; return the last checkpoint.

        Returns None (and says so) when the resumed checkpoint is already at the total.
        """
        total = self.cfg.SOLVER.ITERATION_TOTAL
        if self.start_iter >= total:
            logger.info(
                f"Nothing to train: the checkpoint is at iteration {self.start_iter} and "
                f"SOLVER.ITERATION_TOTAL is {total}; raise SOLVER.ITERATION_TOTAL to train longer."
            )
            return None
        text_log = self.open_outputs()
        self.on_train_start()
        began = time.perf_counter()
        iteration = self.start_iter
        save_due = False
        try:
            with StopRequest() as stop:
                while iteration < total:
                    crops_state = self.sampler.state
                    step = self.forward_step()
                    finite, stopping = self.agree(step.finite, stop.requested)
                    if not finite:
                        raise self._diverged(f"The loss became {step.loss.item()} at iteration {iteration + 1}")
                    # This batch's finite loss proves the weights of the previous step: now they may be saved.
                    if save_due or stopping:
                        path = self.save(iteration, crops_state)
                        save_due = False
                    if stopping:
                        message = (
                            f"Stopped by {stop.name or 'another rank'} at iteration {iteration}: saved "
                            f"{path}; resume with --checkpoint {path}"
                        )
                        logger.info(message)
                        raise TrainingStopped(message, stop.exit_code if stop.requested else 1)
                    self.optimizer_step(step.loss, iteration + 1)
                    iteration += 1
                    save_due = iteration % self.cfg.SOLVER.ITERATION_SAVE == 0
                    self.on_iteration_end(iteration, step, began)
                path = self.save_final(iteration)
        finally:
            self.close_outputs(text_log)
        self.on_train_end(iteration, path, step, began)
        return path

    # Hooks a subclass may override, as nnU-Net's trainer has: at the start, after each
    # iteration and at the end of training.

    def on_train_start(self) -> None:
        """After the outputs are open, before the first iteration: the banner, and the model in training mode."""
        self.log_start()
        self.model.train()

    def on_iteration_end(self, iteration: int, step: "ForwardStep", began: float) -> None:
        """After each optimizer step: rank 0 logs, and validates every ``SOLVER.ITERATION_VAL`` iterations.

        Args:
            iteration: iterations done.
            step: this iteration's forward step.
            began: ``time.perf_counter()`` when training began.
        """
        if not self.is_main:
            return
        self.log(iteration, step, began)
        if self.cfg.DATASET.VAL_IMAGE_NAME and iteration % self.cfg.SOLVER.ITERATION_VAL == 0:
            self.log_validation(iteration, self.validate())

    def on_train_end(self, iteration: int, path: str, step: "ForwardStep", began: float) -> None:
        """After the last checkpoint is saved: the closing summary.

        Args:
            iteration: iterations done.
            path: the last checkpoint.
            step: the last iteration's forward step.
            began: ``time.perf_counter()`` when training began.
        """
        elapsed = time.perf_counter() - began
        logger.info(
            f"Training finished at iteration {iteration}: saved {path} ({elapsed / 60:.1f} min, "
            f"{elapsed / max(1, iteration - self.start_iter):.2f} s per iteration, last loss "
            f"{step.loss.item():.5f})"
        )

    def log_start(self) -> None:
        """Rank 0: what is trained where, from where to where, and where the outputs go."""
        cfg, model = self.cfg, self.model
        parameters = sum(p.numel() for p in model.parameters())
        device = f"{self.device} ({torch.get_num_threads()} threads)" if self.device.type == "cpu" else str(self.device)
        batch = cfg.SOLVER.SAMPLES_PER_BATCH
        start = f"resumed from {self.newest_checkpoint!r}" if self.newest_checkpoint else "a fresh start"
        logger.info(
            f"Training MedNeXt-{cfg.MODEL.MEDNEXT_SIZE} ({parameters:,} parameters, deep supervision "
            f"{'on' if cfg.MODEL.DEEP_SUPERVISION else 'off'}) on {device}, {self.world_size} process(es)"
        )
        logger.info(
            f"Batch {batch} per process ({batch * self.world_size} in all); iterations {self.start_iter} to "
            f"{cfg.SOLVER.ITERATION_TOTAL} ({start}); a checkpoint every {cfg.SOLVER.ITERATION_SAVE}"
        )
        board = f"; TensorBoard: tensorboard --logdir {os.path.join(self.output_dir, 'log')}" if self.writer else ""
        logger.info(f"Output folder {self.output_dir}{board}")

    def open_outputs(self) -> Optional[logging.Handler]:
        """Rank 0: the output folder (clear of temporaries a killed save left), TensorBoard and the text log."""
        if not self.is_main:
            return None
        make_output_folder(self.output_dir, "DATASET.OUTPUT_PATH")
        for stale in remove_stale_temporaries(self.output_dir):
            logger.info(f"Removed {stale!r}, left by a run killed while saving.")
        log_dir = os.path.join(self.output_dir, "log")
        if self.use_tensorboard:
            self.writer = SummaryWriter(log_dir)
        if not self.use_text_log:
            return None
        make_output_folder(log_dir, "DATASET.OUTPUT_PATH")
        return add_text_log(os.path.join(log_dir, "log.txt"))

    def close_outputs(self, text_log: Optional[logging.Handler]) -> None:
        if self.writer is not None:
            self.writer.close()
            self.writer = None
        remove_text_log(text_log)

    def forward_step(self) -> ForwardStep:
        """Draw a batch and compute the loss (under autocast when mixed precision is on)."""
        start = time.perf_counter()
        image, target, weight = self.sampler.sample(self.cfg.SOLVER.SAMPLES_PER_BATCH)
        data_time = time.perf_counter() - start
        with torch.autocast(
            self.device.type, dtype=self.amp_dtype or torch.float32, enabled=self.amp_dtype is not None
        ):
            prediction = self.network(image.to(self.device))
            loss, losses = self.criterion(prediction, target, weight)
        return ForwardStep(loss, losses, prediction, image, target, data_time)

    def agree(self, finite: bool, stop: bool) -> Tuple[bool, bool]:
        """(every rank's loss is finite, some rank was asked to stop): all ranks act on the same answer.

        Args:
            finite: this rank's loss is finite.
            stop: this rank received SIGTERM or SIGINT.
        """
        flags = torch.tensor([float(not finite), float(stop)], device=self.device)
        if self.world_size > 1:  # every rank must stop together, or the others wait forever
            dist.all_reduce(flags, op=dist.ReduceOp.MAX)
        return not bool(flags[0]), bool(flags[1])

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
            try:
                save_checkpoint(
                    path, iteration, self.model, self.optimizer, self.scheduler, states, self.cfg.dump(), self.scaler
                )
            except WriteError as error:
                newest = self.newest_checkpoint
                kept = (
                    f"the previous checkpoint {newest!r} is intact: free space and resume with "
                    f"{argument('checkpoint')} {newest}"
                    if newest
                    else "no earlier checkpoint exists: free space and run again"
                )
                raise WriteError(f"{error}; {kept}.") from error
            logger.info(f"[Iteration {iteration:05d}] saved {path}")
        self.newest_checkpoint = path
        return path

    def optimizer_step(self, loss: torch.Tensor, iteration: int) -> None:
        """Backward, clip and step; a step whose gradient is not finite is skipped (the weights stay, the
        schedule moves on, as with GradScaler), and :data:`MAX_SKIPPED_STEPS` in a row stop training.

        Args:
            loss: this step's loss.
            iteration: the iteration this step completes, for messages.
        """
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
                    raise self._diverged(
                        f"The gradient norm was {norm.item()} for {self.bad_gradients} steps in a "
                        f"row, up to iteration {iteration}"
                    )
                logger.info(
                    f"[Iteration {iteration:05d}] skipped: the gradient norm is {norm.item()}; the weights "
                    "are unchanged."
                )
        self.scheduler.step()

    def log(self, iteration: int, step: ForwardStep, began: float) -> None:
        """Rank 0: the iteration line (every ``MONITOR.ITERATION_NUM[0]``, the first few and the last), and
        TensorBoard scalars and images every ``MONITOR.ITERATION_NUM``.

        Args:
            iteration: iterations done.
            step: this iteration's forward step.
            began: ``time.perf_counter()`` when the loop started, for the ETA.
        """
        scalar_every, image_every = self.cfg.MONITOR.ITERATION_NUM
        total = self.cfg.SOLVER.ITERATION_TOTAL
        lr = self.optimizer.param_groups[0]["lr"]
        if self.writer is not None and iteration % scalar_every == 0:
            self.writer.add_scalar("Loss", step.loss.item(), iteration)
            self.writer.add_scalar("Learning Rate", lr, iteration)
            self.writer.add_scalar("Data Time", step.data_time, iteration)
            for name, value in step.losses.items():
                self.writer.add_scalar(f"Loss/{name}", float(value), iteration)
        if self.writer is not None and iteration % image_every == 0:
            self._log_images(step, iteration)
        elapsed = time.perf_counter() - began
        eta = elapsed / (iteration - self.start_iter) * (total - iteration)
        # Every MONITOR.ITERATION_NUM[0] iterations, the first few and the last; the rest reach the text log.
        shown = iteration % scalar_every == 0 or iteration - self.start_iter <= FIRST_LINES or iteration == total
        logger.log(
            self.iteration_level if shown else logging.DEBUG,
            f"[Iteration {iteration:05d}/{total}] "
            f"loss={step.loss.item():.5f} lr={lr:.2e} data={step.data_time:.3f}s ETA {eta / 60:.1f} min",
        )

    def _log_images(self, step: ForwardStep, iteration: int) -> None:
        prediction, image = step.prediction, step.image
        full = prediction if isinstance(prediction, torch.Tensor) else next(iter(prediction.values()))
        # The middle z plane of 3D crops; 2D crops are one plane already.
        plane = (lambda t, axis: t.select(axis, t.shape[axis] // 2)) if image.dim() == 5 else (lambda t, axis: t)
        self.writer.add_image("Input", (plane(image[0], 1) * 0.5 + 0.5).clamp(0, 1), iteration)
        first = plane(torch.split(full.detach().float(), self.channels, dim=1)[0][0, :1], 1)
        self.writer.add_image("Prediction", torch.sigmoid(first).cpu(), iteration)
        label = step.target[0][0]
        channels_first = label.dim() == image.dim() - 1  # a channel target, not semantic classes
        label = plane(label[:1], 1).float() if channels_first else plane(label[None], 1).float() / max(1, label.max())
        self.writer.add_image("Label", label.cpu(), iteration)

    def _validation_volumes(self):
        data = self.cfg.DATASET
        image = open_volume(split_names(data.VAL_IMAGE_NAME, data.INPUT_PATH, "DATASET.VAL_IMAGE_NAME")[0])
        label = open_volume(split_names(data.VAL_LABEL_NAME, data.INPUT_PATH, "DATASET.VAL_LABEL_NAME")[0])
        check_image_dtype(image, "DATASET.VAL_IMAGE_NAME")
        check_labels(label, "DATASET.VAL_LABEL_NAME")
        return image, label

    @torch.no_grad()
    def validate(self) -> Dict[str, float]:
        """Dice and IoU of the first target on the validation volume, predicted in memory.

        The sliding window is inference's (``INFERENCE.INPUT_SIZE``, ``STRIDE``, ``BLENDING`` and
        padding), without test-time flips, which would multiply the time of every validation.
        Channel targets use their first channel at probability 0.5; a semantic target ('9-N')
        is scored as foreground (any class but 0) of the arg-max.
        """
        self.model.eval()
        try:
            image, label = self._validation_volumes()
            network = PlaneByPlane(self.model) if self.cfg.DATASET.DO_2D else self.model
            activation = make_activation(["sigmoid"] * len(self.channels), self.channels)
            predictor = Predictor(network, activation, sum(self.channels), self.validation_window, self.device)
            probabilities = predictor.predict(image)
        finally:
            self.model.train()
        truth = make_target(read_whole(label), self.cfg.MODEL.TARGET_OPT[0])
        if truth.dtype == np.int64:  # semantic: no channel axis
            prediction = probabilities[: self.channels[0]].argmax(0) > 0
        else:
            prediction = probabilities[0] >= 0.5
        return overlap_scores(prediction, target_foreground(truth))

    def log_validation(self, iteration: int, scores: Dict[str, float]) -> None:
        """Rank 0: the validation line and its TensorBoard scalars.

        Args:
            iteration: iterations done.
            scores: from :meth:`validate`.
        """
        if self.writer is not None:
            for name, value in scores.items():
                self.writer.add_scalar(f"Validation/{name}", value, iteration)
        logger.info(f"[Iteration {iteration:05d}] validation Dice {scores['dice']:.4f} IoU {scores['iou']:.4f}")

    def save_final(self, iteration: int) -> str:
        """Check the last weights on one more batch (its crops are put back), then save them.

        Args:
            iteration: iterations done.
        """
        crops_state = self.sampler.state
        with torch.no_grad():
            loss = self.forward_step().loss
        self.sampler.state = crops_state
        finite, _ = self.agree(bool(torch.isfinite(loss.detach())), False)
        if not finite:
            raise self._diverged(f"The loss became {loss.item()} after iteration {iteration}")
        return self.save(iteration, crops_state)

    def _diverged(self, what: str) -> NonFiniteLoss:
        newest = self.newest_checkpoint
        where = (
            f"the newest checkpoint, with finite weights, is {newest!r}"
            if newest and os.path.isfile(newest)
            else "no checkpoint was written"
        )
        return NonFiniteLoss(
            f"{what}; training stopped without saving, and {where}. Lower SOLVER.BASE_LR or check the data."
        )


def main_train(cfg, checkpoint: Optional[str] = None, distributed: bool = False, seed: int = 0) -> Optional[str]:
    """Train with our engine (``scripts/main.py`` without PyTC); under torchrun with ``distributed``.

    Args:
        cfg: the frozen config.
        checkpoint: a checkpoint to resume from; ``"last"`` (:data:`~.checkpoint.NEWEST`) resumes the newest
            in ``DATASET.OUTPUT_PATH``, or starts afresh when there is none.
        distributed: join torchrun's process group.
        seed: seeds weight initialisation (the same on every rank) and each rank's crops.
    """
    if checkpoint == NEWEST:
        checkpoint = resolve_newest(checkpoint, cfg.DATASET.OUTPUT_PATH)
        logger.info(
            f"--checkpoint {NEWEST}: "
            + (
                f"resuming {checkpoint}"
                if checkpoint
                else f"no checkpoint yet in {cfg.DATASET.OUTPUT_PATH!r}, starting afresh"
            )
        )
    # Rank 0 writes the folder, so it alone holds its lock; under torchrun a rank that fails ends them all.
    output = cfg.DATASET.OUTPUT_PATH
    lock = OutputLock(os.path.join(output, ".lock"), "DATASET.OUTPUT_PATH", output)
    if int(os.environ.get("RANK", "0") if distributed else 0) == 0:
        make_output_folder(output, "DATASET.OUTPUT_PATH")
        lock.acquire()
    try:
        # Every rank checks, so that none starts a process group the others leave.
        check_output_folder(output, checkpoint)
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
    finally:
        lock.release()
