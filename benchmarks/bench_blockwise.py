"""Blockwise decoding on daisy: peak memory per worker as the volume grows, throughput with 1 and 2 workers,
and blockwise against whole-volume decoding of real predictions.

    python benchmarks/bench_blockwise.py memory  --sizes 8 32 128 --out benchmarks/results/blockwise_memory_cpu.json
    python benchmarks/bench_blockwise.py quality --gala P.h5 --fib25 P.h5 --data ../shared/data \
        --out benchmarks/results/blockwise_quality.json

``memory`` tiles a synthetic (64, 128, 128) cell volume into predictions of each mode of about
the given sizes (Mvox), decodes each blockwise (block 64 x 256 x 256) with 1 and 2 workers, and
records every worker's peak RSS (``VmHWM``, read from /proc while it runs), the scheduler's, and
the throughput; the in-process whole-volume decoder runs beside it on the sizes up to
``--whole-up-to``. ``quality`` decodes the predictions of ``bench_quality.py`` both ways and
scores them against the labels.
"""

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from typing import Dict, List

import h5py
import numpy as np

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)

from connectomics_mednext.data.synthetic import make_em_volume  # noqa: E402
from connectomics_mednext.data.targets import make_target  # noqa: E402
from connectomics_mednext.evaluate import neuron_scores  # noqa: E402
from connectomics_mednext.segment import segment  # noqa: E402

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from provenance import provenance  # noqa: E402

# The code these figures measure: the decoders, their blocks and the daisy tasks.
DESCRIBES = ["connectomics_mednext/segment", "connectomics_mednext/daisy_tasks.py", "connectomics_mednext/evaluate"]
CODES = {"binary": ["0"], "bc": ["0", "4"], "boundary": ["4"], "affinity": ["2"]}
TILE = (64, 128, 128)
BLOCK = ["64", "256", "256"]


