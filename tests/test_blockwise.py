"""Blockwise decoding on daisy into a zarr label array: every mode against the whole-volume decoder, workers
killed mid-run, resume, failures named in one line, and the missing extra."""

import json
import os
import signal
import subprocess
import sys
import time

import h5py
import numpy as np
import pytest
from conftest import daisy_workers_of, same_partition, write_prediction

from connectomics_mednext.data.synthetic import make_em_volume
from connectomics_mednext.data.targets import make_target
from connectomics_mednext.evaluate import neuron_scores
from connectomics_mednext.segment import cli as segment_cli
from connectomics_mednext.segment import segment
from connectomics_mednext.segment.blockwise import is_complete_labels

pytest.importorskip("cc3d")
pytest.importorskip("daisy")
tensorstore = pytest.importorskip("tensorstore")
zarr = pytest.importorskip("zarr")

BLOCK = ["--block-size", "16", "32", "32"]


def read_labels(folder) -> np.ndarray:
    spec = {"driver": "zarr", "kvstore": {"driver": "file", "path": str(folder)}}
    return tensorstore.open(spec).result().read().result()


def run_segment(argv, cwd=None, **popen):
    command = [sys.executable, "-m", "connectomics_mednext.segment", *argv]
    return subprocess.Popen(command, cwd=cwd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, **popen)


@pytest.fixture(scope="module")
def cells():
    return make_em_volume((32, 64, 64), cells=12, mitochondria=6, seed=4)["label"].astype(np.int64)


@pytest.fixture(scope="module")
def predictions(cells, tmp_path_factory):
    folder = tmp_path_factory.mktemp("predictions")
    foreground = (cells > 0).astype(np.float32)
    boundary = make_target(cells, "4")[0]
    return {
        "binary": write_prediction(folder / "binary.h5", foreground[None]),
        "bc": write_prediction(folder / "bc.h5", np.stack([foreground, boundary * foreground])),
        "boundary": write_prediction(folder / "boundary.h5", boundary[None]),
        "affinity": write_prediction(folder / "affinity.h5", make_target(cells, "2")),
    }


@pytest.mark.parametrize("mode", ["binary", "bc", "boundary", "affinity"])
def test_every_mode_blockwise_matches_the_same_blocks_in_process_and_stays_near_the_whole_volume(
    tmp_path, predictions, cells, mode, capsys
):
    output = tmp_path / "seg.zarr" / "labels"
    argv = ["--prediction", predictions[mode], "--mode", mode, "--output", str(output), "--seed-min-size", "4"]
    assert segment_cli.run(argv + BLOCK + ["--workers", "2"]) > 0
    labels = read_labels(output)
    # daisy's workers run the very code one process runs on the same blocks.
    in_process = segment(predictions[mode], mode, block_size=(16, 32, 32), seed_min_size=4)
    assert same_partition(labels, in_process)
    whole = segment(predictions[mode], mode, seed_min_size=4)
    if mode in ("binary", "affinity"):  # components and affinity paths are kept whole across faces here
        assert same_partition(labels, whole)
    truth, found = neuron_scores(cells, labels.astype(np.int64)), neuron_scores(cells, whole.astype(np.int64))
    assert truth["arand"] <= found["arand"] + 0.01 and truth["voi_split"] <= found["voi_split"] + 0.05, (truth, found)
    assert is_complete_labels(str(output)) and not os.path.exists(tmp_path / "seg.zarr" / ".labels.work")
    # Another zarr reader opens it, and the container says where it lies (OME-Zarr 0.4).
    group = zarr.open_group(str(tmp_path / "seg.zarr"), mode="r")
    np.testing.assert_array_equal(group["labels"][:], labels)
    assert group.attrs["multiscales"][0]["datasets"][0]["path"] == "labels"
    assert f"Wrote {output}" in capsys.readouterr().out


