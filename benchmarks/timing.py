"""Shared helpers for the benchmarks: repeated timing, peak memory, losses."""

import resource
import statistics
import time
from typing import Callable, Dict, Iterable, List

import torch
import torch.nn.functional as F


def synchronize(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def time_repeated(fn: Callable[[], None], device: torch.device, warmup: int, repeats: int) -> Dict[str, float]:
    """Median, min and max seconds of ``fn`` over ``repeats`` runs after ``warmup`` runs.

    Args:
        fn: the work to time.
        device: synchronised around each run when it is a GPU.
        warmup: untimed runs first.
        repeats: timed runs.
    """
    for _ in range(warmup):
        fn()
    synchronize(device)
    times: List[float] = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        synchronize(device)
        times.append(time.perf_counter() - start)
    return summarise(times)


def summarise(times: List[float]) -> Dict[str, float]:
    """Median, min and max of ``times`` (seconds)."""
    return {"median_s": statistics.median(times), "min_s": min(times), "max_s": max(times)}


def peak_memory_mib(device: torch.device) -> float:
    """Peak GPU memory allocated, or the process's peak RSS on CPU, in MiB."""
    if device.type == "cuda":
        return torch.cuda.max_memory_allocated(device) / 2**20
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def as_list(outputs) -> List[torch.Tensor]:
    """Model outputs (tensor, list/tuple or dict, full resolution first) as a list."""
    if isinstance(outputs, torch.Tensor):
        return [outputs]
    if isinstance(outputs, dict):
        return list(outputs.values())
    return list(outputs)


def make_train_step(model: torch.nn.Module, x: torch.Tensor, target: torch.Tensor, bf16: bool) -> Callable[[], None]:
    """One training step as the reference runs it: forward, deep-supervision loss, backward, AdamW.

    Args:
        model: the network, in training mode.
        x: input batch.
        target: integer labels of shape (B, *spatial).
        bf16: run the forward pass under bf16 autocast.
    """
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-3, weight_decay=3e-5, eps=1e-4)

    def train_step() -> None:
        optimizer.zero_grad(set_to_none=True)
        with torch.autocast(x.device.type, dtype=torch.bfloat16, enabled=bf16):
            loss = deep_supervision_loss(as_list(model(x)), target)
        loss.backward()
        optimizer.step()

    return train_step


def deep_supervision_loss(outputs: Iterable[torch.Tensor], target: torch.Tensor) -> torch.Tensor:
    """Cross-entropy over every scale with the reference's weights 1, 1/2, ... normalised to 1.

    Targets are downsampled by centre sampling (``y[f//2::f]``), as the reference does.
    """
    outputs = list(outputs)
    weights = [0.5**i for i in range(len(outputs))]
    total = sum(weights)
    loss = 0.0
    for weight, out in zip(weights, outputs):
        factors = [t // o for t, o in zip(target.shape[1:], out.shape[2:])]
        index = tuple(slice(f // 2, None, f) for f in factors)
        loss = loss + weight / total * F.cross_entropy(out.float(), target[(slice(None),) + index])
    return loss
