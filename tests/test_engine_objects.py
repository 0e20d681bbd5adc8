"""The engine's small objects: Box geometry, the predictor in memory, the trainer's named steps, the logger."""

import json
import logging
import os
import re

import h5py
import numpy as np
import pytest
import torch
from conftest import BASE, predict_file, tiny_argv

from connectomics_mednext import cli
from connectomics_mednext import log as engine_log
from connectomics_mednext.config import load_native_cfg
from connectomics_mednext.engine.inference import make_activation
from connectomics_mednext.engine.predictor import Predictor, SlidingWindow
from connectomics_mednext.engine.trainer import Trainer
from connectomics_mednext.errors import MissingFileError
from connectomics_mednext.geometry import Box
from connectomics_mednext.io import to_output_values
from connectomics_mednext.model.weights import read_checkpoint


def test_box_intersects_shifts_and_slices():
    a, b = Box((0, 2, 4), (10, 8, 9)), Box.from_shape((5, 5, 5), (8, 6, 0))
    both = a.intersect(b)
    assert both == Box((8, 6, 4), (10, 8, 5)) and both.shape == (2, 2, 1)
    assert a.intersect(Box((20, 0, 0), (30, 1, 1))).empty
    assert both.relative_to(a) == Box((8, 4, 0), (10, 6, 1))
    assert both.shift((-8, -6, -4)) == Box.from_shape((2, 2, 1))
    array = np.arange(10 * 8 * 9).reshape(10, 8, 9)
    assert np.array_equal(array[both.slices()], array[8:10, 6:8, 4:5])
    assert Box.from_spans(both.spans) == both and both.to_json() == [[8, 10], [6, 8], [4, 5]]
    assert a.with_axis(0, (3, 4)) == Box((3, 2, 4), (4, 8, 9))
    with pytest.raises(ValueError, match="as many ends as begins"):
        Box((0, 0), (1, 1, 1))


def test_the_predictor_in_memory_gives_the_bytes_of_the_file(tmp_path):
    torch.manual_seed(0)
    model = torch.nn.Conv3d(1, 2, 3, padding=1).eval()
    image = (np.random.default_rng(0).random((20, 30, 26)) * 255).astype(np.uint8)
    settings = dict(pad=((1, 2), (3, 0), (0, 5)), block_size=(7, 11, 0), batch_size=3)
    activation = make_activation(["sigmoid"], [2])
    predictor = Predictor(model, activation, 2, SlidingWindow((8, 16, 16), (4, 8, 8), **settings))
    in_memory = predictor.predict(image)
    assert in_memory.dtype == np.float32 and in_memory.shape == (2, 20, 30, 26)
    with h5py.File(
        predict_file(model, [image], str(tmp_path / "p.h5"), (8, 16, 16), (4, 8, 8), 2, activation, **settings), "r"
    ) as f:
        assert np.array_equal(to_output_values(in_memory), f["vol0"][:])
        assert np.abs(in_memory - f["vol0"][:] / 255.0).max() <= 0.5 / 255 + 1e-6
    assert os.listdir(tmp_path) == ["p.h5"]


class CountingTrainer(Trainer):
    """A subclass changes one named step; the loop calls it."""

    steps = []

    def optimizer_step(self, loss, iteration):
        self.steps.append(iteration)
        super().optimizer_step(loss, iteration)

    def validate(self):
        scores = super().validate()
        self.steps.append(("validate", scores["dice"]))
        return scores


def _cfg(run, out, *overrides):
    argv = tiny_argv(run, out=out, overrides=overrides)
    return load_native_cfg(argv[argv.index("--config-file") + 1], BASE, argv[argv.index("--config-file") + 2 :])


def test_the_loop_calls_named_steps_and_validates_in_memory(tiny_run, tmp_path, monkeypatch):
    cfg = _cfg(
        tiny_run,
        tmp_path / "out",
        "DATASET.VAL_IMAGE_NAME",
        "image.h5",
        "DATASET.VAL_LABEL_NAME",
        "label.h5",
        "SOLVER.ITERATION_VAL",
        "2",
    )
    written = []
    real_file = h5py.File
    monkeypatch.setattr(
        h5py, "File", lambda name, mode="r", *a, **k: written.append((name, mode)) or real_file(name, mode, *a, **k)
    )
    CountingTrainer.steps = []
    CountingTrainer(cfg, torch.device("cpu")).train()
    assert CountingTrainer.steps[:2] == [1, 2] and CountingTrainer.steps[2][0] == "validate"
    assert not [name for name, mode in written if mode != "r"], "validation wrote a file"