def test_the_voxel_size_comes_from_the_prediction(tmp_path, cells):
    path = write_prediction(tmp_path / "p.h5", make_target(cells, "4")[0][None])
    with h5py.File(path, "a") as f:
        f["vol0"].attrs["resolution"] = np.array([20.0, 10.0, 10.0])
    output = tmp_path / "seg.zarr" / "labels"
    segment_cli.run(["--prediction", path, "--mode", "boundary", "--output", str(output)] + BLOCK)
    attributes = json.loads((output / ".zattrs").read_text())
    assert attributes["resolution"] == [20.0, 10.0, 10.0]
    # seed_distance defaults to 3 voxels of the finest axis, in the prediction's units (nm).
    assert attributes["connectomics_mednext"]["options"]["seed_distance"] == 30.0
    group = json.loads((tmp_path / "seg.zarr" / ".zattrs").read_text())
    transform = group["multiscales"][0]["datasets"][0]["coordinateTransformations"][0]
    assert transform["scale"] == [20.0, 10.0, 10.0] and group["multiscales"][0]["axes"][0]["unit"] == "nanometer"


def _slow_prediction(tmp_path, cells) -> str:
    # Many small blocks, so that the run lasts long enough to kill a worker in the middle of it.
    big = np.tile(make_target(cells, "4")[0], (2, 2, 2))
    return write_prediction(tmp_path / "p.h5", big[None])


def test_a_worker_killed_mid_run_has_its_blocks_retried_and_the_run_finishes(tmp_path, cells):
    path = _slow_prediction(tmp_path, cells)
    output = tmp_path / "seg.zarr" / "labels"
    argv = ["--prediction", path, "--mode", "boundary", "--output", str(output)] + BLOCK
    process = run_segment(argv + ["--workers", "2"])
    deadline, killed = time.time() + 60, None
    while time.time() < deadline and killed is None and process.poll() is None:
        workers = daisy_workers_of(process.pid)
        if workers:
            time.sleep(0.5)  # let it take a block
            os.kill(workers[0], signal.SIGKILL)
            killed = workers[0]
        time.sleep(0.05)
    log = process.communicate(timeout=300)[0]
    assert killed is not None and process.returncode == 0, log
    assert "worker exited with error" in log or "block lost" in log, log
    expected = segment(path, "boundary", block_size=(16, 32, 32))
    assert same_partition(read_labels(output), expected) and is_complete_labels(str(output))


def test_a_rerun_after_the_whole_job_is_killed_does_only_the_missing_blocks(tmp_path, cells):
    path = _slow_prediction(tmp_path, cells)
    output = tmp_path / "seg.zarr" / "labels"
    argv = ["--prediction", path, "--mode", "boundary", "--output", str(output)] + BLOCK
    process = run_segment(argv, start_new_session=True)
    markers = tmp_path / "seg.zarr" / ".labels.work" / "ids"
    deadline = time.time() + 120
    while time.time() < deadline and len(list(markers.glob("*.npz"))) < 10:
        time.sleep(0.05)
    os.killpg(process.pid, signal.SIGKILL)  # the scheduler and its workers, as a dying node would
    process.communicate()
    assert not is_complete_labels(str(output))
    done_before = len(list(markers.glob("*.npz")))
    assert 10 <= done_before < 64
    rerun = run_segment(argv)
    log = rerun.communicate(timeout=300)[0]
    assert rerun.returncode == 0, log
    assert "resuming" in log
    skipped = [line for line in log.splitlines() if line.strip().startswith("fragments")][-1].split()
    assert int(skipped[4]) >= done_before - 2, log  # daisy's summary: blocks, completed, skipped, ...
    assert same_partition(read_labels(output), segment(path, "boundary", block_size=(16, 32, 32)))


