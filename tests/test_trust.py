"""No silently wrong output, no lost work: the resume key, seeds, divergence, signals, leftovers."""

import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import time

import conftest
import h5py
import numpy as np
import pytest
import torch
from conftest import ROOT, tiny_argv

import connectomics_mednext
from connectomics_mednext import cli
from connectomics_mednext.config import get_native_defaults
from connectomics_mednext.engine import checkpoint as checkpoint_module
from connectomics_mednext.engine.trainer import NonFiniteLoss
from connectomics_mednext.pytc import unused_mednext_keys, warn_unused_mednext_keys

# Planes 0..KILLED_AT of a "killed" prediction hold this value, which no real run writes there.
MARK, KILLED_AT = 7, 12


def _infer(run, out, checkpoint, *overrides):
    cli.run_command(tiny_argv(run, "--inference", "--checkpoint", str(checkpoint), out=out, overrides=overrides))
    return out / "test" / "result.h5"


def _as_if_killed(result):
    """Turn a finished prediction into the .partial a kill at plane KILLED_AT leaves, its done planes marked."""
    partial = str(result) + ".partial"
    os.replace(result, partial)
    with h5py.File(partial, "a") as f:
        volume = f["vol0"]
        volume[:, :KILLED_AT] = MARK
        volume[:, KILLED_AT:] = 0
        done = volume.attrs["done_z"]
        done[0] = KILLED_AT
        volume.attrs["done_z"] = done


def _overwrite_checkpoint(case, run):
    shutil.copy(run / "trained" / "checkpoint_00002.pth.tar", case / "weights.pth.tar")


def _rewrite_image(case, run):
    with h5py.File(case / "image.h5", "a") as f:
        f["main"][:] = 255 - f["main"][:]


def _fake_output_dtype(case, run):
    import json

    with h5py.File(case / "out" / "test" / "result.h5.partial", "a") as f:
        key = json.loads(f["vol0"].attrs["resume_key"])
        key["dtype"] = "float32"
        f["vol0"].attrs["resume_key"] = json.dumps(key)


# (field named in the message, overrides of the first run, change before the rerun: overrides or a function)
RESUME_FIELDS = [
    ("weights", [], _overwrite_checkpoint),
    ("input.", [], _rewrite_image),
    ("output_act", [], ["INFERENCE.OUTPUT_ACT", "['tanh']"]),
    ("aug_num", [], ["INFERENCE.AUG_NUM", "4"]),
    ("aug_mode", ["INFERENCE.AUG_NUM", "4"], ["INFERENCE.AUG_NUM", "4", "INFERENCE.AUG_MODE", "max"]),
    ("blending", [], ["INFERENCE.BLENDING", "bump"]),
    ("window", [], ["INFERENCE.INPUT_SIZE", "[16, 32, 16]"]),
    ("stride", [], ["INFERENCE.STRIDE", "[4, 16, 16]"]),
    ("pad", [], ["INFERENCE.PAD_SIZE", "[2, 4, 4]"]),
    ("pad_mode", ["INFERENCE.PAD_SIZE", "[2, 4, 4]"], ["INFERENCE.PAD_SIZE", "[2, 4, 4]", "DATASET.PAD_MODE", "edge"]),
    ("blocks", [], ["INFERENCE.STREAM_BLOCK_SIZE", "[0, 24, 24]"]),
    ("dtype", [], _fake_output_dtype),
]


def _case(run, tmp_path):
    shutil.copy(run / "trained" / "checkpoint_00001.pth.tar", tmp_path / "weights.pth.tar")
    shutil.copy(run / "image.h5", tmp_path / "image.h5")
    return ["DATASET.INPUT_PATH", f"{tmp_path}/"]


