"""Prediction on daisy workers (--workers N, zarr output): the bytes of one process, a killed worker's block
retried, a killed job resumed, and the flags refused where they cannot work."""

import os
import signal
import subprocess
import sys
import time

import h5py
import numpy as np
import pytest
from conftest import BASE, ROOT, daisy_workers_of, tiny_argv

from connectomics_mednext import cli
from connectomics_mednext.data.synthetic import make_em_volume
from connectomics_mednext.io import open_prediction

pytest.importorskip("daisy")
pytest.importorskip("tensorstore")

MAIN = str(ROOT / "scripts" / "main.py")
# Small blocks of a larger volume: enough blocks that a run lasts long enough to be killed in the middle.
BLOCKS = ["INFERENCE.STREAM_BLOCK_SIZE", "[8, 16, 16]", "INFERENCE.SAMPLES_PER_BATCH", "1"]


@pytest.fixture(scope="module")
def volume(tmp_path_factory):
    folder = tmp_path_factory.mktemp("daisy_input")
    with h5py.File(folder / "big.h5", "w") as f:
        f.create_dataset("main", data=make_em_volume((32, 64, 64), cells=8, mitochondria=4, seed=5)["image"])
    return folder / "big.h5"


@pytest.fixture(scope="module")
def expected(tiny_run, volume, tmp_path_factory):
    """The prediction of one process, which the workers must match byte for byte."""
    out = tmp_path_factory.mktemp("single")
    run = start(command(tiny_run, out, "single.h5", "INFERENCE.IMAGE_NAME", str(volume)))
    log = run.communicate(timeout=300)[0]
    assert run.returncode == 0, log
    with h5py.File(out / "single.h5", "r") as f:
        return f["vol0"][:]


def command(tiny_run, out, name, *flags):
    """The tiny run's inference into ``out/name``, with ``flags``."""
    checkpoint = str(tiny_run / "trained" / "checkpoint_00002.pth.tar")
    overrides = ["INFERENCE.OUTPUT_PATH", str(out), "INFERENCE.OUTPUT_NAME", name] + BLOCKS
    return tiny_argv(tiny_run, "--inference", "--checkpoint", checkpoint, *flags, overrides=overrides)


def start(argv, **popen):
    environment = dict(os.environ, OMP_NUM_THREADS="1")  # the same arithmetic in every process
    return subprocess.Popen(
        [sys.executable, MAIN, *argv],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        env=environment,
        **popen,
    )


def with_image(argv, volume):
    return argv + ["INFERENCE.IMAGE_NAME", str(volume)]


def markers(out, name):
    folder = out / f"{name}.partial" / ".progress" / "vol0"
    return list(folder.glob("*.done")) if folder.is_dir() else []


def test_workers_write_the_bytes_of_one_process_and_survive_a_killed_worker(tiny_run, volume, expected, tmp_path):
    run = start(with_image(command(tiny_run, tmp_path, "d.zarr", "--workers", "2"), volume))
    deadline, killed = time.time() + 120, False
    while time.time() < deadline and not killed and run.poll() is None:
        if markers(tmp_path, "d.zarr"):  # workers are computing blocks: kill one in the middle of its next
            workers = daisy_workers_of(run.pid)
            if workers:
                os.kill(workers[0], signal.SIGKILL)
                killed = True
        time.sleep(0.02)
    log = run.communicate(timeout=300)[0]
    assert killed and run.returncode == 0, log
    assert "worker exited with error" in log or "block lost" in log, log
    assert np.array_equal(open_prediction(str(tmp_path / "d.zarr"))[:], expected)
    assert sorted(os.listdir(tmp_path)) == ["d.zarr"]


def test_a_rerun_after_the_job_is_killed_computes_only_the_missing_blocks(tiny_run, volume, expected, tmp_path):
    argv = with_image(command(tiny_run, tmp_path, "d.zarr", "--workers", "2"), volume)
    run = start(argv, start_new_session=True)
    deadline = time.time() + 120
    while time.time() < deadline and len(markers(tmp_path, "d.zarr")) < 10:
        time.sleep(0.02)
    os.killpg(run.pid, signal.SIGKILL)
    run.communicate()
    done = len(markers(tmp_path, "d.zarr"))
    assert 10 <= done < 64 and not (tmp_path / "d.zarr").exists()
    rerun = start(argv)
    log = rerun.communicate(timeout=300)[0]
    assert rerun.returncode == 0, log
    summary = [line.split() for line in log.splitlines() if line.strip().startswith("predict_vol0")][-1]
    assert int(summary[4]) >= done, log  # blocks, completed, skipped: daisy skipped what had a marker
    assert np.array_equal(open_prediction(str(tmp_path / "d.zarr"))[:], expected)