def test_a_failing_block_is_named_in_one_line_and_nothing_is_published(tmp_path, predictions, capsys):
    prediction = tmp_path / "p.zarr"
    volume = zarr.open_group(str(prediction), mode="w", zarr_format=2)
    with h5py.File(predictions["binary"], "r") as f:
        volume.create_array("vol0", data=f["vol0"][:], chunks=(1, 16, 32, 32))
    volume.attrs["connectomics_mednext"] = {"complete": True}
    (prediction / "vol0" / "0.1.1.1").write_bytes(b"not a chunk")
    output = tmp_path / "seg.zarr" / "labels"
    argv = ["--prediction", str(prediction), "--mode", "binary", "--output", str(output)] + BLOCK
    with pytest.raises(SystemExit) as stopped:
        segment_cli.main(argv)
    err = capsys.readouterr().err.strip().splitlines()
    assert stopped.value.code == 2 and "Traceback" not in err[-1]
    assert err[-1].startswith(
        "error: 1 of 8 blocks of task 'fragments' failed, the first at z 16:32, y 32:64, x 32:64: "
    ), err[-1]
    assert "0.1.1.1" in err[-1], err[-1]
    assert "run the same command again" in err[-1]
    assert not os.path.exists(output) or not is_complete_labels(str(output))


def test_changed_options_start_afresh_and_a_foreign_output_is_refused(tmp_path, predictions, capsys):
    output = tmp_path / "seg.zarr" / "labels"
    argv = ["--prediction", predictions["binary"], "--mode", "binary", "--output", str(output)] + BLOCK
    first = segment_cli.run(argv)
    second = segment_cli.run(argv + ["--threshold", "0.99", "--min-size", "100000"])
    assert first > 0 and second == 0 and read_labels(output).max() == 0
    foreign = tmp_path / "seg.zarr" / "raw"
    zarr.open_array(str(foreign), mode="w", shape=(4, 4, 4), dtype="uint8", zarr_format=2)
    with pytest.raises(SystemExit):
        segment_cli.main(["--prediction", predictions["binary"], "--mode", "binary", "--output", str(foreign)])
    err = capsys.readouterr().err
    assert "--output" in err and "is not a label array written by this tool" in err


@pytest.mark.parametrize("output", ["seg.zarr", "seg.n5/labels"])
def test_an_output_that_is_no_zarr_array_is_refused(tmp_path, predictions, capsys, output):
    argv = ["--prediction", predictions["binary"], "--mode", "binary", "--output", str(tmp_path / output)]
    with pytest.raises(SystemExit):
        segment_cli.main(argv)
    assert "is not an array in a zarr container; name one, e.g. seg.zarr/labels" in capsys.readouterr().err
    assert os.listdir(tmp_path) == []


def test_blocks_too_large_for_the_workers_memory_are_refused(tmp_path, predictions, capsys):
    output = tmp_path / "seg.zarr" / "labels"
    argv = ["--prediction", predictions["boundary"], "--mode", "boundary", "--output", str(output)]
    with pytest.raises(SystemExit):
        segment_cli.main(argv + ["--workers", "2", "--max-memory", "0.001"])
    err = capsys.readouterr().err
    assert "--mode boundary needs about" in err and "--max-memory allows 0.0 GiB" in err
    assert os.listdir(tmp_path) == []


def test_a_missing_prediction_leaves_no_container(tmp_path, capsys):
    argv = ["--prediction", str(tmp_path / "none.h5"), "--mode", "binary", "--output", str(tmp_path / "s.zarr/l")]
    with pytest.raises(SystemExit):
        segment_cli.main(argv)
    assert "does not exist" in capsys.readouterr().err and os.listdir(tmp_path) == []


def test_workers_need_a_zarr_output(tmp_path, predictions, capsys):
    argv = ["--prediction", predictions["binary"], "--mode", "binary", "--output", str(tmp_path / "s.h5")]
    with pytest.raises(SystemExit):
        segment_cli.main(argv + ["--workers", "2"])
    assert "--workers and --worker-command need a zarr output" in capsys.readouterr().err


def test_a_missing_daisy_is_named_with_the_extra(tmp_path, predictions, monkeypatch, capsys):
    monkeypatch.setitem(sys.modules, "daisy.v2", None)
    argv = ["--prediction", predictions["binary"], "--mode", "binary", "--output", str(tmp_path / "s.zarr/labels")]
    with pytest.raises(SystemExit):
        segment_cli.main(argv)
    err = capsys.readouterr().err
    assert "needs daisy: pip install connectomics-mednext[scale]" in err and len(err.strip().splitlines()) == 1


