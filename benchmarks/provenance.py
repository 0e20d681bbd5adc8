"""What a benchmark's figures were measured on: the machine, and the commit of the code.

Every results file the docs quote carries this record, and ``tests/test_docs.py`` checks that the
code a figure describes has not changed since its commit, so no quoted figure is older than its code.
"""

import datetime
import os
import platform
import subprocess
import sys
from importlib import metadata
from typing import Dict, List

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def cpu_name() -> str:
    """The CPU's model name, as /proc/cpuinfo gives it (the platform's processor elsewhere)."""
    try:
        with open("/proc/cpuinfo", encoding="utf-8") as handle:
            for line in handle:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def _git(*args: str) -> str:
    return subprocess.run(["git", *args], cwd=ROOT, capture_output=True, text=True, check=True).stdout


def uncommitted(paths: List[str]) -> List[str]:
    """Files under ``paths`` that differ from the commit (modified, added or untracked).

    Args:
        paths: folders or files relative to the repository root.
    """
    return [line[3:] for line in _git("status", "--porcelain", "--", *paths).splitlines()]


def provenance(describes: List[str]) -> Dict[str, object]:
    """The record a results file carries: machine, software, date, commit and what it describes.

    Args:
        describes: the folders and files whose code the figures measure, relative to the root.
    """
    try:
        cores = len(os.sched_getaffinity(0))
    except AttributeError:
        cores = os.cpu_count()
    memory_gib = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") / 2**30
    try:
        torch_version = metadata.version("torch")
    except metadata.PackageNotFoundError:
        torch_version = None
    return {
        "machine": f"{cpu_name()}, {cores} cores, {memory_gib:.0f} GiB",
        "python": sys.version.split()[0],
        "torch": torch_version,
        "date": datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%d %H:%M UTC"),
        "commit": _git("rev-parse", "HEAD").strip(),
        "describes": describes,
        "uncommitted": uncommitted(describes),
    }
