"""The quick start as a user runs it: its three commands timed, and the validation Dice it prints.

    python benchmarks/bench_quickstart.py

Runs in a scratch folder laid out like the source tree, with the installed package, and writes
``benchmarks/results/quickstart_cpu.json``, which the Getting started page quotes. Run it on a
quiet machine: the figures are wall-clock times.
"""

import argparse
import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
import time
from typing import Dict, List

from provenance import ROOT, provenance

DESCRIBES = ["connectomics_mednext", "configs/Synthetic-Quickstart.yaml", "configs/MedNeXt-Base.yaml"]
CONFIGS = ["--config-base", "configs/MedNeXt-Base.yaml", "--config-file", "configs/Synthetic-Quickstart.yaml"]
COMMANDS = {
    "synthetic_data": [sys.executable, "-m", "connectomics_mednext.data.synthetic", "outputs/synthetic"],
    "train": [sys.executable, "scripts/main.py", "--engine", "native", *CONFIGS],
    "infer": [
        sys.executable,
        "scripts/main.py",
        "--engine",
        "native",
        *CONFIGS,
        "--inference",
        "--checkpoint",
        "outputs/synthetic/run/checkpoint_00200.pth.tar",
    ],
}
VALIDATION = re.compile(r"validation Dice ([0-9.]+) IoU ([0-9.]+)")


def run(folder: str) -> Dict[str, object]:
    seconds: Dict[str, float] = {}
    printed: List[str] = []
    for name, command in COMMANDS.items():
        start = time.perf_counter()
        done = subprocess.run(command, cwd=folder, capture_output=True, text=True)
        seconds[name] = time.perf_counter() - start
        if done.returncode != 0:
            raise SystemExit(f"{name} failed:\n{done.stderr[-2000:]}")
        printed += done.stdout.splitlines()
        print(f"{name}: {seconds[name]:.1f} s", flush=True)
    dice, iou = VALIDATION.findall("\n".join(printed))[-1]
    return {
        "seconds": seconds,
        "total_s": sum(seconds.values()),
        "validation_dice": float(dice),
        "validation_iou": float(iou),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", default=os.path.join(ROOT, "benchmarks", "results", "quickstart_cpu.json"))
    args = parser.parse_args()
    record = {"provenance": provenance(DESCRIBES)}
    with tempfile.TemporaryDirectory() as folder:
        for name in ("configs", "scripts"):
            shutil.copytree(os.path.join(ROOT, name), os.path.join(folder, name))
        record.update(run(folder))
    with open(args.out, "w", encoding="utf-8") as handle:
        json.dump(record, handle, indent=2)
    print(f"Wrote {args.out}: {record['total_s']:.0f} s in all, validation Dice {record['validation_dice']}")


if __name__ == "__main__":
    main()
