"""Streaming sliding-window prediction: a predictor configured once, then called on volumes.

The output is cut into blocks (:func:`~connectomics_mednext.geometry.plan_output_blocks`), and
each block is predicted from the grid windows over it (:mod:`.windows`). Within a block, windows
run in z order and a float buffer covers one window's depth of the block's y-x extent, so peak
memory is about ``(C + 1) * window_z * block_y * block_x * 4`` bytes, plus one input slab and
one batch, whatever the volume's size. Finished planes leave the buffer as probabilities for a
block target: an array in memory, or a prediction output of :mod:`connectomics_mednext.io`
(HDF5 or zarr), which stores them as uint8 (probability x 255) and records each block's
progress, so an interrupted run continues where it stopped. Under ``torch.distributed`` each
rank takes every N-th block.

In three lines, from a checkpoint our engine wrote::

    predictor = Predictor.from_checkpoint("outputs/run/checkpoint_00200.pth.tar")
    probabilities = predictor.predict(volume)  # (Z, Y, X) uint8 -> (C, Z, Y, X) float32
"""

from dataclasses import dataclass
from typing import Any, Callable, Dict, List, Optional, Protocol, Sequence, Tuple, Union

import numpy as np
import torch
import torch.distributed as dist

from ..data.intensity import normalise_image
from ..data.padding import PadWidths, pad_volume
from ..errors import (
    ConfigError,
    InputError,
    UserError,
    WriteError,
    argument,
    failure_reason,
    look_up_option,
)
from ..geometry import Box, plan_output_blocks
from ..io import OutputLock, PredictionOutput, check_image_dtype, on_rank_zero, open_prediction_output, volume_name
from .blending import BLENDINGS
from .progress import PredictionProgress
from .resume_key import prediction_key, weights_fingerprint
from .windows import window_starts, windows_over

Activation = Callable[[torch.Tensor], torch.Tensor]
# (volume index, its plan, its output target) -> None, once every block of it is written.
BlockRunner = Callable[[int, "VolumePlan", Any], None]
NO_PADDING: PadWidths = ((0, 0), (0, 0), (0, 0))
CPU = torch.device("cpu")


@dataclass(frozen=True)
class SlidingWindow:
    """How windows cover a volume and are blended into the output.

    Args:
        window: window size (z, y, x).
        stride: step between windows (z, y, x), between 1 and the window.
        blending: a key of ``BLENDINGS``.
        batch_size: windows per forward pass.
        pad: (before, after) padding per axis, read lazily in ``pad_mode``.
        pad_mode: PyTC's ``DATASET.PAD_MODE``.
        unpad: crop the padding off the output (PyTC's ``INFERENCE.UNPAD``).
        block_size: the largest output block (z, y, x) held in memory; 0 is the whole axis.
    """

    window: Tuple[int, int, int]
    stride: Tuple[int, int, int]
    blending: str = "gaussian"
    batch_size: int = 1
    pad: PadWidths = NO_PADDING
    pad_mode: str = "reflect"
    unpad: bool = True
    block_size: Tuple[int, int, int] = (0, 1024, 1024)

    def check_fits(self, volume: Any) -> None:
        """Refuse a volume smaller than the window, even after padding.

        Args:
            volume: a lazy (z, y, x) input.
        """
        padded = tuple(n + a + b for n, (a, b) in zip(volume.shape, self.pad))
        if any(n < w for n, w in zip(padded, self.window)):
            raise ConfigError(
                f"The window {list(self.window)} is larger than {volume_name(volume)!r} of shape "
                f"{padded} (after padding); lower INFERENCE.INPUT_SIZE or pad more."
            )

    def __post_init__(self) -> None:
        object.__setattr__(self, "window", tuple(int(w) for w in self.window))
        object.__setattr__(self, "stride", tuple(int(s) for s in self.stride))
        look_up_option("INFERENCE.BLENDING", self.blending, BLENDINGS)
        if any(not 1 <= s <= w for s, w in zip(self.stride, self.window)):
            raise ConfigError(
                f"INFERENCE.STRIDE {list(self.stride)} must be between 1 and the window "
                f"{list(self.window)} on each axis."
            )


@dataclass
class VolumePlan:
    """One volume laid out for prediction.

    Args:
        view: the lazily padded input.
        offset: where output voxel 0 lies in ``view`` (the padding before it, when cropped off).
        shape: the output's (z, y, x) shape.
        blocks: the output blocks, in output coordinates.
        starts: the window starts along each axis of ``view``.
        name: the input's file, for messages.
    """

    view: Any
    offset: Tuple[int, int, int]
    shape: Tuple[int, int, int]
    blocks: List[Box]
    starts: List[List[int]]
    name: str