def write_prediction(mode: str, megavoxels: int, path: str) -> List[int]:
    """A prediction of ``mode`` tiled from one synthetic volume to about ``megavoxels`` Mvox; its shape."""
    cells = make_em_volume(TILE, cells=24, mitochondria=12, seed=1)["label"]
    if mode == "bc":
        foreground = (cells > 0).astype(np.float32)
        tile = np.stack([foreground, make_target(cells, "4")[0] * foreground])
    else:
        tile = np.concatenate([make_target(cells, code) for code in CODES[mode]])
    tile = np.clip(np.rint(tile * 255), 0, 255).astype(np.uint8)
    repeats = max(1, round(megavoxels * 2**20 / tile[0].size))
    grid = {2**n: (2 ** ((n + 2) // 3), 2 ** ((n + 1) // 3), 2 ** (n // 3)) for n in range(11)}  # z, y, x doublings
    reps = grid[min(grid, key=lambda n: abs(n - repeats))]
    shape = [tile.shape[0]] + [n * r for n, r in zip(tile.shape[1:], reps)]
    with h5py.File(path, "w") as f:
        data = f.create_dataset("vol0", shape=shape, dtype=np.uint8, chunks=(tile.shape[0], 32, 128, 128))
        for index in np.ndindex(*reps):
            box = tuple(slice(i * n, (i + 1) * n) for i, n in zip(index, tile.shape[1:]))
            data[(slice(None),) + box] = tile
    return shape[1:]


def _descendants(pid: int) -> List[int]:
    children, found = {}, []
    for entry in filter(str.isdigit, os.listdir("/proc")):
        try:
            with open(f"/proc/{entry}/stat") as handle:
                parent = int(handle.read().rsplit(")", 1)[1].split()[1])
        except (OSError, ValueError):
            continue
        children.setdefault(parent, []).append(int(entry))
    stack = [pid]
    while stack:
        for child in children.get(stack.pop(), []):
            found.append(child)
            stack.append(child)
    return found


def _peak_rss(pid: int) -> int:
    try:
        with open(f"/proc/{pid}/status") as handle:
            return next(int(line.split()[1]) * 1024 for line in handle if line.startswith("VmHWM:"))
    except (OSError, StopIteration):
        return 0


def run_measured(command: List[str]) -> Dict[str, object]:
    """Run ``command``; its seconds, its own peak RSS and each descendant's, sampled from /proc."""
    start = time.perf_counter()
    process = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    peaks: Dict[int, int] = {}
    while process.poll() is None:
        for pid in [process.pid] + _descendants(process.pid):
            peaks[pid] = max(peaks.get(pid, 0), _peak_rss(pid))
        time.sleep(0.1)
    if process.returncode:
        raise RuntimeError(f"{command} failed with exit code {process.returncode}")
    seconds = time.perf_counter() - start
    main = peaks.pop(process.pid, 0)
    # The workers are the python processes below the scheduler that did the blocks (the largest ones).
    workers = sorted(peaks.values(), reverse=True)
    return {"seconds": seconds, "scheduler_peak_mib": main / 2**20, "worker_peaks_mib": [w / 2**20 for w in workers]}


def memory(args) -> Dict[str, object]:
    rows = []
    for mode in args.modes:
        for size in args.sizes:
            with tempfile.TemporaryDirectory(dir=args.scratch) as folder:
                prediction = os.path.join(folder, "p.h5")
                shape = write_prediction(mode, size, prediction)
                voxels = int(np.prod(shape))
                for workers in args.workers:
                    output = os.path.join(folder, f"s{workers}.zarr", "labels")
                    command = [sys.executable, "-m", "connectomics_mednext.segment", "--prediction", prediction]
                    command += ["--mode", mode, "--output", output, "--block-size", *BLOCK, "--workers", str(workers)]
                    result = run_measured(command)
                    row = {"mode": mode, "shape": shape, "mvox": voxels / 1e6, "workers": workers, **result}
                    row["mvox_per_s"] = voxels / 1e6 / result["seconds"]
                    row["worker_peak_mib"] = max(result["worker_peaks_mib"][:workers] or [0])
                    rows.append(row)
                    print(
                        f"{mode:<9} {voxels / 1e6:6.0f} Mvox  {workers} worker(s)  {row['mvox_per_s']:5.2f} Mvox/s  "
                        f"worker peak {row['worker_peak_mib']:6.0f} MiB  sched {row['scheduler_peak_mib']:5.0f} MiB",
                        flush=True,
                    )
                if size <= args.whole_up_to:
                    command = [sys.executable, "-m", "connectomics_mednext.segment", "--prediction", prediction]
                    command += ["--mode", mode, "--output", os.path.join(folder, "whole.h5")]
                    result = run_measured(command)
                    row = {"mode": mode, "shape": shape, "mvox": voxels / 1e6, "workers": "whole volume", **result}
                    row["mvox_per_s"] = voxels / 1e6 / result["seconds"]
                    rows.append(row)
                    print(
                        f"{mode:<9} {voxels / 1e6:6.0f} Mvox  whole volume  {row['mvox_per_s']:5.2f} Mvox/s  "
                        f"peak {row['scheduler_peak_mib']:6.0f} MiB",
                        flush=True,
                    )
    return {"provenance": provenance(DESCRIBES), "block_size": [int(b) for b in BLOCK], "rows": rows}


def quality(args) -> Dict[str, object]:
    cases = {
        "gala_mini": (args.gala, os.path.join(args.data, "gala_mini", "test_label.h5"), None, {}),
        "fib25": (args.fib25, args.fib25_label, 1, {"resolution": 10.0}),
    }
    results = {}
    for name, (prediction, label, offset, options) in cases.items():
        if not prediction:
            continue
        with h5py.File(label, "r") as f:
            truth = f["main"][:].astype(np.int64) + (offset or 0)
        whole = segment(prediction, "boundary", **options).astype(np.int64)
        blocks = [int(b) for b in args.block_size]
        blockwise = segment(prediction, "boundary", block_size=blocks, **options).astype(np.int64)
        results[name] = {
            "mode": "boundary",
            "options": options,
            "block_size": blocks,
            "whole_vs_truth": neuron_scores(truth, whole),
            "blockwise_vs_truth": neuron_scores(truth, blockwise),
            "blockwise_vs_whole": neuron_scores(whole, blockwise),
            "objects": {"whole": int(whole.max()), "blockwise": int(blockwise.max())},
        }
        print(name, json.dumps(results[name], indent=1))
    return {"provenance": provenance(DESCRIBES), "cases": results}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = parser.add_subparsers(dest="what", required=True)
    mem = sub.add_parser("memory")
    mem.add_argument("--modes", nargs="+", default=list(CODES))
    mem.add_argument("--sizes", type=int, nargs="+", default=[8, 32, 128], help="Mvox of prediction")
    mem.add_argument("--workers", type=int, nargs="+", default=[1, 2])
    mem.add_argument("--whole-up-to", type=int, default=32, help="also run the whole-volume decoder up to this size")
    mem.add_argument("--scratch", default=None, help="where the predictions are written")
    qual = sub.add_parser("quality")
    qual.add_argument("--gala", help="bench_quality.py's gala_mini prediction (boundary)")
    qual.add_argument("--fib25", help="bench_quality.py's FIB-25 prediction (boundary, the test half)")
    qual.add_argument("--fib25-label", help="the FIB-25 test half's labels (bench_quality.py writes them)")
    qual.add_argument("--data", default=os.path.join(os.path.dirname(ROOT), "shared", "data"))
    qual.add_argument("--block-size", nargs=3, default=[32, 64, 64])
    for each in (mem, qual):
        each.add_argument("--out", help="JSON file for the results")
    args = parser.parse_args()
    record = memory(args) if args.what == "memory" else quality(args)
    if args.out:
        with open(args.out, "w", encoding="utf-8") as handle:
            json.dump(record, handle, indent=1)


if __name__ == "__main__":
    main()
