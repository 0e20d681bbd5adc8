"""Keep freed heap memory in the process, so large activations are not page-faulted in afresh.

glibc's malloc serves allocations above its mmap threshold (at most 32 MiB by default) with
fresh mappings and trims freed memory at the top of the heap. A MedNeXt forward pass on a CPU
allocates and frees tensors of tens of MiB, so every pass touches new pages, and the kernel
zeroes each one: a large share of a 64^3 forward pass on a 2-core machine (figures in
benchmarks/README.md). Raising both thresholds keeps the memory for reuse.
"""

import ctypes
import os

# mallopt parameter numbers from glibc's malloc.h.
_M_TRIM_THRESHOLD = -1
_M_MMAP_THRESHOLD = -3
# glibc reads these variables itself; when the user sets one, the user's choice stands.
_GLIBC_VARIABLES = ("MALLOC_TRIM_THRESHOLD_", "MALLOC_MMAP_THRESHOLD_")


def keep_freed_memory() -> bool:
    """Tune glibc malloc for repeated large allocations, process-wide. Returns whether it applied.

    Does nothing (returns False) without glibc, or when ``MALLOC_TRIM_THRESHOLD_`` or
    ``MALLOC_MMAP_THRESHOLD_`` is set in the environment.
    """
    if any(name in os.environ for name in _GLIBC_VARIABLES):
        return False
    try:
        libc = ctypes.CDLL("libc.so.6")
    except OSError:
        return False
    # mallopt takes a C int: a larger value would wrap (1 << 40 becomes 0, which trims at every free).
    largest = ctypes.c_int(2**31 - 1).value
    return bool(libc.mallopt(_M_MMAP_THRESHOLD, 1 << 30)) and bool(libc.mallopt(_M_TRIM_THRESHOLD, largest))
