"""The CLI's allocator setting: freed memory stays in the process for reuse."""

import os
import subprocess
import sys

import pytest

# Prints whether the setting applied and how many MiB of resident memory freeing a touched
# 128 MiB tensor gave back to the system.
PROBE = """
import os
import torch
from connectomics_mednext.engine.allocator import keep_freed_memory
applied = keep_freed_memory()
def resident_mib():
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE") / 2**20
block = torch.empty(128 * 2**20 // 4).fill_(1)
held = resident_mib()
del block
print(applied, held - resident_mib())
"""

linux_only = pytest.mark.skipif(not sys.platform.startswith("linux"), reason="glibc's mallopt is Linux-only")


def _probe(env=None):
    out = subprocess.run([sys.executable, "-c", PROBE], capture_output=True, text=True, check=True, env=env)
    applied, returned_mib = out.stdout.split()
    return applied == "True", float(returned_mib)


@linux_only
def test_freed_memory_stays_in_the_process():
    applied, returned_mib = _probe()
    assert applied
    assert returned_mib < 16  # not returned, so the next pass is not page-faulted in afresh


@linux_only
def test_the_users_glibc_variables_take_precedence():
    applied, returned_mib = _probe(dict(os.environ, MALLOC_TRIM_THRESHOLD_="0"))
    assert not applied
    assert returned_mib > 100
