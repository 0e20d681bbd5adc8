"""Peak memory of streaming inference against the volume's depth and x-y plane.

Writes random uint8 volumes (``DEPTHxPLANE``: depth x plane x plane) to HDF5, predicts each in
a fresh process, and prints the peak RSS next to the input size, the size a float32 prediction
held in memory would take (what PyTC allocates) and our block buffers' bound. Peak RSS should
stop growing once the plane exceeds the block (``--block``, INFERENCE.STREAM_BLOCK_SIZE in y and
x). ``--model pointwise`` (a 1x1 conv) measures the streaming machinery alone, fast enough for
gigavoxel volumes on a CPU; ``--model mednext`` runs a small MedNeXt.

    python benchmarks/bench_streaming.py --shapes 256x512 4096x512 64x2048 64x4096
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


WINDOW, STRIDE = (32, 128, 128), (16, 64, 64)


def buffer_bound_mib(plane: int, block: int, channels: int = 1) -> float:
    """The blocks' float buffers plus one input slab (float32 and uint8), from the module docstring's bound."""
    side = min(plane, block)
    reach = min(plane, side + 2 * WINDOW[1])
    return ((channels + 1) * WINDOW[0] * side * side * 4 + WINDOW[0] * reach * reach * 5) / 2**20


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
    from connectomics_mednext.engine.inference import make_activation
    from connectomics_mednext.engine.predictor import Predictor, SlidingWindow

    torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    models = {
        "mednext": lambda: MedNeXt(1, 4, 1, exp_r=2, kernel_size=3, block_counts=[1] * 9),
        "pointwise": lambda: torch.nn.Conv3d(1, 1, 1),
    }
    model = models[args.model]().eval()
    start = time.perf_counter()
    settings = SlidingWindow(WINDOW, STRIDE, batch_size=4, block_size=(0, args.block, args.block))
    Predictor(model, make_activation(["sigmoid"], [1]), 1, settings).predict_to_hdf5([open_volume(args.volume)],
                                                                                      args.output)
    return {"seconds": time.perf_counter() - start,
            "peak_rss_mib": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024}


def main(argv: List[str] = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--shapes", nargs="+", default=["256x512", "64x2048"], help="DEPTHxPLANE volumes")
    parser.add_argument("--block", type=int, default=1024, help="largest output block in y and x")
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
        for shape in args.shapes:
            depth, plane = (int(n) for n in shape.split("x"))
            volume, output = os.path.join(folder, f"in_{shape}.h5"), os.path.join(folder, f"out_{shape}.h5")
            write_volume(volume, depth, plane)
            result = subprocess.run([sys.executable, os.path.abspath(__file__), "--worker", "--volume", volume,
                                     "--output", output, "--threads", str(args.threads), "--model", args.model,
                                     "--block", str(args.block)], check=True, capture_output=True, text=True)
            voxels = depth * plane * plane
            row = {"depth": depth, "plane": plane, "block": args.block, "model": args.model,
                   "input_mib": voxels / 2**20, "float32_prediction_mib": 4 * voxels / 2**20,
                   "buffer_bound_mib": buffer_bound_mib(plane, args.block),
                   **json.loads(result.stdout.strip().splitlines()[-1])}
            rows.append(row)
            print(f"{depth:5d} x {plane:5d}^2: input {row['input_mib']:6.0f} MiB, float32 prediction "
                  f"{row['float32_prediction_mib']:6.0f} MiB, buffers <= {row['buffer_bound_mib']:4.0f} MiB, "
                  f"peak RSS {row['peak_rss_mib']:5.0f} MiB, {row['seconds']:6.1f} s", flush=True)
            for path in (volume, output):
                os.remove(path)
    os.makedirs(os.path.dirname(args.json), exist_ok=True)
    with open(args.json, "w") as f:
        json.dump(rows, f, indent=2)


if __name__ == "__main__":
    main()