@pytest.mark.parametrize("field,first,change", RESUME_FIELDS, ids=[f[0] for f in RESUME_FIELDS])
def test_a_changed_computation_is_not_resumed(field, first, change, tiny_run, tmp_path, capsys):
    data = _case(tiny_run, tmp_path)
    out, weights = tmp_path / "out", tmp_path / "weights.pth.tar"
    _as_if_killed(_infer(tiny_run, out, weights, *data, *first))
    rerun = first
    if callable(change):
        change(tmp_path, tiny_run)
    else:
        rerun = change
    capsys.readouterr()
    result = _infer(tiny_run, out, weights, *data, *rerun)
    said = capsys.readouterr().out
    assert "vol0 was started with other" in said and field in said.split("vol0 was started with other")[1]
    assert "starting it afresh" in said
    with h5py.File(result, "r") as f:
        assert not (f["vol0"][:, :KILLED_AT] == MARK).all()  # nothing of the old run is left


def _strip_config(checkpoint):
    """Make a checkpoint as PyTorch Connectomics writes it: weights, no config."""
    state = torch.load(checkpoint, weights_only=True)
    del state["config"]
    torch.save(state, checkpoint)


# (the network argument named in the message, the config change): weights that fit both networks.
NETWORK_CHANGES = [
    ("do_res", ["MODEL.MEDNEXT.DO_RES", "False"]),
    ("norm_type", ["MODEL.MEDNEXT.NORM", "layer"]),
    ("strides", ["MODEL.MEDNEXT.STRIDES", "[[1, 2, 2], 2, 2, 2]"]),
]


@pytest.mark.parametrize("field,change", NETWORK_CHANGES, ids=[c[0] for c in NETWORK_CHANGES])
def test_another_network_with_the_same_weights_is_not_resumed(field, change, tiny_run, tmp_path, capsys):
    data = _case(tiny_run, tmp_path)
    out, weights = tmp_path / "out", tmp_path / "weights.pth.tar"
    _strip_config(weights)  # else the checkpoint's own config refuses the other network at once
    _as_if_killed(_infer(tiny_run, out, weights, *data))
    capsys.readouterr()
    result = _infer(tiny_run, out, weights, *data, *change)
    said = capsys.readouterr().out
    assert f"vol0 was started with other network.{field}; starting it afresh" in said
    with h5py.File(result, "r") as f:
        assert not (f["vol0"][:, :KILLED_AT] == MARK).all()


def test_the_same_computation_is_resumed(tiny_run, tmp_path, capsys):
    data = _case(tiny_run, tmp_path)
    out, weights = tmp_path / "out", tmp_path / "weights.pth.tar"
    _as_if_killed(_infer(tiny_run, out, weights, *data))
    capsys.readouterr()
    result = _infer(tiny_run, out, weights, *data)
    assert "started with other" not in capsys.readouterr().out
    with h5py.File(result, "r") as f:
        assert (f["vol0"][:, :KILLED_AT] == MARK).all()  # only the missing planes were computed
        assert not (f["vol0"][:, KILLED_AT:] == 0).all()


def _train(run, out, *flags, overrides=()):
    cli.run_command(tiny_argv(run, *flags, out=out, overrides=overrides))
    return out


def _weights(path):
    return torch.load(path, weights_only=True)["state_dict"]


def test_the_same_seed_gives_the_same_weights(tiny_run, tmp_path):
    runs = {
        name: _train(tiny_run, tmp_path / name, "--manual-seed", seed)
        for name, seed in (("a", "7"), ("b", "7"), ("c", "8"))
    }
    a, b, c = (_weights(runs[n] / "checkpoint_00002.pth.tar") for n in "abc")
    assert all(torch.equal(a[k], b[k]) for k in a)
    assert not all(torch.equal(a[k], c[k]) for k in a)


def test_a_diverging_run_writes_no_checkpoint(tiny_run, tmp_path):
    # The first step's loss is finite; the step makes the weights useless. The next loss proves it,
    # and the checkpoint of step 1 that was due is never written.
    with pytest.raises(
        NonFiniteLoss,
        match="The loss became nan at iteration 2; training stopped without saving, and no checkpoint was written",
    ):
        _train(tiny_run, tmp_path / "out", overrides=["SOLVER.BASE_LR", "1e30"])
    assert not [n for n in os.listdir(tmp_path / "out") if n.startswith("checkpoint_")]


