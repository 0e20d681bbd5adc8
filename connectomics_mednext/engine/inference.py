"""Streaming sliding-window inference from lazy volumes straight into an HDF5 file.

The output is cut into blocks (:mod:`.blocks`). Within a block, windows run in z order and a
float buffer covers one window's depth of the block's y-x extent, so peak memory is about
``(C + 1) * window_z * block_y * block_x * 4`` bytes, plus one input slab and one batch,
whatever the volume's size. Finished planes of a block go to ``<output>.partial`` as uint8
(probability x 255, clipped), and its ``done_z`` attribute records each block's progress; a
rerun continues from there. Under ``torch.distributed`` each rank takes every N-th block into
its own ``<output>.rank<r>.partial``, and rank 0 joins them. The file gets its final name only
when complete.
"""
import glob
import json
import os
from typing import Any, Callable, Dict, List, Optional, Sequence

import h5py
import numpy as np
import torch
import torch.distributed as dist

from ..data.padding import PadWidths, pad_volume
from ..data.volumes import normalise_image, volume_name
from ..errors import ConfigError, look_up_option
from ..losses.criterion import ACTIVATIONS
from .blending import BLENDINGS
from .blocks import Box, plan_blocks, window_starts, windows_over
from .identity import volume_identity, weights_fingerprint

Activation = Callable[[torch.Tensor], torch.Tensor]
NO_PADDING: PadWidths = ((0, 0), (0, 0), (0, 0))
# Planes copied at a time when rank 0 joins the ranks' files.
MERGE_PLANES = 16
OUTPUT_DTYPE = np.uint8


def make_activation(output_act: Sequence[str], channels: Sequence[int]) -> Activation:
    """Apply ``output_act[i]`` to the channels of target ``i``."""
    if len(output_act) != len(channels):
        raise ConfigError(f"INFERENCE.OUTPUT_ACT must give one activation per target ({len(channels)}), "
                          f"got {list(output_act)!r}.")
    for name in output_act:
        look_up_option("INFERENCE.OUTPUT_ACT", name, ACTIVATIONS)

    def activate(x: torch.Tensor) -> torch.Tensor:
        parts = torch.split(x, list(channels), dim=1)
        return torch.cat([ACTIVATIONS[a](p) for a, p in zip(output_act, parts)], dim=1)

    return activate


@torch.no_grad()
def predict_to_hdf5(model: torch.nn.Module, volumes: Sequence, output_path: str, window: Sequence[int],
                    stride: Sequence[int], channels: int, activation: Activation, batch_size: int = 1,
                    blending: str = "gaussian", device: torch.device = torch.device("cpu"),
                    identity: Optional[Dict[str, Any]] = None, pad: PadWidths = NO_PADDING, pad_mode: str = "reflect", unpad: bool = True,
                    block_size: Sequence[int] = (0, 1024, 1024), rank: int = 0, world_size: int = 1) -> str:
    """Predict each (z, y, x) volume into dataset ``vol<i>`` of ``output_path``; return that path.

    With several ranks every rank calls this; the file is complete when rank 0 returns.

    Args:
        model: the network, returning (B, channels, *window) logits in eval mode.
        volumes: lazy inputs (HDF5 datasets, TIFF stacks or arrays) of uint8 intensities.
        output_path: the final HDF5 file.
        window: window size (z, y, x).
        stride: step between windows (z, y, x).
        channels: output channels.
        activation: turns logits into probabilities.
        batch_size: windows per forward pass.
        blending: a key of ``BLENDINGS``.
        device: where the model runs.
        identity: what decides the output beyond the weights, the inputs and the arguments
            here, as plain data (e.g. the activation and test-time augmentation settings). An
            interrupted run is continued only by a run with the same resume key: this, a hash
            of the weights, every input's identity and every argument that shapes the bytes.
        pad: (before, after) padding per axis, read lazily in ``pad_mode``.
        pad_mode: PyTC's ``DATASET.PAD_MODE``.
        unpad: crop the padding off the output (PyTC's ``INFERENCE.UNPAD``).
        block_size: the largest output block (z, y, x) held in memory; 0 is the whole axis.
        rank: this process's rank when ranks share the work.
        world_size: the number of processes sharing the work.
    """
    window, stride = tuple(int(w) for w in window), tuple(int(s) for s in stride)
    weights = look_up_option("INFERENCE.BLENDING", blending, BLENDINGS)(window)
    if any(not 1 <= s <= w for s, w in zip(stride, window)):
        raise ConfigError(f"INFERENCE.STRIDE {list(stride)} must be between 1 and the window {list(window)} on each axis.")
    common = {"weights": weights_fingerprint(model), **(identity or {}), "window": window, "stride": stride,
              "blending": blending, "pad": pad, "pad_mode": pad_mode, "unpad": unpad, "channels": channels,
              "dtype": np.dtype(OUTPUT_DTYPE).name, "world_size": world_size}
    own = output_path + (".partial" if world_size == 1 else f".rank{rank}.partial")
    plans = []
    out = _open_partial(own)
    try:
        for index, volume in enumerate(volumes):
            view = pad_volume(volume, pad, pad_mode, volume_name(volume))
            if any(n < w for n, w in zip(view.shape, window)):
                raise ConfigError(f"The window {list(window)} is larger than {volume_name(volume)!r} of shape "
                                  f"{tuple(view.shape)} (after padding); lower INFERENCE.INPUT_SIZE or pad more.")
            offset = tuple(a for a, _ in pad) if unpad else (0, 0, 0)
            shape = tuple(volume.shape) if unpad else tuple(view.shape)
            blocks = plan_blocks(shape, block_size, world_size)
            key = {**common, "input": volume_identity(volume), "blocks": blocks}
            target = _resumable_dataset(out, f"vol{index}", (channels,) + shape, key, blocks)
            starts = [window_starts(n, w, s) for n, w, s in zip(view.shape, window, stride)]
            for number in range(rank, len(blocks), world_size):
                _predict_block(model, view, target, number, blocks[number], offset, starts, window, weights,
                               activation, batch_size, device)
            plans.append(((channels,) + shape, blocks))
    except BaseException:
        _close_or_discard(out, own)
        raise
    out.close()
    if world_size > 1:
        dist.barrier()
        if rank != 0:
            return output_path
        _join_ranks(output_path, plans, world_size)
    os.replace(output_path + ".partial", output_path)
    for leftover in glob.glob(glob.escape(output_path) + ".rank*.partial"):
        os.remove(leftover)
    return output_path