def test_a_worker_command_starts_the_workers(tmp_path, predictions):
    output = tmp_path / "seg.zarr" / "labels"
    log = tmp_path / "started"
    # A stand-in for srun: records that it ran, then runs the worker it was given.
    command = f"sh -c 'echo started >> {log}; exec \"$@\"' worker"
    argv = ["--prediction", predictions["binary"], "--mode", "binary", "--output", str(output)] + BLOCK
    assert segment_cli.run(argv + ["--workers", "2", "--worker-command", command]) > 0
    assert log.read_text().count("started") >= 3  # one worker at least per task
    assert same_partition(read_labels(output), segment(predictions["binary"], "binary"))


def test_a_volume_larger_than_the_memory_given_decodes_blockwise(tmp_path, predictions, capsys):
    # --max-memory below what the whole volume needs, above what a block with its context needs.
    whole = ["--prediction", predictions["boundary"], "--mode", "boundary", "--max-memory", "0.009"]
    with pytest.raises(SystemExit):
        segment_cli.main(whole + ["--output", str(tmp_path / "s.h5")])
    assert "needs about 0.0 GiB for a block of 131072 voxels" in capsys.readouterr().err
    output = tmp_path / "seg.zarr" / "labels"
    assert segment_cli.run(whole + ["--output", str(output)] + BLOCK) > 0
    assert same_partition(read_labels(output), segment(predictions["boundary"], "boundary", block_size=(16, 32, 32)))


def test_a_second_run_on_the_same_output_is_refused_while_the_first_runs(tmp_path, predictions, capsys):
    output = tmp_path / "seg.zarr" / "labels"
    output.parent.mkdir()
    holder = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
    try:  # a live process of this host holds the lock, as a first run would
        (tmp_path / "seg.zarr" / "labels.lock").write_text(json.dumps({"pid": holder.pid, "host": os.uname().nodename}))
        with pytest.raises(SystemExit):
            segment_cli.main(["--prediction", predictions["binary"], "--mode", "binary", "--output", str(output)])
    finally:
        holder.kill()
        holder.wait()
    assert f"--output '{output}' is being written by process {holder.pid}" in capsys.readouterr().err
    assert not output.exists()
    # Once its holder is gone, the lock is taken over and the run completes.
    assert segment_cli.run(["--prediction", predictions["binary"], "--mode", "binary", "--output", str(output)]) > 0


def test_records_removed_behind_daisys_back_are_named_not_decoded_into_holes(
    tmp_path, predictions, capsys, monkeypatch
):
    from connectomics_mednext.segment import blockwise

    output = tmp_path / "seg.zarr" / "labels"
    argv = ["--prediction", predictions["binary"], "--mode", "binary", "--output", str(output)] + BLOCK
    original = blockwise._merge

    def merge_after_a_loss(job):
        os.remove(os.path.join(job.work, "ids", "3.npz"))
        return original(job)

    monkeypatch.setattr(blockwise, "_merge", merge_after_a_loss)
    with pytest.raises(SystemExit):
        segment_cli.main(argv)
    assert "holds the records of 7 and 8 of 8 blocks" in capsys.readouterr().err
    assert not is_complete_labels(str(output))


@pytest.mark.parametrize(
    "flags, message",
    [
        (
            ["--block-size", "0", "32", "32"],
            "--block-size is [0, 32, 32], but must be 3 positive voxel counts (z, y, x).",
        ),
        (["--workers", "0"], "--workers is 0, but must be 1 or more."),
        (["--block-context", "-1"], "--block-context is -1, but must be 0 or more."),
    ],
)
def test_values_at_the_edge_get_one_sentence(tmp_path, predictions, capsys, flags, message):
    argv = ["--prediction", predictions["binary"], "--mode", "binary", "--output", str(tmp_path / "s.zarr/labels")]
    with pytest.raises(SystemExit):
        segment_cli.main(argv + flags)
    err = capsys.readouterr().err
    assert err.strip() == f"error: {message}" and os.listdir(tmp_path) == []
