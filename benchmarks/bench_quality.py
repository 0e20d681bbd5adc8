"""Segmentation quality on the real shared volumes: MedNeXt (our recipe) against trivial baselines,
and PyTC's own UNet3D (its Lucchi recipe) on the same data, crops and iterations when PyTC imports.

For each data set it trains, infers on held-out voxels, decodes, scores, and writes
``benchmarks/results/quality_<name>.json``:

- ``gala_mini``: train on the train volume, score on the test volume. Cell interiors
  (label > 0) against the thin boundaries: binary target, decoded by connected components.
- ``fib25``: the cube split at z = 125 into disjoint halves; train on the first, score on the
  second. Neuron boundaries: boundary target, decoded by the distance-transform watershed.

    python benchmarks/bench_quality.py                  # CPU budget
    python benchmarks/bench_quality.py --gpu            # the budget for real training

Derived inputs (the FIB-25 halves) and every run go to ``--work`` (default outputs/quality,
which git ignores); the shared data is read in place.
"""

import argparse
import json
import os
import subprocess
import sys
import time
from dataclasses import asdict, dataclass
from typing import Dict, List, Optional

import h5py
import numpy as np
import yaml

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)

from connectomics_mednext.evaluate import evaluate_arrays  # noqa: E402
from connectomics_mednext.segment import SegmentOptions, segment_file  # noqa: E402

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from provenance import provenance  # noqa: E402

STANDINS = os.path.join(ROOT, "tools", "pytc_standins")
BASE = os.path.join(ROOT, "configs", "MedNeXt-Base.yaml")


@dataclass
class Budget:
    """How long and how wide to train. Both networks get the same iterations, batch and crops."""

    iterations: int
    batch: int
    patch: List[int]
    channels: int


BUDGETS = {
    # Fits a 2-core CPU in about a quarter of an hour for both data sets and both networks.
    "cpu": Budget(iterations=400, batch=2, patch=[32, 64, 64], channels=8),
    "gpu": Budget(iterations=20000, batch=4, patch=[64, 96, 96], channels=32),
}


@dataclass
class Task:
    """One data set: its volumes, the target and the decoder.

    Args:
        name: for files and the table.
        train_image: training image file.
        train_label: training label file.
        test_image: held-out image file.
        test_label: held-out label file.
        target: the TARGET_OPT code trained.
        mode: the decoder.
        options: the decoder's options.
        why: the recipe's reasons, for the results.
        label_offset: added to the test label's ids before scoring; FIB-25 is dense and its body
            0 is a neuron, not unlabelled voxels, so its ids move up by one.
    """

    name: str
    train_image: str
    train_label: str
    test_image: str
    test_label: str
    target: str
    mode: str
    options: SegmentOptions
    why: str
    label_offset: int = 0

    def test_truth(self) -> np.ndarray:
        """The held-out label, ids shifted by ``label_offset``."""
        with h5py.File(self.test_label, "r") as f:
            return f["main"][:].astype(np.uint32) + self.label_offset


def _fib25_halves(data: str, work: str) -> Dict[str, str]:
    """The FIB-25 cube split at z = 125 into train and test files in ``work`` (made once)."""
    paths = {
        f"{part}_{kind}": os.path.join(work, f"fib25_{part}_{kind}.h5")
        for part in ("train", "test")
        for kind in ("image", "label")
    }
    if all(os.path.exists(p) for p in paths.values()):
        return paths
    for kind in ("image", "label"):
        with h5py.File(os.path.join(data, "fib25", f"{kind}.h5"), "r") as source:
            volume = source["main"]
            half = volume.shape[0] // 2
            for part, planes in (("train", slice(0, half)), ("test", slice(half, None))):
                with h5py.File(paths[f"{part}_{kind}"], "w") as out:
                    out.create_dataset("main", data=volume[planes], compression="gzip")
    return paths