def _open_partial(path: str) -> h5py.File:
    """Open an unfinished output for appending; one a kill left unreadable is started afresh."""
    try:
        return h5py.File(path, "a")
    except OSError:
        print(f"{path!r} cannot be read (interrupted while writing?); starting it again.", flush=True)
        os.remove(path)
        return h5py.File(path, "a")


def _close_or_discard(out: h5py.File, path: str) -> None:
    """Close an unfinished output after a failure; delete it when it holds no finished plane."""
    finished = any(np.any(d.attrs["done_z"] != d.attrs["first_z"]) for d in out.values() if "first_z" in d.attrs)
    out.close()
    if not finished:
        os.remove(path)


def changed_fields(stored: Dict[str, Any], wanted: Dict[str, Any]) -> List[str]:
    """The names of the resume-key fields that differ (``input.mtime_ns`` for nested ones).

    Args:
        stored: the key an unfinished output was started with.
        wanted: this run's key.
    """
    changed = []
    for name in sorted(set(stored) | set(wanted)):
        old, new = stored.get(name), wanted.get(name)
        if isinstance(old, dict) and isinstance(new, dict):
            changed += [f"{name}.{inner}" for inner in changed_fields(old, new)]
        elif old != new:
            changed.append(name)
    return changed


def _resumable_dataset(out: h5py.File, name: str, shape, key: Dict[str, Any], blocks: List[Box]) -> h5py.Dataset:
    """The output dataset, reused only if an interrupted run with the same resume key left it."""
    wanted = json.loads(json.dumps(key))  # tuples become lists, as they come back from the file
    if name in out:
        stored = json.loads(out[name].attrs.get("resume_key", "{}"))
        changed = changed_fields(stored, wanted) or (["shape"] if out[name].shape != shape else [])
        if changed:
            print(f"{out.filename!r}: {name} was started with other {', '.join(changed)}; starting it afresh.",
                  flush=True)
            del out[name]
    if name not in out:
        dataset = out.create_dataset(name, shape=shape, dtype=OUTPUT_DTYPE, chunks=_chunks(shape))
        dataset.attrs["resume_key"] = json.dumps(wanted, sort_keys=True)
        first_z = np.array([z[0] for z, _, _ in blocks], dtype=np.int64)
        dataset.attrs["first_z"] = first_z
        dataset.attrs["done_z"] = first_z
    return out[name]


