"""The CLI's allocator setting: freed memory is reused instead of page-faulted in afresh."""
import os
import subprocess
import sys

import pytest

PROBE = """
import resource, sys
import torch
from connectomics_mednext.engine.allocator import keep_freed_memory
applied = keep_freed_memory()
def faults():
    return resource.getrusage(resource.RUSAGE_SELF).ru_minflt
values = 128 * 2**20 // 4
torch.empty(values).fill_(1)
before = faults()
torch.empty(values).fill_(1)
print(applied, faults() - before)
"""


def _probe(env=None):
    out = subprocess.run([sys.executable, "-c", PROBE], capture_output=True, text=True, check=True, env=env)
    applied, faults = out.stdout.split()
    return applied == "True", int(faults)


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="glibc's mallopt is Linux-only")
def test_a_freed_128_mib_tensor_is_reused_without_page_faults():
    applied, faults = _probe()
    assert applied
    assert faults < 1000  # 128 MiB is 32768 pages of 4 KiB


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="glibc's mallopt is Linux-only")
def test_the_users_glibc_variables_take_precedence():
    env = dict(os.environ, MALLOC_TRIM_THRESHOLD_="0")
    applied, faults = _probe(env)
    assert not applied
    assert faults > 30000