def test_log_opt_controls_console_lines_tensorboard_and_the_text_log(tiny_run, tmp_path, capsys):
    out = tmp_path / "out"
    cli.run_command(tiny_argv(tiny_run, out=out, overrides=["MONITOR.LOG_OPT", "[0, 0, 1]"]))
    console = capsys.readouterr().out
    assert "[Iteration 00001/2] loss=" not in console and "Training finished at iteration 2" in console
    assert os.listdir(out / "log") == ["log.txt"]  # no TensorBoard events
    text = (out / "log" / "log.txt").read_text()
    stamp = r"\d{4}-\d\d-\d\d \d\d:\d\d:\d\d,\d{3} INFO connectomics_mednext\.engine\.trainer: "
    assert re.search(stamp + r"\[Iteration 00001\] saved ", text)
    assert re.search(r" DEBUG connectomics_mednext\.engine\.trainer: \[Iteration 00002/2\] loss=", text)
    cli.run_command(
        tiny_argv(
            tiny_run,
            "--checkpoint",
            str(out / "checkpoint_00002.pth.tar"),
            out=out,
            overrides=["MONITOR.LOG_OPT", "[1, 1, 1]", "SOLVER.ITERATION_TOTAL", "3"],
        )
    )
    assert "[Iteration 00003/3] loss=" in capsys.readouterr().out
    assert any(name.startswith("events.out.tfevents") for name in os.listdir(out / "log"))
    resumed = (out / "log" / "log.txt").read_text()
    assert resumed.startswith(text) and "[Iteration 00003] saved" in resumed  # appended, not overwritten


def test_only_rank_zero_speaks_unless_a_record_is_for_every_rank(monkeypatch, capsys):
    logger = engine_log.get_logger("connectomics_mednext.engine.example")
    monkeypatch.setenv("RANK", "1")
    logger.info("from every rank")
    logger.info("own file restarted", extra={"all_ranks": True})
    monkeypatch.setenv("RANK", "0")
    logger.info("rank zero")
    logger.debug("debug stays off the console")
    assert capsys.readouterr().out.splitlines() == ["own file restarted", "rank zero"]
    assert logging.getLogger("connectomics_mednext").propagate is False


def test_one_checkpoint_reader_names_a_missing_file(tmp_path):
    with pytest.raises(MissingFileError, match=r"checkpoint: file '.*nope\.pth' does not exist\."):
        read_checkpoint(tmp_path / "nope.pth")
    torch.save({"state_dict": {"module.stem.weight": torch.ones(1)}}, tmp_path / "ddp.pth")
    assert list(read_checkpoint(tmp_path / "ddp.pth")) == ["stem.weight"]


class ReadsProgress(torch.nn.Module):
    """A model that, while it runs, reads the progress file another process would read."""

    def __init__(self, path):
        super().__init__()
        self.conv, self.path, self.records = torch.nn.Conv3d(1, 1, 1), path, []

    def forward(self, x):
        if os.path.exists(self.path):
            with open(self.path) as f:
                self.records.append(json.load(f))
        return self.conv(x)


def test_inference_reports_progress_in_lines_and_in_a_file(tmp_path, monkeypatch, capsys):
    from connectomics_mednext.engine import progress

    monkeypatch.setattr(progress, "PROGRESS_INTERVAL", 0.0)
    output = str(tmp_path / "p.h5")
    model = ReadsProgress(output + ".progress.json")
    image = (np.random.default_rng(0).random((24, 24, 24)) * 255).astype(np.uint8)
    predict_file(
        model, [image], output, (8, 16, 16), (4, 8, 8), 1, make_activation(["none"], [1]), block_size=(8, 0, 0)
    )
    lines = [line for line in capsys.readouterr().out.splitlines() if line.startswith("vol0:")]
    assert lines[0].startswith("vol0:   0.0% (0/3 blocks)") and lines[-1].startswith("vol0: 100.0% (3/3 blocks)")
    assert all(re.search(r"\d+\.\d\d Mvox/s", line) for line in lines) and "ETA" in lines[1]
    done = [r["voxels_done"] for r in model.records]
    assert done == sorted(done) and 0 < done[-1] < 24**3 and model.records[-1]["voxels_total"] == 24**3
    assert not os.path.exists(output + ".progress.json")  # gone once the output is complete


def test_training_prints_a_banner_every_nth_iteration_and_a_summary(tiny_run, tmp_path, capsys):
    out = tmp_path / "out"
    cli.run_command(
        tiny_argv(
            tiny_run,
            out=out,
            overrides=[
                "SOLVER.ITERATION_TOTAL",
                "8",
                "SOLVER.ITERATION_SAVE",
                "8",
                "MONITOR.ITERATION_NUM",
                "[5, 100]",
            ],
        )
    )
    console = capsys.readouterr().out
    assert re.search(
        r"Training MedNeXt-S \(\d[\d,]+ parameters, deep supervision on\) on cpu \(\d+ threads\), "
        r"1 process\(es\)",
        console,
    )
    assert "Batch 1 per process (1 in all); iterations 0 to 8 (a fresh start); a checkpoint every 8" in console
    assert f"Output folder {out}; TensorBoard: tensorboard --logdir {out / 'log'}" in console
    shown = re.findall(r"\[Iteration (\d+)/8\] loss=", console)
    assert shown == ["00001", "00002", "00003", "00005", "00008"]  # the first three, every 5th, the last
    assert re.search(r"Training finished at iteration 8: saved .*checkpoint_00008\.pth\.tar \(", console)
