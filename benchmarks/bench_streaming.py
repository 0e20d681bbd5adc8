"""Peak memory of streaming inference against the volume's depth.

Writes random uint8 volumes of growing depth (same x-y plane) to HDF5, predicts each in a
fresh process, and prints the peak RSS next to the input size and the size a float32
prediction held in memory would take (what PyTC allocates). Peak RSS should stay flat as the
depth grows. ``--model pointwise`` (a 1x1 conv) measures the streaming machinery alone, fast
enough for gigavoxel volumes on a CPU; ``--model mednext`` runs a small MedNeXt.

    python benchmarks/bench_streaming.py --depths 256 1024 4096 --plane 512
"""
import argparse
import json
import os
import resource
import subprocess
import sys
import tempfile
import time
from typing import List

import h5py
import numpy as np


def write_volume(path: str, depth: int, plane: int) -> None:
    rng = np.random.default_rng(0)
    with h5py.File(path, "w") as f:
        volume = f.create_dataset("main", shape=(depth, plane, plane), dtype=np.uint8, chunks=(16, plane, plane))
        for start in range(0, depth, 16):
            volume[start:start + 16] = rng.integers(0, 256, (min(16, depth - start), plane, plane), dtype=np.uint8)


def run_worker(args: argparse.Namespace) -> dict:
    import torch

    from connectomics_mednext import MedNeXt
    from connectomics_mednext.data.volumes import open_volume
    from connectomics_mednext.engine.inference import make_activation, predict_to_hdf5

    torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    models = {
        "mednext": lambda: MedNeXt(1, 4, 1, exp_r=2, kernel_size=3, block_counts=[1] * 9),
        "pointwise": lambda: torch.nn.Conv3d(1, 1, 1),
    }
    model = models[args.model]().eval()
    window = (32, 128, 128)
    start = time.perf_counter()
    predict_to_hdf5(model, [open_volume(args.volume)], args.output, window, (16, 64, 64), 1,
                    make_activation(["sigmoid"], [1]), batch_size=4)
    return {"seconds": time.perf_counter() - start,
            "peak_rss_mib": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024}


def main(argv: List[str] = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--depths", type=int, nargs="+", default=[128, 512, 2048])
    parser.add_argument("--plane", type=int, default=512)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--model", choices=["pointwise", "mednext"], default="pointwise")
    parser.add_argument("--json", default=os.path.join(os.path.dirname(os.path.abspath(__file__)), "results",
                                                       "streaming_cpu.json"))
    parser.add_argument("--worker", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--volume", help=argparse.SUPPRESS)
    parser.add_argument("--output", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.worker:
        print(json.dumps(run_worker(args)))
        return
    rows = []
    with tempfile.TemporaryDirectory() as folder:
        for depth in args.depths:
            volume, output = os.path.join(folder, f"in_{depth}.h5"), os.path.join(folder, f"out_{depth}.h5")
            write_volume(volume, depth, args.plane)
            result = subprocess.run([sys.executable, os.path.abspath(__file__), "--worker", "--volume", volume,
                                     "--output", output, "--threads", str(args.threads), "--model", args.model],
                                    check=True, capture_output=True, text=True)
            voxels = depth * args.plane * args.plane
            row = {"depth": depth, "plane": args.plane, "model": args.model, "input_mib": voxels / 2**20,
                   "float32_prediction_mib": 4 * voxels / 2**20, **json.loads(result.stdout.strip().splitlines()[-1])}
            rows.append(row)
            print(f"depth {depth:5d}: input {row['input_mib']:7.0f} MiB, float32 prediction {row['float32_prediction_mib']:7.0f} MiB, "
                  f"peak RSS {row['peak_rss_mib']:6.0f} MiB, {row['seconds']:6.1f} s", flush=True)
            for path in (volume, output):
                os.remove(path)
    os.makedirs(os.path.dirname(args.json), exist_ok=True)
    with open(args.json, "w") as f:
        json.dump(rows, f, indent=2)


if __name__ == "__main__":
    main()
