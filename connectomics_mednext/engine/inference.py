"""Streaming sliding-window inference from an HDF5 volume straight into an HDF5 file.

Windows are visited in z order. A float buffer covers only the z range that windows not
yet run can still touch (at most window_z + stride_z planes), so peak memory is about
``(C + 1) * (window_z + stride_z) * Y * X * 4`` bytes plus one batch, whatever the volume's
depth. Finished planes go to ``<output>.partial`` as uint8 (probability x 255, clipped), with
the count of finished planes in its ``done_z`` attribute; a rerun continues from there, and the
file is renamed to its final name only when complete.
"""
import os
from typing import Callable, List, Sequence

import h5py
import numpy as np
import torch

from ..data.volumes import normalise_image
from .blending import BLENDINGS

Activation = Callable[[torch.Tensor], torch.Tensor]
ACTIVATIONS = {"sigmoid": torch.sigmoid, "softmax": lambda x: torch.softmax(x, dim=1), "none": lambda x: x,
               "tanh": torch.tanh}


def window_starts(size: int, window: int, stride: int) -> List[int]:
    """Window starts along one axis: every ``stride``, plus one flush with the end."""
    if window > size:
        raise ValueError(f"window {window} is larger than the volume ({size}).")
    starts = list(range(0, size - window + 1, stride))
    if starts[-1] != size - window:
        starts.append(size - window)
    return starts


def make_activation(output_act: Sequence[str], channels: Sequence[int]) -> Activation:
    """Apply ``output_act[i]`` to the channels of target ``i``."""
    unknown = [a for a in output_act if a not in ACTIVATIONS]
    if unknown or len(output_act) != len(channels):
        raise ValueError(
            f"INFERENCE.OUTPUT_ACT must give one of {sorted(ACTIVATIONS)} per target, got {list(output_act)!r}."
        )

    def activate(x: torch.Tensor) -> torch.Tensor:
        parts = torch.split(x, list(channels), dim=1)
        return torch.cat([ACTIVATIONS[a](p) for a, p in zip(output_act, parts)], dim=1)

    return activate


@torch.no_grad()
def predict_to_hdf5(model: torch.nn.Module, volumes: Sequence, output_path: str, window: Sequence[int],
                    stride: Sequence[int], channels: int, activation: Activation, batch_size: int = 1,
                    blending: str = "gaussian", device: torch.device = torch.device("cpu"), source: str = "") -> str:
    """Predict each (z, y, x) uint8 volume (array or HDF5 dataset) into dataset ``vol<i>`` of ``output_path``.

    Args:
        model: the network, returning (B, channels, *window) logits in eval mode.
        volumes: the inputs, each read one z slab at a time.
        output_path: the final HDF5 file; ``<output_path>.partial`` while unfinished.
        window: window size (z, y, x).
        stride: step between windows (z, y, x).
        channels: output channels.
        activation: turns logits into probabilities.
        batch_size: windows per forward pass.
        blending: a key of ``BLENDINGS``.
        device: where the model runs.
        source: identifies the weights (e.g. the checkpoint); an interrupted run is only
            continued by a run with the same source, window and stride.
    """
    if blending not in BLENDINGS:
        raise ValueError(f"INFERENCE.BLENDING must be one of {sorted(BLENDINGS)}, got {blending!r}.")
    window, stride = tuple(window), tuple(stride)
    weights = BLENDINGS[blending](window)
    partial = output_path + ".partial"
    with h5py.File(partial, "a") as out:
        for index, volume in enumerate(volumes):
            shape = tuple(volume.shape)
            starts = [window_starts(n, w, s) for n, w, s in zip(shape, window, stride)]
            target = _resumable_dataset(out, f"vol{index}", (channels,) + shape, window + stride, source)
            done = int(target.attrs["done_z"])
            if done < shape[0]:
                _stream(model, volume, target, starts, window, weights, channels, activation, batch_size, device, done)
    os.replace(partial, output_path)
    return output_path


def _resumable_dataset(out: h5py.File, name: str, shape, settings, source: str) -> h5py.Dataset:
    """The output dataset, reused if an interrupted run with the same settings and source left it."""
    if name in out:
        attrs = out[name].attrs
        if out[name].shape != shape or tuple(attrs.get("settings", ())) != settings or attrs.get("source") != source:
            del out[name]
    if name not in out:
        dataset = out.create_dataset(name, shape=shape, dtype=np.uint8,
                                     chunks=(1, min(shape[1], settings[0]), min(shape[2], 256), min(shape[3], 256)))
        dataset.attrs["settings"] = settings
        dataset.attrs["source"] = source
        dataset.attrs["done_z"] = 0
    return out[name]


def _stream(model, volume, target, starts, window, weights, channels, activation, batch_size, device, done):
    shape = volume.shape
    wz = window[0]
    # Buffer planes [base, base + depth); depth covers one window plus the step to the next.
    base = done
    depth = min(shape[0] - base, wz + max(np.diff(starts[0] + [shape[0]]).max(), 1))
    accum = np.zeros((channels, depth) + shape[1:], dtype=np.float32)
    norm = np.zeros((depth,) + shape[1:], dtype=np.float32)
    pending = [z for z in starts[0] if z + wz > done]
    for index, z in enumerate(pending):
        slab = normalise_image(np.asarray(volume[z:z + wz]))
        boxes = [(y, x) for y in starts[1] for x in starts[2]]
        for first in range(0, len(boxes), batch_size):
            chunk = boxes[first:first + batch_size]
            batch = np.stack([slab[None, :, y:y + window[1], x:x + window[2]] for y, x in chunk])
            probs = activation(model(torch.from_numpy(batch).to(device)).float()).cpu().numpy()
            for (y, x), prob in zip(chunk, probs):
                lo = max(z, base)  # planes below base are already written
                accum[:, lo - base:z + wz - base, y:y + window[1], x:x + window[2]] += prob[:, lo - z:] * weights[lo - z:]
                norm[lo - base:z + wz - base, y:y + window[1], x:x + window[2]] += weights[lo - z:]
        finished = pending[index + 1] if index + 1 < len(pending) else shape[0]
        if finished > base:
            count = finished - base
            values = accum[:, :count] / np.maximum(norm[:count], 1e-8)
            target[:, base:finished] = np.clip(np.rint(values * 255.0), 0, 255).astype(np.uint8)
            target.attrs["done_z"] = finished
            target.file.flush()
            accum = np.roll(accum, -count, axis=1)
            norm = np.roll(norm, -count, axis=0)
            accum[:, -count:] = 0
            norm[-count:] = 0
            base = finished