def tasks(data: str, work: str) -> Dict[str, Task]:
    gala = os.path.join(data, "gala_mini")
    fib = _fib25_halves(data, work)
    return {
        "gala_mini": Task(
            "gala_mini",
            f"{gala}/train_image.h5",
            f"{gala}/train_label.h5",
            f"{gala}/test_image.h5",
            f"{gala}/test_label.h5",
            "4-1-1",
            "boundary",
            SegmentOptions(threshold=0.5, seed_distance=3.0, seed_min_size=16, min_size=100),
            "Neurons, as on FIB-25: instance boundaries (PyTC's 4-1-1) with BCE + Dice and fg/bg balance, deep "
            "supervision, isotropic kernels and strides (near-isotropic FIB-SEM of unknown voxel size, so distances "
            "in voxels), decoded by a watershed from seeds 3 voxels from any boundary. A binary interior target "
            "(TARGET_OPT 0) scores well per voxel here (91% of the voxels are interior), but one missed voxel of a "
            "one-voxel boundary merges two cells, and it decoded into about one segment (benchmarks/README.md).",
        ),
        "fib25": Task(
            "fib25",
            fib["train_image"],
            fib["train_label"],
            fib["test_image"],
            fib["test_label"],
            "4-1-1",
            "boundary",
            SegmentOptions(
                threshold=0.5, seed_distance=40.0, resolution=(10.0, 10.0, 10.0), seed_min_size=16, min_size=100
            ),
            "Instance boundaries (PyTC's code 4-1-1 as in configs/FIB25-Boundary-MedNeXt.yaml: a voxel whose "
            "6-neighbour holds another id) with BCE + Dice and fg/bg balance; deep supervision; isotropic 10 nm, so "
            "isotropic kernels and strides; decoded by a watershed from seeds 40 nm from any boundary.",
            label_offset=1,
        ),
    }


def _write_yaml(config: Dict[str, object], path: str) -> str:
    with open(path, "w", encoding="utf-8") as handle:
        yaml.safe_dump(config, handle, default_flow_style=None, sort_keys=False)
    return path


def _run(argv: List[str], env: Optional[Dict[str, str]] = None) -> float:
    start = time.perf_counter()
    result = subprocess.run(argv, cwd=ROOT, env=env, capture_output=True, text=True)
    if result.returncode:
        raise RuntimeError(f"{' '.join(argv[:4])} ... failed:\n{result.stdout[-2000:]}\n{result.stderr[-3000:]}")
    return time.perf_counter() - start