class BlockTarget(Protocol):
    """Where a block's finished planes go: :class:`ArrayTarget`, or a :class:`~connectomics_mednext.io.BlockWriter`."""

    def next_plane(self, number: int) -> int:
        """The first plane of block ``number`` still to predict."""

    def write(self, number: int, box: Box, probabilities: np.ndarray) -> None:
        """Store ``probabilities`` (C, *box.shape, in 0..1) for the planes ``box`` of block ``number``."""


class ArrayTarget:
    """A prediction held in memory, as float probabilities.

    Args:
        array: the (C, Z, Y, X) float32 output.
        blocks: the output blocks.
    """

    def __init__(self, array: np.ndarray, blocks: List[Box]) -> None:
        self.array, self.blocks = array, blocks

    def next_plane(self, number: int) -> int:
        return self.blocks[number].begin[0]

    def write(self, number: int, box: Box, probabilities: np.ndarray) -> None:
        self.array[(slice(None),) + box.slices()] = probabilities


def _write_error(output_path: str, error: OSError) -> WriteError:
    """One sentence for a prediction output that could not be written."""
    return WriteError(
        f"{argument('output_path')} {output_path!r} could not be written ({failure_reason(error)}); nothing "
        "was published: free space (or fix the cause) and run the same command again, which continues from the "
        "last complete block."
    )


class PlaneByPlane(torch.nn.Module):
    """A 2D network as a 3D one on one-plane windows: (B, C, 1, y, x) in, (B, K, 1, y, x) out.

    So a 2D MedNeXt streams, resumes, blends, flips and shares blocks exactly as a 3D one does.

    Args:
        network: the 2D network, taking (B, C, y, x).
    """

    def __init__(self, network: torch.nn.Module) -> None:
        super().__init__()
        self.network = network

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if x.shape[2] != 1:
            raise ValueError(f"A 2D network predicts windows of one z plane, got a window of {x.shape[2]} planes.")
        return self.network(x[:, :, 0])[:, :, None]


class CountedTarget:
    """A block target that reports each write to a :class:`PredictionProgress`.

    Args:
        target: the target written to.
        progress: what counts the voxels.
        blocks: the output blocks.
    """

    def __init__(self, target: BlockTarget, progress: PredictionProgress, blocks: List[Box]) -> None:
        self.target, self.progress, self.blocks = target, progress, blocks

    def next_plane(self, number: int) -> int:
        return self.target.next_plane(number)

    def write(self, number: int, box: Box, probabilities: np.ndarray) -> None:
        self.target.write(number, box, probabilities)
        self.progress.advance(int(np.prod(box.shape)), box.end[0] == self.blocks[number].end[0])