def test_divergence_names_the_newest_finite_checkpoint(tiny_run, tmp_path):
    resumed = str(tiny_run / "trained" / "checkpoint_00002.pth.tar")
    with pytest.raises(NonFiniteLoss, match=f"the newest checkpoint, with finite weights, is '{resumed}'"):
        _train(
            tiny_run,
            tmp_path / "out",
            "--checkpoint",
            resumed,
            overrides=["SOLVER.BASE_LR", "1e30", "SOLVER.ITERATION_TOTAL", "6"],
        )
    assert not [n for n in os.listdir(tmp_path / "out") if n.startswith("checkpoint_")]


def test_a_run_of_nan_gradients_stops_training(tiny_run, tmp_path, monkeypatch, capsys):
    from connectomics_mednext.losses.criterion import TargetCriterion

    def sqrt_of_zero(self, pred, target, weight):
        # Finite value (0), NaN gradient (d sqrt(u)/du at 0 is inf, times 0).
        return torch.sqrt((pred.float() * 0).sum()), {}

    monkeypatch.setattr(TargetCriterion, "__call__", sqrt_of_zero)
    with pytest.raises(
        NonFiniteLoss,
        match="The gradient norm was nan for 5 steps in a row, up to iteration 5; "
        "training stopped without saving, and no checkpoint was written",
    ):
        _train(
            tiny_run,
            tmp_path / "out",
            overrides=[
                "MODEL.DEEP_SUPERVISION",
                "False",
                "SOLVER.ITERATION_TOTAL",
                "20",
                "SOLVER.ITERATION_SAVE",
                "100",
            ],
        )
    said = capsys.readouterr().out
    assert said.count("skipped: the gradient norm is nan; the weights are unchanged.") == 4


def test_one_non_finite_gradient_skips_its_step(tiny_run, tmp_path, monkeypatch, capsys):
    from connectomics_mednext.losses.criterion import TargetCriterion

    real = TargetCriterion.__call__
    calls = []

    def nan_gradient_once(self, pred, target, weight):
        calls.append(1)
        loss, parts = real(self, pred, target, weight)
        return (loss + torch.sqrt((pred.float() * 0).sum()), parts) if len(calls) == 1 else (loss, parts)

    monkeypatch.setattr(TargetCriterion, "__call__", nan_gradient_once)
    out = _train(tiny_run, tmp_path / "out", overrides=["MODEL.DEEP_SUPERVISION", "False"])
    assert "[Iteration 00001] skipped: the gradient norm is nan; the weights are unchanged." in capsys.readouterr().out
    state = torch.load(out / "checkpoint_00002.pth.tar", weights_only=True)
    assert state["iteration"] == 2 and all(torch.isfinite(v).all() for v in state["state_dict"].values())


def test_a_resumed_run_takes_the_configs_solver_settings(tiny_run, tmp_path, capsys):
    resumed = str(tiny_run / "trained" / "checkpoint_00002.pth.tar")
    out = _train(
        tiny_run,
        tmp_path / "out",
        "--checkpoint",
        resumed,
        overrides=["SOLVER.BASE_LR", "0.01", "SOLVER.ITERATION_TOTAL", "3"],
    )
    assert (
        f"Resuming {resumed!r} with the config's SOLVER.BASE_LR (initial_lr 0.001 -> 0.01); the checkpoint's "
        "optimizer moments and schedule progress are kept."
    ) in capsys.readouterr().out
    groups = torch.load(out / "checkpoint_00003.pth.tar", weights_only=True)["optimizer"]["param_groups"]
    assert {g["lr"] for g in groups} == {0.01}