@pytest.mark.parametrize(
    "flags, name, message",
    [
        (["--workers", "2"], "p.h5", "--workers needs a zarr prediction that every worker can write"),
        (["--workers", "0"], "p.zarr", "--workers is 0, but must be 1 or more"),
        (["--worker-command", "srun"], "p.zarr", "--worker-command starts daisy workers; give --workers N too"),
        (["--workers", "2", "--distributed"], "p.zarr", "--workers and --distributed are two ways"),
    ],
)
def test_worker_flags_are_refused_where_they_cannot_work(tiny_run, tmp_path, capsys, flags, name, message):
    with pytest.raises(SystemExit) as stopped:
        cli.main(command(tiny_run, tmp_path, name, *flags))
    err = capsys.readouterr().err
    assert stopped.value.code == 2 and message in err and "Traceback" not in err, err
    assert not os.listdir(tmp_path)


def test_a_refused_worker_flag_creates_no_output_folder(tiny_run, tmp_path, capsys):
    with pytest.raises(SystemExit):
        cli.main(command(tiny_run, tmp_path / "new", "p.h5", "--workers", "2"))
    assert "--workers needs a zarr prediction" in capsys.readouterr().err and not (tmp_path / "new").exists()


def test_workers_are_refused_for_training(tiny_run, capsys):
    with pytest.raises(SystemExit):
        cli.main(
            ["--engine", "native", "--config-base", BASE, "--config-file", str(tiny_run / "cfg.yaml"), "--workers", "2"]
        )
    assert "--workers and --worker-command share the blocks of --inference" in capsys.readouterr().err


def test_a_missing_daisy_is_named_with_the_extra(tiny_run, tmp_path, monkeypatch, capsys):
    monkeypatch.setitem(sys.modules, "daisy.v2", None)
    with pytest.raises(SystemExit):
        cli.main(command(tiny_run, tmp_path, "p.zarr", "--workers", "2"))
    assert "Prediction on daisy workers needs daisy: pip install connectomics-mednext[scale]" in capsys.readouterr().err


def test_the_slurm_example_predicts_and_segments_through_its_worker_command(tiny_run, tmp_path):
    pytest.importorskip("cc3d")
    # A stand-in for srun: drops its options and runs the worker it was given, here.
    bin_folder = tmp_path / "bin"
    bin_folder.mkdir()
    srun = bin_folder / "srun"
    srun.write_text('#!/bin/sh\nwhile [ "${1#-}" != "$1" ]; do shift; done\necho "$@" >> "$SRUN_LOG"\nexec "$@"\n')
    srun.chmod(0o755)
    environment = dict(
        os.environ,
        PATH=f"{bin_folder}{os.pathsep}{os.path.dirname(sys.executable)}{os.pathsep}{os.environ['PATH']}",
        SRUN_LOG=str(tmp_path / "srun.log"),
        CHECKPOINT=str(tiny_run / "trained" / "checkpoint_00002.pth.tar"),
        INPUT=str(tiny_run / "image.h5"),
        OUTPUT=str(tmp_path / "out"),
        MODE="binary",
        PREDICT_WORKERS="1",
        SEGMENT_WORKERS="1",
        OMP_NUM_THREADS="1",
    )
    script = ROOT / "scripts" / "slurm_predict_and_segment.sh"
    result = subprocess.run(["bash", str(script)], env=environment, capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stdout + result.stderr
    started = (tmp_path / "srun.log").read_text().splitlines()
    assert any("connectomics_mednext.worker" in line for line in started) and len(started) >= 4
    assert open_prediction(str(tmp_path / "out" / "volume.zarr")).shape[1:] == (24, 40, 40)
    assert (tmp_path / "out" / "segmentation.zarr" / "neurons" / ".zattrs").is_file()