class Predictor:
    """A network with its sliding-window settings; call :meth:`predict` or :meth:`predict_to_file` on volumes.

    Args:
        model: returns (B, channels, *window) logits in eval mode.
        activation: turns logits into probabilities.
        channels: output channels.
        sliding_window: window, stride, blending, padding and block settings.
        device: where the model runs.
        applied: what ``activation`` and ``model`` apply beyond the network's weights, as plain
            data (the activation and test-time augmentation settings), for the resume key
            (:mod:`.resume_key`): an interrupted output is continued only by a run whose key is equal.
        rank: this process's rank when ranks share the work of :meth:`predict_to_file`.
        world_size: the number of processes sharing it.
    """

    def __init__(
        self,
        model: torch.nn.Module,
        activation: Activation,
        channels: int,
        sliding_window: SlidingWindow,
        device: torch.device = CPU,
        applied: Optional[Dict[str, Any]] = None,
        rank: int = 0,
        world_size: int = 1,
    ) -> None:
        self.model, self.activation, self.channels = model, activation, channels
        self.settings = sliding_window
        self.blend_weights = BLENDINGS[sliding_window.blending](sliding_window.window)
        self.device = device
        self.applied = dict(applied or {})
        self.rank, self.world_size = rank, world_size

    @classmethod
    def from_checkpoint(
        cls,
        checkpoint: str,
        config_file: Optional[str] = None,
        config_base: Optional[str] = None,
        device: Optional[Union[str, torch.device]] = None,
        **overrides: Any,
    ) -> "Predictor":
        """The predictor a trained checkpoint describes: its network, weights and ``INFERENCE`` settings.

        As nnU-Net's predictor reads a trained folder, this reads the config our engine saves in
        every checkpoint; PyTorch Connectomics' checkpoints hold none, so give ``config_file``.

        Args:
            checkpoint: the ``.pth.tar`` file.
            config_file: a config to use instead of the checkpoint's (and ``config_base`` under it).
            config_base: a base config merged before ``config_file``.
            device: where the network runs; default the first GPU if there is one, else the CPU.
            **overrides: ``INFERENCE`` keys in lower case, e.g. ``stride=[16, 32, 32]``,
                ``samples_per_batch=4``, ``aug_num=0``.
        """
        from .inference import predictor_from_checkpoint  # inference builds predictors from configs

        return predictor_from_checkpoint(checkpoint, config_file, config_base, device, overrides)

    def plan(self, volume: Any, min_blocks: int = 1, output: Optional[PredictionOutput] = None) -> VolumePlan:
        """Lay ``volume`` out: padding, output shape, blocks and window starts.

        Args:
            volume: a lazy (z, y, x) uint8 input (HDF5 dataset, TIFF stack, chunked store or array).
            min_blocks: the fewest blocks wanted (the processes sharing the work).
            output: the prediction output whose chunks the blocks must respect; None for an array.
        """
        settings = self.settings
        view = pad_volume(volume, settings.pad, settings.pad_mode, volume_name(volume))
        settings.check_fits(volume)
        offset = tuple(a for a, _ in settings.pad) if settings.unpad else (0, 0, 0)
        shape = tuple(volume.shape) if settings.unpad else tuple(view.shape)
        starts = [window_starts(n, w, s) for n, w, s in zip(view.shape, settings.window, settings.stride)]
        chunk = None if output is None else output.chunk_shape(shape, settings.block_size, min_blocks)
        blocks = plan_output_blocks(shape, settings.block_size, min_blocks, chunk)
        return VolumePlan(view, offset, shape, blocks, starts, volume_name(volume))

    @torch.no_grad()
    def predict(self, volume: Any) -> np.ndarray:
        """The (C, Z, Y, X) float32 probabilities of ``volume``, in memory, computed by this process alone.

        They equal what :meth:`predict_to_file` stores, divided by 255, up to its rounding to uint8.

        Args:
            volume: a (Z, Y, X) uint8 volume: a numpy array, a torch tensor, or a lazy volume of
                :func:`~connectomics_mednext.io.open_volume`.
        """
        if isinstance(volume, torch.Tensor):
            volume = volume.detach().cpu().numpy()
        if len(getattr(volume, "shape", ())) != 3:
            raise InputError(
                f"{argument('volume')} has shape {tuple(getattr(volume, 'shape', ()))}; expected a (Z, Y, X) volume."
            )
        check_image_dtype(volume, argument("volume"))
        plan = self.plan(volume)
        array = np.zeros((self.channels,) + plan.shape, dtype=np.float32)
        target = ArrayTarget(array, plan.blocks)
        for number in range(len(plan.blocks)):
            self.predict_block(plan, number, target)
        return array

    @torch.no_grad()
    def predict_to_file(self, volumes: Sequence, output_path: str, run_blocks: Optional["BlockRunner"] = None) -> str:
        """Predict each volume into ``vol<i>`` of ``output_path`` (HDF5, or zarr for ``.zarr``); return that path.

        With several ranks every rank calls this; the output is complete when rank 0 returns.

        Rank 0 holds ``<output_path>.lock`` meanwhile, so a second run on the same output is refused
        at once (:class:`~connectomics_mednext.io.OutputLock`).

        Args:
            volumes: lazy (z, y, x) uint8 inputs.
            output_path: the final file or folder.
            run_blocks: computes the blocks of one volume elsewhere (daisy's workers, see
                :mod:`.daisy_prediction`); None computes this rank's share here.
        """
        lock = OutputLock(output_path.rstrip("/") + ".lock", argument("output_path"), output_path)
        on_rank_zero(self.rank, self._share, lock.acquire)
        try:
            return self._write_prediction(volumes, output_path, run_blocks)
        finally:
            lock.release()

    def _write_prediction(self, volumes: Sequence, output_path: str, run_blocks: Optional["BlockRunner"]) -> str:
        """:meth:`predict_to_file`'s work, under its lock."""
        weights = weights_fingerprint(self.model)
        output = open_prediction_output(output_path, self.rank, self.world_size, self._share)
        world_size = self.world_size if output.per_rank_files else None
        suffix = ".progress.json" if self.world_size == 1 else f".rank{self.rank}.progress.json"
        progress = PredictionProgress(output_path.rstrip("/") + suffix, self.rank, self.world_size)
        plans = []
        try:
            for index, volume in enumerate(volumes):
                plan = self.plan(volume, self.world_size, output)
                key = prediction_key(
                    weights, self.applied, self.settings, self.channels, volume, plan.blocks, world_size
                )
                shape = (self.channels,) + plan.shape
                target = output.dataset(index, shape, key, plan.blocks, getattr(volume, "voxel_size", None))
                if run_blocks is not None:
                    run_blocks(index, plan, target)
                else:
                    mine = range(self.rank, len(plan.blocks), self.world_size)
                    self._start_counting(progress, f"vol{index}", plan, target, mine)
                    for number in mine:
                        self.predict_block(plan, number, CountedTarget(target, progress, plan.blocks))
                plans.append((shape, plan.blocks))
            output.close()
        except UserError:
            output.close_or_discard()
            raise
        except OSError as error:  # reads fail as InputError (predict_block): this is a write
            output.close_or_discard(write_failed=True)
            raise _write_error(output_path, error) from error
        except BaseException:
            output.close_or_discard()
            raise
        finally:
            progress.close()
        if self.world_size > 1:
            dist.barrier()
        if self.rank == 0:
            try:
                output.publish(plans)
            except OSError as error:
                raise _write_error(output_path, error) from error
        return output_path

    @staticmethod
    def _start_counting(
        progress: PredictionProgress, name: str, plan: VolumePlan, target: BlockTarget, mine: Sequence[int]
    ) -> None:
        """This rank's share of a volume, less what an interrupted run already wrote."""
        total = done = finished = 0
        for number in mine:
            block = plan.blocks[number]
            plane = int(np.prod(block.shape[1:]))
            written = target.next_plane(number) - block.begin[0]
            total, done = total + plane * block.shape[0], done + plane * written
            finished += int(written == block.shape[0])
        progress.start_volume(name, total, len(mine), done, finished)

    def _share(self, value: Any) -> Any:
        """Rank 0's ``value`` on every rank."""
        if self.world_size == 1:
            return value
        holder = [value]
        dist.broadcast_object_list(holder, src=0)
        return holder[0]

    def predict_block(self, plan: VolumePlan, number: int, target: BlockTarget) -> None:
        """Stream block ``number`` in z into ``target``, from the plane ``target`` says is next.

        Args:
            plan: the volume's layout.
            number: the block.
            target: where finished planes go.
        """
        window, weights, offset = self.settings.window, self.blend_weights, plan.offset
        region = plan.blocks[number].shift(offset)  # the block in the padded view's coordinates
        z_end = region.end[0]
        base = target.next_plane(number) + offset[0]
        if base >= z_end:
            return
        rows = windows_over(plan.starts[0], window[0], (base, z_end))
        ys = windows_over(plan.starts[1], window[1], region.spans[1])
        xs = windows_over(plan.starts[2], window[2], region.spans[2])
        reach = (slice(ys[0], ys[-1] + window[1]), slice(xs[0], xs[-1] + window[2]))
        corners = [(y, x) for y in ys for x in xs]
        # Each row starts at or before base, so one window's depth holds every plane it can touch.
        depth = min(window[0], z_end - base)
        accum = np.zeros((self.channels, depth) + region.shape[1:], dtype=np.float32)
        norm = np.zeros(accum.shape[1:], dtype=np.float32)
        for row, z in enumerate(rows):
            buffer = region.with_axis(0, (base, base + depth))
            remaining = region.with_axis(0, (base, z_end))
            try:
                slab = normalise_image(plan.view[(slice(z, z + window[0]),) + reach])
            except OSError as error:
                raise InputError(
                    f"{plan.name!r} could not be read at planes {z}..{z + window[0]} of its padded view "
                    f"({failure_reason(error)}): is the file damaged?"
                ) from error
            for first in range(0, len(corners), self.settings.batch_size):
                chunk = corners[first : first + self.settings.batch_size]
                batch = np.stack(
                    [
                        slab[None, :, y - ys[0] : y - ys[0] + window[1], x - xs[0] : x - xs[0] + window[2]]
                        for y, x in chunk
                    ]
                )
                probs = self.activation(self.model(torch.from_numpy(batch).to(self.device)).float()).cpu().numpy()
                for (y, x), prob in zip(chunk, probs):
                    seen = Box.from_shape(window, (z, y, x))
                    overlap = seen.intersect(remaining)
                    inside, into = overlap.relative_to(seen).slices(), overlap.relative_to(buffer).slices()
                    accum[(slice(None),) + into] += prob[(slice(None),) + inside] * weights[inside]
                    norm[into] += weights[inside]
            finished = min(rows[row + 1], z_end) if row + 1 < len(rows) else z_end
            if finished > base:
                count = finished - base
                values = accum[:, :count] / np.maximum(norm[:count], 1e-8)
                done = region.with_axis(0, (base, finished)).shift(tuple(-o for o in offset))
                target.write(number, done, values)
                accum[:, :-count], norm[:-count] = accum[:, count:].copy(), norm[count:].copy()
                accum[:, -count:], norm[-count:] = 0, 0
                base = finished
