"""A full disk, for real: a small tmpfs under the outputs. Skipped where this process may not mount one."""

import os
import subprocess
import sys

import h5py
import numpy as np
import pytest
from conftest import ROOT, tiny_argv

from connectomics_mednext import cli


@pytest.fixture
def small_disk(tmp_path):
    """A folder on a tmpfs of the size asked for; ``resize(size)`` frees space as a user would."""
    folder = tmp_path / "disk"
    folder.mkdir()

    def mount(size: str, *options: str) -> None:
        result = subprocess.run(
            ["mount", "-t", "tmpfs", "-o", ",".join([*options, f"size={size}"]), "tmpfs", str(folder)],
            capture_output=True,
            text=True,
        )
        if result.returncode != 0:
            pytest.skip(f"cannot mount a small tmpfs here: {result.stderr.strip() or result.returncode}")

    yield folder, mount, lambda size: mount(size, "remount")
    subprocess.run(["umount", str(folder)], capture_output=True)


def _main(argv):
    """scripts/main.py in its own process, as a user runs it: a crash of a library at exit would show here."""
    return subprocess.run(
        [sys.executable, os.path.join(ROOT, "scripts", "main.py"), *argv],
        env=dict(os.environ, PYTHONPATH=str(ROOT), OMP_NUM_THREADS="1"),
        capture_output=True,
        text=True,
        timeout=300,
    )


@pytest.mark.parametrize("name", ["result.h5", "result.zarr"])
def test_a_full_disk_publishes_nothing_and_the_rerun_gives_the_same_prediction(name, tiny_run, tmp_path, small_disk):
    if name.endswith(".zarr"):
        pytest.importorskip("tensorstore", reason="zarr output needs the zarr extra")
    checkpoint = str(tiny_run / "trained" / "checkpoint_00002.pth.tar")
    reference = tmp_path / "reference"
    cli.run_command(
        tiny_argv(
            tiny_run,
            "--inference",
            "--checkpoint",
            checkpoint,
            out=reference,
            overrides=["INFERENCE.OUTPUT_NAME", name, "INFERENCE.STREAM_BLOCK_SIZE", "[8, 0, 0]"],
        )
    )
    disk, mount, resize = small_disk
    mount("64k")
    filler = disk / "filler"
    filler.write_bytes(b"\0" * (64 * 1024 - 20 * 1024))  # 20 KiB left: less than the 38 KiB prediction
    argv = tiny_argv(
        tiny_run,
        "--inference",
        "--checkpoint",
        checkpoint,
        overrides=[
            "INFERENCE.OUTPUT_PATH",
            str(disk),
            "INFERENCE.OUTPUT_NAME",
            name,
            "INFERENCE.STREAM_BLOCK_SIZE",
            "[8, 0, 0]",
        ],
    )
    failed = _main(argv)
    assert failed.returncode == 2, failed.stderr[-2000:]
    assert failed.stderr.strip().splitlines() == [
        f"error: INFERENCE.OUTPUT_NAME {str(disk / name)!r} could not be written (No space left on device); nothing "
        "was published: free space (or fix the cause) and run the same command again, which continues from the "
        "last complete block."
    ]
    assert name not in os.listdir(disk) and not any(n.endswith(".lock") for n in os.listdir(disk))
    filler.unlink()
    resize("8m")
    rerun = _main(argv)
    assert rerun.returncode == 0, rerun.stderr[-2000:]
    assert sorted(os.listdir(disk)) == [name]
    if name.endswith(".h5"):
        with h5py.File(disk / name, "r") as a, h5py.File(reference / "test" / name, "r") as b:
            assert np.array_equal(a["vol0"][:], b["vol0"][:])
    else:
        import zarr

        assert np.array_equal(
            zarr.open(str(disk / name), mode="r")["vol0"][:],
            zarr.open(str(reference / "test" / name), mode="r")["vol0"][:],
        )


def test_a_full_disk_at_a_checkpoint_keeps_the_previous_one(tiny_run, small_disk):
    disk, mount, resize = small_disk
    size = os.path.getsize(tiny_run / "trained" / "checkpoint_00001.pth.tar")
    mount(f"{(size * 3 // 2) // 4096 * 4096}")  # room for one checkpoint, not two
    argv = tiny_argv(
        tiny_run,
        overrides=["DATASET.OUTPUT_PATH", str(disk), "SOLVER.ITERATION_TOTAL", "3", "MONITOR.LOG_OPT", "[1, 0, 0]"],
    )
    failed = _main(argv)
    first = str(disk / "checkpoint_00001.pth.tar")
    assert failed.returncode == 2, failed.stderr[-2000:]
    assert failed.stderr.strip().splitlines() == [
        f"error: The checkpoint {str(disk / 'checkpoint_00002.pth.tar')!r} could not be saved (No space left on "
        f"device); the previous checkpoint {first!r} is intact: free space and resume with --checkpoint {first}."
    ]
    assert sorted(os.listdir(disk)) == ["checkpoint_00001.pth.tar"]
    import torch

    assert torch.load(first, weights_only=True)["iteration"] == 1
    resize("8m")
    resumed = _main(
        [*argv[: argv.index("DATASET.OUTPUT_PATH")], "--checkpoint", "last", *argv[argv.index("DATASET.OUTPUT_PATH") :]]
    )
    assert resumed.returncode == 0, resumed.stderr[-2000:]
    assert torch.load(disk / "checkpoint_00003.pth.tar", weights_only=True)["iteration"] == 3