def _chunks(shape):
    return (1, min(shape[1], 16), min(shape[2], 256), min(shape[3], 256))


def _predict_block(model, view, target, number: int, block: Box, offset, starts, window, weights, activation,
                   batch_size: int, device) -> None:
    """Stream block ``number`` in z, from the plane its ``done_z`` entry says is next."""
    wz, wy, wx = window
    (z_lo, z_hi), (y_lo, y_hi), (x_lo, x_hi) = [(a + o, b + o) for (a, b), o in zip(block, offset)]
    base = int(target.attrs["done_z"][number]) + offset[0]
    if base >= z_hi:
        return
    rows = windows_over(starts[0], wz, (base, z_hi))
    ys, xs = windows_over(starts[1], wy, (y_lo, y_hi)), windows_over(starts[2], wx, (x_lo, x_hi))
    reach_y, reach_x = slice(ys[0], ys[-1] + wy), slice(xs[0], xs[-1] + wx)
    boxes = [(y, x) for y in ys for x in xs]
    # Each row starts at or before base, so one window's depth holds every plane it can touch.
    depth = min(wz, z_hi - base)
    accum = np.zeros((target.shape[0], depth, y_hi - y_lo, x_hi - x_lo), dtype=np.float32)
    norm = np.zeros(accum.shape[1:], dtype=np.float32)
    for row, z in enumerate(rows):
        slab = normalise_image(view[slice(z, z + wz), reach_y, reach_x])
        for first in range(0, len(boxes), batch_size):
            chunk = boxes[first:first + batch_size]
            batch = np.stack([slab[None, :, y - ys[0]:y - ys[0] + wy, x - xs[0]:x - xs[0] + wx] for y, x in chunk])
            probs = activation(model(torch.from_numpy(batch).to(device)).float()).cpu().numpy()
            for (y, x), prob in zip(chunk, probs):
                spans = [(max(z, base), min(z + wz, z_hi)), (max(y, y_lo), min(y + wy, y_hi)),
                         (max(x, x_lo), min(x + wx, x_hi))]
                inside = tuple(slice(a - s, b - s) for (a, b), s in zip(spans, (z, y, x)))
                into = tuple(slice(a - s, b - s) for (a, b), s in zip(spans, (base, y_lo, x_lo)))
                accum[(slice(None),) + into] += prob[(slice(None),) + inside] * weights[inside]
                norm[into] += weights[inside]
        finished = min(rows[row + 1], z_hi) if row + 1 < len(rows) else z_hi
        if finished > base:
            count = finished - base
            values = accum[:, :count] / np.maximum(norm[:count], 1e-8)
            target[:, base - offset[0]:finished - offset[0], y_lo - offset[1]:y_hi - offset[1],
                   x_lo - offset[2]:x_hi - offset[2]] = np.clip(np.rint(values * 255.0), 0, 255).astype(OUTPUT_DTYPE)
            done = target.attrs["done_z"]
            done[number] = finished - offset[0]
            target.attrs["done_z"] = done
            target.file.flush()
            accum[:, :-count], norm[:-count] = accum[:, count:].copy(), norm[count:].copy()
            accum[:, -count:], norm[-count:] = 0, 0
            base = finished


def _join_ranks(output_path: str, plans, world_size: int) -> None:
    """Rank 0: copy every block from the file of the rank that predicted it into ``<output>.partial``."""
    parts = [h5py.File(f"{output_path}.rank{r}.partial", "r") for r in range(world_size)]
    try:
        with h5py.File(output_path + ".partial", "w") as out:
            for index, (shape, blocks) in enumerate(plans):
                name = f"vol{index}"
                joined = out.create_dataset(name, shape=shape, dtype=np.uint8, chunks=_chunks(shape))
                for number, ((z0, z1), (y0, y1), (x0, x1)) in enumerate(blocks):
                    part = parts[number % world_size][name]
                    if int(part.attrs["done_z"][number]) < z1:
                        raise RuntimeError(f"Block {number} of {name} is unfinished in {part.file.filename!r}.")
                    for z in range(z0, z1, MERGE_PLANES):
                        planes = slice(z, min(z + MERGE_PLANES, z1))
                        joined[:, planes, y0:y1, x0:x1] = part[:, planes, y0:y1, x0:x1]
                joined.attrs["resume_key"] = parts[0][name].attrs["resume_key"]
    finally:
        for part in parts:
            part.close()