def test_training_always_ends_with_a_checkpoint_of_the_last_iteration(tiny_run, tmp_path, capsys):
    out = _train(tiny_run, tmp_path / "out", overrides=["SOLVER.ITERATION_TOTAL", "3", "SOLVER.ITERATION_SAVE", "2"])
    names = sorted(n for n in os.listdir(out) if n.startswith("checkpoint_"))
    assert names == ["checkpoint_00002.pth.tar", "checkpoint_00003.pth.tar"]
    assert torch.load(out / names[-1], weights_only=True)["iteration"] == 3
    last_line = capsys.readouterr().out.strip().splitlines()[-1]
    assert last_line.startswith(f"Training finished at iteration 3: saved {out / 'checkpoint_00003.pth.tar'} (")
    assert re.search(r"\(\d+\.\d min, \d+\.\d\d s per iteration, last loss \d\.\d{5}\)$", last_line)


def test_stale_temporaries_are_removed_on_the_next_start(tiny_run, tmp_path, capsys):
    out = tmp_path / "out"
    out.mkdir()
    (out / "checkpoint_00005.pth.tar.tmp").write_bytes(b"half a checkpoint")
    _train(tiny_run, out, overrides=["SOLVER.ITERATION_TOTAL", "1"])
    assert not (out / "checkpoint_00005.pth.tar.tmp").exists()
    assert "checkpoint_00005.pth.tar.tmp', left by a run killed while saving" in capsys.readouterr().out


def test_checkpoints_reach_the_disk_before_their_final_name(tmp_path, monkeypatch):
    events = []
    real_fsync, real_replace = os.fsync, os.replace
    monkeypatch.setattr(checkpoint_module.os, "fsync", lambda fd: (events.append("fsync"), real_fsync(fd)))
    monkeypatch.setattr(checkpoint_module.os, "replace", lambda a, b: (events.append("replace"), real_replace(a, b)))
    model = torch.nn.Linear(2, 2)
    optimizer = torch.optim.SGD(model.parameters(), lr=0.1)
    scheduler = torch.optim.lr_scheduler.ConstantLR(optimizer)
    path = str(tmp_path / "checkpoint_00001.pth.tar")
    checkpoint_module.save_checkpoint(path, 1, model, optimizer, scheduler, [{}])
    assert events == ["fsync", "replace", "fsync"]  # the file's data, the rename, then the folder entry
    assert os.listdir(tmp_path) == ["checkpoint_00001.pth.tar"]


