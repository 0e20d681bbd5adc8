"""How much memory a block of a decoder needs, and a refusal when the machine lacks it."""

import os
from typing import Optional

from ..errors import ConfigError, InputError, argument

GIB = 1024**3


def available_bytes() -> int:
    """Memory the system can give this process now (Linux's MemAvailable; else free physical pages)."""
    try:
        with open("/proc/meminfo", encoding="ascii") as handle:
            for line in handle:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) * 1024
    except OSError:
        pass
    return os.sysconf("SC_AVPHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")


def check_memory(mode: str, voxels: int, bytes_per_voxel: int, limit_gib: Optional[float] = None) -> None:
    """Refuse to start a decoder whose estimated peak memory for one block exceeds what is available.

    Args:
        mode: the decoding mode, for the message.
        voxels: the voxels of a block and its context.
        bytes_per_voxel: the mode's peak memory per voxel.
        limit_gib: the memory allowed (``max_memory``); None takes what the system has available.
    """
    if limit_gib is not None and not limit_gib > 0:
        raise ConfigError(f"{argument('max_memory')} is {limit_gib}, but must be a positive number of GiB.")
    need = voxels * bytes_per_voxel
    have = available_bytes() if limit_gib is None else int(limit_gib * GIB)
    if need > have:
        source = f"{argument('max_memory')} allows" if limit_gib is not None else "the machine has"
        raise InputError(
            f"{argument('mode')} {mode} needs about {need / GIB:.1f} GiB for a block of {voxels} voxels with its "
            f"context ({bytes_per_voxel} bytes each), but {source} {have / GIB:.1f} GiB; decode in smaller blocks "
            f"({argument('block_size')}), blockwise into a zarr output for the largest volumes."
        )
