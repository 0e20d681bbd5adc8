"""Process-group set-up for ``torchrun ... scripts/main.py --distributed`` (gloo on CPU, nccl on GPU)."""

import os
from datetime import timedelta
from typing import Optional, Tuple

import torch
import torch.distributed as dist

from ..errors import ConfigError, argument


def default_device() -> torch.device:
    """The GPU when there is one, else the CPU."""
    return torch.device("cuda" if torch.cuda.is_available() else "cpu")


def init_distributed(timeout: Optional[timedelta] = None) -> Tuple[int, int, torch.device]:
    """Join the process group torchrun describes; return (rank, world size, this rank's device).

    Args:
        timeout: how long collectives wait for the slowest rank; None keeps torch's default.
    """
    missing = [
        key for key in ("RANK", "WORLD_SIZE", "LOCAL_RANK", "MASTER_ADDR", "MASTER_PORT") if key not in os.environ
    ]
    if missing:
        raise ConfigError(
            f"{argument('distributed')} needs torchrun's environment ({', '.join(missing)} missing); launch with "
            "python -m torch.distributed.run --nproc_per_node=N scripts/main.py --distributed ..."
        )
    local_rank = int(os.environ["LOCAL_RANK"])
    if torch.cuda.is_available():
        torch.cuda.set_device(local_rank)
        device, backend = torch.device("cuda", local_rank), "nccl"
    else:
        device, backend = torch.device("cpu"), "gloo"
    dist.init_process_group(backend, **({} if timeout is None else {"timeout": timeout}))
    return dist.get_rank(), dist.get_world_size(), device
