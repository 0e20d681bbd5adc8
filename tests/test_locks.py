"""One writer per output: a second run on a prediction or training folder is refused; a dead holder's lock is taken."""

import json
import os
import signal
import socket
import subprocess
import sys
import textwrap

import h5py
import pytest
from conftest import ROOT, tiny_argv

from connectomics_mednext import cli
from connectomics_mednext.errors import InputError
from connectomics_mednext.io import OutputLock

HOLD = textwrap.dedent(
    """
    import sys, time
    from connectomics_mednext.io import OutputLock
    OutputLock(sys.argv[1], "key", "output").acquire()
    print("held", flush=True)
    time.sleep(60)
    """
)


@pytest.fixture
def holder():
    """Start a real process that takes a lock and keeps it; yields a function(path) -> that process."""
    started = []

    def hold(path):
        process = subprocess.Popen(
            [sys.executable, "-c", HOLD, str(path)],
            stdout=subprocess.PIPE,
            text=True,
            env=dict(os.environ, PYTHONPATH=str(ROOT)),
        )
        assert process.stdout.readline().strip() == "held"
        started.append(process)
        return process

    yield hold
    for process in started:
        process.kill()
        process.wait()


def _infer_argv(run, out):
    checkpoint = str(run / "trained" / "checkpoint_00002.pth.tar")
    return tiny_argv(run, "--inference", "--checkpoint", checkpoint, out=out)


def test_a_second_inference_on_the_same_output_is_refused_then_a_killed_holder_is_taken_over(
    tiny_run, tmp_path, holder, capsys
):
    output = tmp_path / "out" / "test" / "result.h5"
    output.parent.mkdir(parents=True)
    running = holder(str(output) + ".lock")
    with pytest.raises(SystemExit) as exit_info:
        cli.main(_infer_argv(tiny_run, tmp_path / "out"))
    assert exit_info.value.code == 2
    assert capsys.readouterr().err.strip() == (
        f"error: INFERENCE.OUTPUT_NAME {str(output)!r} is being written by process {running.pid} on "
        f"{socket.gethostname()} (since {json.load(open(str(output) + '.lock'))['since']}); wait for it to finish, "
        f"or remove {str(output) + '.lock'!r} if that process is gone."
    )
    assert os.listdir(output.parent) == ["result.h5.lock"]  # the holder's output was not touched
    running.send_signal(signal.SIGKILL)
    running.wait()
    cli.run_command(_infer_argv(tiny_run, tmp_path / "out"))
    assert f"took over the lock of process {running.pid}, which is gone" in capsys.readouterr().out
    assert os.listdir(output.parent) == ["result.h5"]
    with h5py.File(output, "r") as f:
        assert f["vol0"].shape == (1, 24, 40, 40)


def test_a_lock_held_on_another_host_is_refused(tmp_path):
    path = tmp_path / "result.h5.lock"
    path.write_text(json.dumps({"pid": os.getpid(), "host": "another-node", "since": "then"}))
    with pytest.raises(InputError, match=r"is being written by process \d+ on another-node \(since then\)"):
        OutputLock(str(path), "INFERENCE.OUTPUT_NAME", str(tmp_path / "result.h5")).acquire()
    assert path.exists()


def test_the_lock_is_released_when_the_run_fails(tmp_path):
    lock = OutputLock(str(tmp_path / "x.lock"), "key", "x")
    with pytest.raises(RuntimeError):
        with lock:
            assert json.loads((tmp_path / "x.lock").read_text())["pid"] == os.getpid()
            raise RuntimeError("a failed run")
    assert os.listdir(tmp_path) == []


def test_two_trainings_never_share_a_folder(tiny_run, tmp_path, holder, capsys):
    out = tmp_path / "out"
    out.mkdir()
    running = holder(out / ".lock")
    with pytest.raises(SystemExit) as exit_info:
        cli.main(tiny_argv(tiny_run, out=out))
    assert exit_info.value.code == 2
    assert f"error: DATASET.OUTPUT_PATH {str(out)!r} is being written by process {running.pid} on" in (
        capsys.readouterr().err
    )
    assert os.listdir(out) == [".lock"]
    running.kill()
    running.wait()
    cli.run_command(tiny_argv(tiny_run, out=out))
    assert sorted(n for n in os.listdir(out) if not n.startswith("log")) == [
        "checkpoint_00001.pth.tar",
        "checkpoint_00002.pth.tar",
    ]