def _train_until_signalled(run, out, signum, launcher=(sys.executable,), flags=()):
    """Start a long training run, send ``signum`` after its second iteration; return (exit code, output)."""
    env = dict(os.environ, OMP_NUM_THREADS="1", PYTHONPATH=ROOT)
    argv = tiny_argv(
        run, *flags, out=out, overrides=["SOLVER.ITERATION_TOTAL", "100000", "SOLVER.ITERATION_SAVE", "100000"]
    )
    process = subprocess.Popen(
        [*launcher, os.path.join(ROOT, "scripts", "main.py"), *argv],
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    lines, deadline = [], time.monotonic() + 120
    for line in process.stdout:
        lines.append(line)
        if line.startswith("[Iteration 00002/"):
            process.send_signal(signum)
            break
        assert time.monotonic() < deadline, "".join(lines)
    rest, _ = process.communicate(timeout=120)
    return process.returncode, "".join(lines) + rest


@pytest.mark.parametrize("signum", [signal.SIGTERM, signal.SIGINT], ids=["SIGTERM", "SIGINT"])
def test_a_stop_signal_saves_a_checkpoint_and_exits_non_zero(signum, tiny_run, tmp_path):
    out = tmp_path / "out"
    code, output = _train_until_signalled(tiny_run, out, signum)
    assert code == 128 + signum, output
    names = [n for n in os.listdir(out) if n.startswith("checkpoint_")]
    assert len(names) == 1 and not names[0].endswith(".tmp"), output
    state = torch.load(out / names[0], weights_only=True)
    iteration = state["iteration"]
    assert iteration >= 2
    name = signal.Signals(signum).name
    path = out / names[0]
    assert f"Stopped by {name} at iteration {iteration}: saved {path}; resume with --checkpoint {path}" in output
    assert "Traceback" not in output


def test_ranks_stop_together_on_sigterm_from_torchrun(tiny_run, tmp_path):
    # torchrun passes its SIGTERM to every rank; they agree at the next step and save once, together.
    out = tmp_path / "out"
    with socket.socket() as probe:  # a free port for the rendezvous
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    launcher = [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node=2", f"--master_port={port}"]
    _, output = _train_until_signalled(tiny_run, out, signal.SIGTERM, launcher, ["--distributed"])
    names = [n for n in os.listdir(out) if n.startswith("checkpoint_")]
    assert len(names) == 1, output
    state = torch.load(out / names[0], weights_only=True)
    assert len(state["rng"]["sampler"]) == 2  # both ranks' crop generators, gathered at the same step
    assert output.count(f"Stopped by SIGTERM at iteration {state['iteration']}: saved {out / names[0]}") == 1


def test_pytc_is_warned_about_mednext_keys_it_will_not_read():
    cfg = get_native_defaults()
    cfg.merge_from_list(
        [
            "MODEL.ARCHITECTURE",
            "unet_3d",
            "MODEL.DEEP_SUPERVISION",
            "True",
            "MODEL.MEDNEXT.N_CHANNELS",
            "8",
            "MODEL.AMP_DTYPE",
            "bfloat16",
        ]
    )
    assert unused_mednext_keys(cfg) == ["MODEL.DEEP_SUPERVISION", "MODEL.MEDNEXT.N_CHANNELS", "MODEL.AMP_DTYPE"]
    with pytest.warns(UserWarning) as record:
        warn_unused_mednext_keys(cfg)
    assert [str(w.message) for w in record] == [
        "MODEL.DEEP_SUPERVISION is set but does nothing in PyTorch Connectomics here: MODEL.ARCHITECTURE is "
        "'unet_3d', not 'mednext'.",
        "MODEL.MEDNEXT.N_CHANNELS is set but does nothing in PyTorch Connectomics here: MODEL.ARCHITECTURE is "
        "'unet_3d', not 'mednext'.",
        "MODEL.AMP_DTYPE is set but does nothing in PyTorch Connectomics here: only our engine reads it.",
    ]
    cfg.merge_from_list(["MODEL.ARCHITECTURE", "mednext"])
    assert unused_mednext_keys(cfg) == ["MODEL.AMP_DTYPE"]


def test_inference_takes_the_config_from_the_checkpoint(tiny_run, tmp_path, capsys):
    checkpoint = str(tiny_run / "trained" / "checkpoint_00002.pth.tar")
    state = torch.load(checkpoint, weights_only=True)
    assert state["version"] == connectomics_mednext.__version__ and "MEDNEXT_SIZE: S" in state["config"]
    with_yaml = _infer(tiny_run, tmp_path / "with_yaml", checkpoint)
    capsys.readouterr()
    cli.run_command(
        [
            "--engine",
            "native",
            "--inference",
            "--checkpoint",
            checkpoint,
            "INFERENCE.IMAGE_NAME",
            str(tiny_run / "image.h5"),
            "INFERENCE.OUTPUT_PATH",
            str(tmp_path / "from_checkpoint"),
        ]
    )
    assert f"config: the one saved in {checkpoint}" in capsys.readouterr().out
    with h5py.File(with_yaml, "r") as a, h5py.File(tmp_path / "from_checkpoint" / "result.h5", "r") as b:
        assert np.array_equal(a["vol0"][:], b["vol0"][:])


def test_a_checkpoints_config_chooses_no_file_to_read_or_write(tiny_run, tmp_path, capsys, monkeypatch):
    victim = tmp_path / "victim"
    victim.mkdir()
    (victim / "notes.txt").write_text("my notes")
    state = torch.load(tiny_run / "trained" / "checkpoint_00002.pth.tar", weights_only=True)
    state["config"] = state["config"].replace("OUTPUT_NAME: result.h5", "OUTPUT_NAME: notes.txt")
    state["config"] = re.sub(r"  OUTPUT_PATH: .*test\n", f"  OUTPUT_PATH: {victim}\n", state["config"])
    assert f"OUTPUT_PATH: {victim}" in state["config"] and "OUTPUT_NAME: notes.txt" in state["config"]
    torch.save(state, tmp_path / "shared.pth.tar")
    work = tmp_path / "work"
    work.mkdir()
    monkeypatch.chdir(work)
    argv = ["--engine", "native", "--inference", "--checkpoint", str(tmp_path / "shared.pth.tar")]
    with pytest.raises(SystemExit):  # the checkpoint's INFERENCE.IMAGE_NAME is not used either
        cli.main(argv)
    assert "error: INFERENCE.IMAGE_NAME is not set" in capsys.readouterr().err
    cli.run_command(argv + ["INFERENCE.IMAGE_NAME", str(tiny_run / "image.h5")])
    assert (victim / "notes.txt").read_text() == "my notes" and sorted(os.listdir(victim)) == ["notes.txt"]
    assert sorted(os.listdir(work)) == ["result.h5"]


def test_a_checkpoint_without_a_config_asks_for_one(tiny_run, tmp_path, capsys):
    state = torch.load(tiny_run / "trained" / "checkpoint_00002.pth.tar", weights_only=True)
    del state["config"]  # as PyTC writes them
    torch.save(state, tmp_path / "pytc.pth.tar")
    with pytest.raises(SystemExit) as exit_info:
        cli.main(["--engine", "native", "--inference", "--checkpoint", str(tmp_path / "pytc.pth.tar")])
    assert exit_info.value.code == 2
    assert capsys.readouterr().err.strip() == (
        f"error: --checkpoint {str(tmp_path / 'pytc.pth.tar')!r} holds no config (PyTorch Connectomics and versions "
        "before 0.2 save none); give the config it was trained with as --config-file."
    )
    with pytest.raises(SystemExit):
        cli.main(["--engine", "native", "--checkpoint", str(tmp_path / "pytc.pth.tar")])
    assert "--config-file is required; only --inference --checkpoint CK" in capsys.readouterr().err


def test_the_grad_scaler_state_is_saved_and_restored(tiny_run, tmp_path):
    from connectomics_mednext.config import load_native_cfg
    from connectomics_mednext.engine.trainer import Trainer

    # fp16 autocast needs a GPU, so the CPU scaler stands in for the one a GPU run would make.
    cfg = load_native_cfg(str(tiny_run / "cfg.yaml"), conftest.BASE, ["DATASET.OUTPUT_PATH", str(tmp_path)])
    trainer = Trainer(cfg, torch.device("cpu"))
    trainer.scaler = torch.amp.GradScaler("cpu", init_scale=1024.0, growth_interval=7)
    path = trainer.save(2, trainer.sampler.state)
    resumed = Trainer(cfg, torch.device("cpu"))
    resumed.scaler = torch.amp.GradScaler("cpu")
    resumed._resume(torch.load(path, weights_only=True), path)
    assert resumed.scaler.get_scale() == 1024.0 and resumed.scaler.get_growth_interval() == 7


def test_a_fresh_run_never_replaces_another_runs_checkpoints(tiny_run, tmp_path, capsys):
    out = tmp_path / "out"
    _train(tiny_run, out, overrides=["SOLVER.ITERATION_TOTAL", "2", "SOLVER.ITERATION_SAVE", "1"])
    before = {name: (out / name).read_bytes() for name in os.listdir(out) if name.endswith(".pth.tar")}
    assert sorted(before) == ["checkpoint_00001.pth.tar", "checkpoint_00002.pth.tar"]
    newest = str(out / "checkpoint_00002.pth.tar")
    for flags in ([], ["--checkpoint", str(tiny_run / "trained" / "checkpoint_00001.pth.tar")]):
        with pytest.raises(SystemExit) as exit_info:
            cli.main(tiny_argv(tiny_run, *flags, out=out, overrides=["SOLVER.ITERATION_TOTAL", "3"]))
        assert exit_info.value.code == 2
        assert (
            capsys.readouterr()
            .err.strip()
            .endswith(
                f"holds the checkpoints of another run (newest {newest!r}), which "
                + ("a fresh run" if not flags else f"a run resumed from {flags[1]!r}")
                + f" would replace; resume it with --checkpoint {newest} (or --checkpoint last), or choose another "
                "DATASET.OUTPUT_PATH."
            )
        )
    assert {name: (out / name).read_bytes() for name in before} == before
    assert sorted(n for n in os.listdir(out) if n.endswith(".pth.tar")) == sorted(before)


def test_checkpoint_last_is_the_requeue_command(tiny_run, tmp_path, capsys):
    out = tmp_path / "out"
    requeue = ["--checkpoint", "last"]
    _train(tiny_run, out, *requeue, overrides=["SOLVER.ITERATION_TOTAL", "1"])  # nothing yet: a fresh start
    assert "--checkpoint last: no checkpoint yet in" in capsys.readouterr().out
    _train(tiny_run, out, *requeue, overrides=["SOLVER.ITERATION_TOTAL", "2"])  # the same command, requeued
    said = capsys.readouterr().out
    assert f"--checkpoint last: resuming {out / 'checkpoint_00001.pth.tar'}" in said
    assert "iterations 1 to 2" in said and torch.load(out / "checkpoint_00002.pth.tar")["iteration"] == 2
    with pytest.raises(SystemExit):
        cli.main(tiny_argv(tiny_run, "--inference", *requeue, out=out))
    assert "--checkpoint last resumes training; with --inference name the checkpoint file." in capsys.readouterr().err


def test_a_job_killed_with_sigkill_is_requeued_by_the_same_command(tiny_run, tmp_path):
    out = tmp_path / "out"
    argv = tiny_argv(
        tiny_run,
        "--checkpoint",
        "last",
        out=out,
        overrides=["SOLVER.ITERATION_TOTAL", "100000", "SOLVER.ITERATION_SAVE", "1"],
    )
    env = dict(os.environ, OMP_NUM_THREADS="1", PYTHONPATH=ROOT)
    command = [sys.executable, os.path.join(ROOT, "scripts", "main.py"), *argv]
    process = subprocess.Popen(command, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    for line in process.stdout:
        if line.startswith("[Iteration 00004/"):
            process.kill()  # kill -9: no handler runs, the lock and perhaps a .tmp stay behind
            break
    process.wait()
    assert (out / ".lock").exists()
    saved = sorted(n for n in os.listdir(out) if re.fullmatch(r"checkpoint_\d+\.pth\.tar", n))
    for name in saved:  # whatever a kill interrupted, every named checkpoint is whole
        assert torch.load(out / name, weights_only=True)["iteration"] == int(name[11:16])
    requeued = subprocess.run(
        [*command[:-4], "SOLVER.ITERATION_TOTAL", str(int(saved[-1][11:16]) + 1), "SOLVER.ITERATION_SAVE", "1"],
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert requeued.returncode == 0, requeued.stdout[-2000:] + requeued.stderr[-2000:]
    assert f"took over the lock of process {process.pid}, which is gone" in requeued.stdout
    assert f"--checkpoint last: resuming {out / saved[-1]}" in requeued.stdout
    assert not (out / ".lock").exists() and not any(n.endswith(".tmp") for n in os.listdir(out))
