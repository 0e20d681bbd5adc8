"""Smoke test of an installed (not editable) wheel, run from a folder outside the checkout.

Trains 2 iterations on tiny synthetic volumes with the installed ``connectomics-mednext``,
predicts, segments and scores with the other two commands, then does the same through the
Python API and checks that both agree. Run by ``.ci/run`` with a clean virtual environment's
Python; exits non-zero on the first failure.
"""

import os
import subprocess
import sys
import tempfile

CONFIG = """MODEL:
  ARCHITECTURE: mednext
  DEEP_SUPERVISION: True
  INPUT_SIZE: [16, 32, 32]
  OUTPUT_SIZE: [16, 32, 32]
  TARGET_OPT: ["0"]
  WEIGHT_OPT: [["1", "0"]]
  LOSS_OPTION: [["WeightedBCEWithLogitsLoss", "DiceLoss"]]
  OUTPUT_ACT: [["none", "sigmoid"]]
  LOSS_WEIGHT: [[1.0, 1.0]]
  MEDNEXT:
    N_CHANNELS: 4
    BLOCK_COUNTS: [1, 1, 1, 1, 1, 1, 1, 1, 1]
DATASET:
  INPUT_PATH: data/
  IMAGE_NAME: train_image.h5
  LABEL_NAME: train_label.h5
  OUTPUT_PATH: run/
  PAD_SIZE: [0, 0, 0]
SOLVER:
  NAME: AdamW
  LR_SCHEDULER_NAME: Constant
  ITERATION_TOTAL: 2
  ITERATION_SAVE: 2
  SAMPLES_PER_BATCH: 1
INFERENCE:
  OUTPUT_ACT: ["sigmoid"]
  IMAGE_NAME: test_image.h5
  OUTPUT_PATH: run/test
  STRIDE: [8, 16, 16]
"""


def run(*command: str) -> str:
    """Run a command in the current folder; return its stdout, or exit with its output on failure."""
    print("$", " ".join(command), flush=True)
    result = subprocess.run(command, capture_output=True, text=True)
    if result.returncode != 0:
        sys.exit(f"failed ({result.returncode}): {' '.join(command)}\n{result.stdout[-3000:]}\n{result.stderr[-3000:]}")
    return result.stdout


def main() -> None:
    bin_folder = os.path.dirname(sys.executable)
    with tempfile.TemporaryDirectory() as folder:
        os.chdir(folder)
        with open("cfg.yaml", "w", encoding="utf-8") as handle:
            handle.write(CONFIG)
        run(sys.executable, "-m", "connectomics_mednext.data.synthetic", "data", "--shape", "16", "40", "40")
        command = os.path.join(bin_folder, "connectomics-mednext")
        run(command, "--config-file", "cfg.yaml")
        checkpoint = "run/checkpoint_00002.pth.tar"
        run(command, "--config-file", "cfg.yaml", "--inference", "--checkpoint", checkpoint)
        run(
            os.path.join(bin_folder, "connectomics-mednext-segment"),
            "--prediction",
            "run/test/result.h5",
            "--mode",
            "binary",
            "--output",
            "seg.h5",
        )
        table = run(
            os.path.join(bin_folder, "connectomics-mednext-evaluate"),
            "--label",
            "data/test_label.h5",
            "--segmentation",
            "seg.h5",
            "--prediction",
            "run/test/result.h5",
            "--json",
            "scores.json",
        )
        print(table)
        check_python_api(checkpoint)
    print("wheel smoke test: passed")


def check_python_api(checkpoint: str) -> None:
    """The three-line API gives what the commands wrote."""
    import json

    import h5py
    import numpy as np

    import connectomics_mednext
    from connectomics_mednext import Predictor, evaluate, segment

    if "site-packages" not in connectomics_mednext.__file__:
        sys.exit(f"connectomics_mednext was imported from {connectomics_mednext.__file__}, not the installed wheel")
    with h5py.File("data/test_image.h5", "r") as f:
        image = f["main"][:]
    probabilities = Predictor.from_checkpoint(checkpoint).predict(image)
    with h5py.File("run/test/result.h5", "r") as f:
        written = f["vol0"][:]
    if np.abs(probabilities * 255 - written).max() > 0.5 + 1e-3:
        sys.exit("Predictor.predict differs from the command's result.h5 by more than rounding")
    labels = segment(probabilities, "binary")
    with h5py.File("seg.h5", "r") as f:
        if not np.array_equal(labels, f["main"][:]):
            sys.exit("segment() differs from connectomics-mednext-segment")
    scores = evaluate("data/test_label.h5", segmentation=labels, prediction=probabilities)
    with open("scores.json", encoding="utf-8") as handle:
        written_scores = json.load(handle)
    # AP ranks instances by mean probability, which rounding to uint8 can reorder; the rest must agree.
    for key in ("iou", "dice", "best_threshold", "precision", "recall", "f1", "voi_split", "voi_merge", "arand"):
        if abs(scores[key] - written_scores[key]) > 1e-9:
            sys.exit(f"evaluate() differs from connectomics-mednext-evaluate in {key}")
    print(f"Python API agrees with the commands (voxel dice {scores['dice']:.3f}, f1 {scores['f1']:.3f})")


if __name__ == "__main__":
    main()
