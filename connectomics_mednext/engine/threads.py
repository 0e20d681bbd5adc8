"""How many CPU threads this process may really use: its affinity mask and its cgroup's CPU quota.

A SLURM job or a container often sees every core of the node but is given a few: SLURM narrows
the affinity mask, containers set a CPU quota (``cpu.max`` in cgroup v2, ``cpu.cfs_quota_us`` in
v1). Running more threads than that makes OpenMP threads wait on one another at every parallel
region, and our kernels have many. ``OMP_NUM_THREADS``, when set, wins: it is the user's choice.
"""

import math
import os
from typing import Optional, Tuple

import torch

CGROUP = "/sys/fs/cgroup"


def _read(path: str) -> Optional[str]:
    try:
        with open(path, encoding="ascii") as handle:
            return handle.read().strip()
    except OSError:
        return None


def cgroup_cpu_quota(root: str = CGROUP) -> Optional[float]:
    """The CPUs this process's cgroup may use per unit of time (1.5 for 150 ms per 100 ms), or None without a quota.

    Args:
        root: where the cgroup file system is mounted.
    """
    v2 = _read(os.path.join(root, "cpu.max"))  # "max 100000" or "200000 100000"
    if v2:
        quota, _, period = v2.partition(" ")
        return None if quota == "max" or not period else int(quota) / int(period)
    quota, period = (
        _read(os.path.join(root, "cpu", "cpu.cfs_quota_us")),
        _read(os.path.join(root, "cpu", "cpu.cfs_period_us")),
    )
    if quota is None or period is None or int(quota) <= 0:
        return None
    return int(quota) / int(period)


def usable_cpus(root: str = CGROUP) -> Tuple[int, str]:
    """(CPUs, what limits them): the affinity mask's count, lowered to the cgroup quota rounded up.

    Args:
        root: where the cgroup file system is mounted.
    """
    affinity = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1
    why = f"the CPU affinity mask allows {affinity} of {os.cpu_count()} cores"
    quota = cgroup_cpu_quota(root)
    if quota is not None and math.ceil(quota) < affinity:
        return max(1, math.ceil(quota)), f"the cgroup CPU quota is {quota:g} CPUs ({why})"
    return affinity, why


def set_threads(root: str = CGROUP, sharers: int = 1) -> str:
    """Set torch's threads to :func:`usable_cpus` unless ``OMP_NUM_THREADS`` is set; return the line that says so.

    Args:
        root: where the cgroup file system is mounted.
        sharers: processes of this job sharing those CPUs (daisy's local workers), which split them.
    """
    if os.environ.get("OMP_NUM_THREADS"):
        return f"threads: {torch.get_num_threads()} (OMP_NUM_THREADS={os.environ['OMP_NUM_THREADS']})"
    count, why = usable_cpus(root)
    if sharers > 1:
        count, why = max(1, count // sharers), f"{why}, shared by {sharers} workers"
    torch.set_num_threads(count)
    return f"threads: {count} ({why})"
