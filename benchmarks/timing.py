"""Shared helpers for the benchmarks: repeated timing, peak memory, allocator settings, losses."""
import ctypes
import resource
import statistics
import time
from typing import Callable, Dict, Iterable, List

import torch
import torch.nn.functional as F

# glibc mallopt parameters: keep freed blocks in the heap instead of returning them to the
# kernel, so large activations are not page-faulted in afresh at every step.
_M_TRIM_THRESHOLD = -1
_M_MMAP_THRESHOLD = -3


def keep_freed_memory() -> bool:
    """Tune glibc malloc for repeated large allocations (process-wide). Returns whether it applied."""
    try:
        libc = ctypes.CDLL("libc.so.6")
    except OSError:
        return False
    # mallopt takes a C int: a larger value would wrap (1 << 40 becomes 0, which trims at every free).
    largest = ctypes.c_int(2**31 - 1).value
    return bool(libc.mallopt(_M_MMAP_THRESHOLD, 1 << 30)) and bool(libc.mallopt(_M_TRIM_THRESHOLD, largest))


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