def _common(task: Task, budget: Budget, out: str) -> Dict[str, Dict[str, object]]:
    train_dir, train_image = os.path.split(task.train_image)
    return {
        "DATASET": {
            "INPUT_PATH": train_dir + "/",
            "IMAGE_NAME": train_image,
            "LABEL_NAME": os.path.relpath(task.train_label, train_dir),
            "OUTPUT_PATH": out,
            "PAD_SIZE": [0, 0, 0],
            "IS_ISOTROPIC": True,
        },
        "SOLVER": {
            "ITERATION_TOTAL": budget.iterations,
            "ITERATION_SAVE": budget.iterations,
            "SAMPLES_PER_BATCH": budget.batch,
        },
        "INFERENCE": {
            "INPUT_SIZE": budget.patch,
            "OUTPUT_SIZE": budget.patch,
            "OUTPUT_ACT": ["sigmoid"],
            "IMAGE_NAME": os.path.relpath(task.test_image, train_dir),
            "OUTPUT_PATH": out + "/test",
            "OUTPUT_NAME": "result.h5",
            "PAD_SIZE": [0, 0, 0],
            "STRIDE": [p // 2 for p in budget.patch],
            "SAMPLES_PER_BATCH": 2,
        },
    }


def _model(task: Task, budget: Budget) -> Dict[str, object]:
    return {
        "INPUT_SIZE": budget.patch,
        "OUTPUT_SIZE": budget.patch,
        "IN_PLANES": 1,
        "OUT_PLANES": 1,
        "TARGET_OPT": [task.target],
        "WEIGHT_OPT": [["1", "0"]],
        "LOSS_OPTION": [["WeightedBCEWithLogitsLoss", "DiceLoss"]],
        "OUTPUT_ACT": [["none", "sigmoid"]],
        "LOSS_WEIGHT": [[1.0, 1.0]],
    }


def train_and_infer_mednext(task: Task, budget: Budget, work: str) -> Dict[str, object]:
    out = os.path.join(work, task.name, "mednext")
    os.makedirs(out, exist_ok=True)
    config = _common(task, budget, out)
    config["MODEL"] = {**_model(task, budget), "MEDNEXT": {"N_CHANNELS": budget.channels}}
    path = _write_yaml(config, os.path.join(out, "task.yaml"))
    main = [sys.executable, "scripts/main.py", "--engine", "native", "--config-base", BASE, "--config-file", path]
    checkpoint = os.path.join(out, "checkpoint_%05d.pth.tar" % budget.iterations)
    train = _run(main) if not os.path.exists(checkpoint) else 0.0
    infer = _run(main + ["--inference", "--checkpoint", checkpoint])
    return {"prediction": os.path.join(out, "test", "result.h5"), "train_s": train, "infer_s": infer}


def train_and_infer_unet3d(task: Task, budget: Budget, work: str) -> Dict[str, object]:
    out = os.path.join(work, task.name, "unet3d")
    os.makedirs(out, exist_ok=True)
    config = _common(task, budget, out)
    # PyTC's configs/Lucchi-Mitochondria.yaml: residual-SE UNet3D, SGD at 0.04 with warm-up and
    # cosine decay; the warm-up scaled to the budget (it is 1000 of 100000 iterations there).
    config["MODEL"] = {**_model(task, budget), "ARCHITECTURE": "unet_3d", "BLOCK_TYPE": "residual_se"}
    config["SYSTEM"] = {"NUM_GPUS": 1, "NUM_CPUS": 1}
    # PyTC's default augmentor reads 34 x 130 x 130 around a 32 x 64 x 64 crop (rotation, 1.25x
    # rescale, elastic and misalignment margins); gala_mini is 100 wide, so PyTC pads it, by reflection.
    config["DATASET"]["PAD_SIZE"] = [2, 16, 16]
    config["SOLVER"].update(
        NAME="SGD", LR_SCHEDULER_NAME="WarmupCosineLR", BASE_LR=0.04, WARMUP_ITERS=max(1, budget.iterations // 100)
    )
    path = _write_yaml(config, os.path.join(out, "task.yaml"))
    env = dict(os.environ, PYTHONPATH=os.pathsep.join([STANDINS, ROOT, os.environ.get("PYTHONPATH", "")]))
    main = [sys.executable, "scripts/main.py", "--engine", "pytc", "--config-file", path]
    checkpoint = os.path.join(out, "checkpoint_%05d.pth.tar" % budget.iterations)
    train = _run(main, env) if not os.path.exists(checkpoint) else 0.0
    infer = _run(main + ["--inference", "--checkpoint", checkpoint], env)
    return {"prediction": os.path.join(out, "test", "result.h5"), "train_s": train, "infer_s": infer}


def score(task: Task, prediction: str, work: str, name: str) -> Dict[str, float]:
    labels = os.path.join(work, task.name, f"{name}_seg.h5")
    segment_file(prediction, labels, task.mode, task.options)
    truth = task.test_truth()
    with h5py.File(prediction, "r") as f:
        probability = f["vol0"][0]
    with h5py.File(labels, "r") as f:
        segmentation = f["main"][:]
    return evaluate_arrays(truth, segmentation, probability, target_opt=task.target)


def baselines(task: Task) -> Dict[str, Dict[str, float]]:
    """The trivial answers: every voxel foreground or background; one segment; every voxel its own segment."""
    truth = task.test_truth()
    full, empty = np.full(truth.shape, 255, np.uint8), np.zeros(truth.shape, np.uint8)
    return {
        "all foreground": evaluate_arrays(truth, probability=full, target_opt=task.target),
        "all background": evaluate_arrays(truth, probability=empty, target_opt=task.target),
        "one segment": evaluate_arrays(truth, segmentation=np.ones(truth.shape, np.uint32)),
        "every voxel its own segment": evaluate_arrays(
            truth, segmentation=np.arange(1, truth.size + 1, dtype=np.uint32).reshape(truth.shape)
        ),
    }


def pytc_importable() -> Optional[str]:
    """None when PyTC imports (with our CPU stand-ins), else why not."""
    env = dict(os.environ, PYTHONPATH=os.pathsep.join([STANDINS, ROOT, os.environ.get("PYTHONPATH", "")]))
    probe = "from connectomics_mednext.pytc import import_pytc; import_pytc()"
    result = subprocess.run([sys.executable, "-c", probe], env=env, capture_output=True, text=True)
    return None if result.returncode == 0 else (result.stderr.strip().splitlines() or ["?"])[-1]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data", default=os.path.join(os.path.dirname(ROOT), "shared", "data"))
    parser.add_argument("--work", default=os.path.join(ROOT, "outputs", "quality"))
    parser.add_argument("--gpu", action="store_true", help="the budget for real training")
    parser.add_argument("--tasks", nargs="+", default=["gala_mini", "fib25"])
    parser.add_argument("--no-pytc", action="store_true", help="skip PyTC's UNet3D")
    parser.add_argument("--iterations", type=int, help="override the budget's iterations (a smoke run)")
    parser.add_argument("--results", default=os.path.join(ROOT, "benchmarks", "results"))
    args = parser.parse_args()
    if not os.path.isdir(args.data):
        raise SystemExit(f"--data {args.data!r} does not exist; the quality benchmark needs the shared volumes.")
    os.makedirs(args.work, exist_ok=True)
    budget = BUDGETS["gpu" if args.gpu else "cpu"]
    if args.iterations:
        budget = Budget(args.iterations, budget.batch, budget.patch, budget.channels)
    pytc_missing = "--no-pytc" if args.no_pytc else pytc_importable()
    for name in args.tasks:
        task = tasks(args.data, args.work)[name]
        record = {
            "provenance": provenance(["connectomics_mednext"]),
            "task": name,
            "budget": asdict(budget),
            "recipe": task.why,
            "decoder": task.mode,
            "decoder_options": asdict(task.options),
            "models": {},
            "baselines": baselines(task),
        }
        runs = {"MedNeXt": train_and_infer_mednext}
        if pytc_missing is None:
            runs["PyTC UNet3D"] = train_and_infer_unet3d
        else:
            record["models"]["PyTC UNet3D"] = {"skipped": pytc_missing}
        for model, run in runs.items():
            timing = run(task, budget, args.work)
            record["models"][model] = {
                **score(task, timing.pop("prediction"), args.work, model.replace(" ", "_")),
                **timing,
            }
        path = os.path.join(args.results, f"quality_{name}{'_gpu' if args.gpu else ''}.json")
        with open(path, "w", encoding="utf-8") as handle:
            json.dump(record, handle, indent=2)
        print_table(record)
        print(f"Wrote {path}")


def print_table(record: Dict[str, object]) -> None:
    keys = ["iou", "dice", "precision", "recall", "f1", "ap50", "ap75", "voi_split", "voi_merge", "arand"]
    rows = {**{m: v for m, v in record["models"].items() if "skipped" not in v}, **record["baselines"]}
    print(f"\n{record['task']} ({record['budget']['iterations']} iterations)")
    print(f"{'':<30}" + "".join(f"{k:>10}" for k in keys))
    for name, metrics in rows.items():
        print(f"{name:<30}" + "".join(f"{metrics[k]:>10.4f}" if k in metrics else f"{'':>10}" for k in keys))


if __name__ == "__main__":
    main()
