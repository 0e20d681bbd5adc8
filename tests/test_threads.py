"""The thread count follows the CPUs the process is given: its affinity mask and its cgroup's CPU quota."""

import os

import pytest
import torch
from conftest import tiny_argv

from connectomics_mednext import cli
from connectomics_mednext.engine.threads import cgroup_cpu_quota, set_threads, usable_cpus

AFFINITY = len(os.sched_getaffinity(0))


def _cgroup(root, v2=None, v1=None):
    if v2 is not None:
        (root / "cpu.max").write_text(v2 + "\n")
    if v1 is not None:
        (root / "cpu").mkdir()
        (root / "cpu" / "cpu.cfs_quota_us").write_text(f"{v1[0]}\n")
        (root / "cpu" / "cpu.cfs_period_us").write_text(f"{v1[1]}\n")
    return str(root)


@pytest.mark.parametrize(
    "v2,v1,quota",
    [
        ("max 100000", None, None),
        ("150000 100000", None, 1.5),
        (None, (-1, 100000), None),
        (None, (50000, 100000), 0.5),
    ],
)
def test_the_cgroup_quota_is_read_from_v2_and_v1(tmp_path, v2, v1, quota):
    assert cgroup_cpu_quota(_cgroup(tmp_path, v2, v1)) == quota


def test_a_quota_below_the_affinity_mask_lowers_the_threads(tmp_path, monkeypatch):
    if AFFINITY < 2:
        pytest.skip("this process may use one CPU; a quota cannot lower it")
    monkeypatch.delenv("OMP_NUM_THREADS", raising=False)
    threads = torch.get_num_threads()
    try:
        assert usable_cpus(str(tmp_path)) == (
            AFFINITY,
            f"the CPU affinity mask allows {AFFINITY} of {os.cpu_count()} cores",
        )
        root = _cgroup(tmp_path, "50000 100000")
        assert set_threads(root).startswith("threads: 1 (the cgroup CPU quota is 0.5 CPUs (the CPU affinity mask")
        assert torch.get_num_threads() == 1
    finally:
        torch.set_num_threads(threads)


def test_omp_num_threads_wins(tmp_path, monkeypatch):
    monkeypatch.setenv("OMP_NUM_THREADS", "1")
    assert set_threads(_cgroup(tmp_path, "50000 100000")) == f"threads: {torch.get_num_threads()} (OMP_NUM_THREADS=1)"


def test_the_command_line_says_how_many_threads_and_why(tiny_run, tmp_path, capsys, monkeypatch):
    monkeypatch.delenv("OMP_NUM_THREADS", raising=False)
    threads = torch.get_num_threads()
    try:
        checkpoint = str(tiny_run / "trained" / "checkpoint_00002.pth.tar")
        cli.run_command(tiny_argv(tiny_run, "--inference", "--checkpoint", checkpoint, out=tmp_path))
    finally:
        torch.set_num_threads(threads)
    count, why = usable_cpus()
    assert f"threads: {count} ({why})" in capsys.readouterr().out
