"""Peak memory and the end of streaming inference, against the volume's size, the output format and the ranks.

Writes random uint8 volumes (``DEPTHxPLANE``: depth x plane x plane) to HDF5, predicts each in
fresh processes (``--ranks`` gloo ranks under torchrun), and prints the peak RSS next to the
input size, the size a float32 prediction held in memory would take (what PyTC allocates) and
our block buffers' bound. Peak RSS should stop growing once the plane exceeds the block
(``--block``, INFERENCE.STREAM_BLOCK_SIZE in y and x). With several ranks it also prints the
wall time from the last block written (on any rank) to the finished output: HDF5 joins the
ranks' files on rank 0 there, zarr has nothing left to do. ``--model pointwise`` (a 1x1 conv)
measures the streaming machinery alone, fast enough for gigavoxel volumes on a CPU;
``--model mednext`` runs a small MedNeXt.

    python benchmarks/bench_streaming.py --shapes 256x512 4096x512 --formats h5 zarr --ranks 1 2
"""

import argparse
import json
import os
import resource
import shutil
import subprocess
import sys
import tempfile
import time
from typing import List

import h5py
import numpy as np

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

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
            volume[start : start + 16] = rng.integers(0, 256, (min(16, depth - start), plane, plane), dtype=np.uint8)


def run_worker(args: argparse.Namespace) -> dict:
    import torch
    import torch.distributed as dist

    from connectomics_mednext import MedNeXt
    from connectomics_mednext.engine.inference import make_activation
    from connectomics_mednext.engine.predictor import Predictor, SlidingWindow
    from connectomics_mednext.io import open_volume

    class TimedPredictor(Predictor):
        """Records when this rank finished its last block."""

        last_block = 0.0

        def predict_block(self, *a, **k):
            super().predict_block(*a, **k)
            self.last_block = time.time()

    rank, world_size = 0, 1
    if "RANK" in os.environ:
        dist.init_process_group("gloo")
        rank, world_size = dist.get_rank(), dist.get_world_size()
    torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    models = {
        "mednext": lambda: MedNeXt(1, 4, 1, exp_r=2, kernel_size=3, block_counts=[1] * 9),
        "pointwise": lambda: torch.nn.Conv3d(1, 1, 1),
    }
    model = models[args.model]().eval()
    start = time.perf_counter()
    settings = SlidingWindow(WINDOW, STRIDE, batch_size=4, block_size=(0, args.block, args.block))
    predictor = TimedPredictor(model, make_activation(["sigmoid"], [1]), 1, settings, rank=rank, world_size=world_size)
    predictor.predict_to_file([open_volume(args.volume)], args.output)
    finished = time.time()
    if world_size > 1:
        dist.destroy_process_group()
    return {
        "rank": rank,
        "seconds": time.perf_counter() - start,
        "last_block": predictor.last_block,
        "finished": finished,
        "peak_rss_mib": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
    }


def launch(args: argparse.Namespace, volume: str, output: str, ranks: int) -> List[dict]:
    """One prediction in fresh processes (torchrun for several ranks); each rank's JSON result."""
    report = output + ".report"
    worker = [
        os.path.abspath(__file__),
        "--worker",
        "--volume",
        volume,
        "--output",
        output,
        "--threads",
        str(args.threads),
        "--model",
        args.model,
        "--block",
        str(args.block),
        "--report",
        report,
    ]
    command = [sys.executable, *worker]
    if ranks > 1:
        command = [
            sys.executable,
            "-m",
            "torch.distributed.run",
            f"--nproc_per_node={ranks}",
            "--master_port=29533",
            *worker,
        ]
    subprocess.run(
        command,
        check=True,
        capture_output=True,
        text=True,
        env=dict(os.environ, OMP_NUM_THREADS=str(args.threads), PYTHONPATH=ROOT),
    )
    results = []
    for rank in range(ranks):
        with open(f"{report}.{rank}") as f:
            results.append(json.load(f))
        os.remove(f"{report}.{rank}")
    return results


def main(argv: List[str] = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--shapes", nargs="+", default=["256x512", "64x2048"], help="DEPTHxPLANE volumes")
    parser.add_argument("--block", type=int, default=1024, help="largest output block in y and x")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--model", choices=["pointwise", "mednext"], default="pointwise")
    parser.add_argument("--formats", nargs="+", choices=["h5", "zarr"], default=["h5", "zarr"])
    parser.add_argument("--ranks", nargs="+", type=int, default=[1, 2], help="processes sharing the blocks")
    parser.add_argument(
        "--json", default=os.path.join(os.path.dirname(os.path.abspath(__file__)), "results", "streaming_cpu.json")
    )
    parser.add_argument("--worker", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--volume", help=argparse.SUPPRESS)
    parser.add_argument("--output", help=argparse.SUPPRESS)
    parser.add_argument("--report", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.worker:
        result = run_worker(args)
        with open(f"{args.report}.{result['rank']}", "w") as f:
            json.dump(result, f)
        return
    rows = []
    with tempfile.TemporaryDirectory() as folder:
        for shape in args.shapes:
            depth, plane = (int(n) for n in shape.split("x"))
            volume = os.path.join(folder, f"in_{shape}.h5")
            write_volume(volume, depth, plane)
            for output_format in args.formats:
                for ranks in args.ranks:
                    output = os.path.join(folder, f"out_{shape}.{output_format}")
                    results = launch(args, volume, output, ranks)
                    voxels = depth * plane * plane
                    end = max(r["finished"] for r in results)
                    row = {
                        "depth": depth,
                        "plane": plane,
                        "block": args.block,
                        "model": args.model,
                        "format": output_format,
                        "ranks": ranks,
                        "input_mib": voxels / 2**20,
                        "float32_prediction_mib": 4 * voxels / 2**20,
                        "buffer_bound_mib": buffer_bound_mib(plane, args.block),
                        "seconds": max(r["seconds"] for r in results),
                        "after_last_block_s": end - max(r["last_block"] for r in results),
                        "peak_rss_mib": max(r["peak_rss_mib"] for r in results),
                    }
                    rows.append(row)
                    print(
                        f"{depth:5d} x {plane:5d}^2 {output_format:4s} {ranks} rank(s): input "
                        f"{row['input_mib']:6.0f} MiB, float32 prediction {row['float32_prediction_mib']:6.0f} MiB, "
                        f"buffers <= {row['buffer_bound_mib']:4.0f} MiB, peak RSS {row['peak_rss_mib']:5.0f} MiB "
                        f"per rank, {row['seconds']:6.1f} s, {row['after_last_block_s']:6.2f} s after the last "
                        "block",
                        flush=True,
                    )
                    if os.path.isdir(output):
                        shutil.rmtree(output)
                    else:
                        os.remove(output)
            os.remove(volume)
    os.makedirs(os.path.dirname(args.json), exist_ok=True)
    with open(args.json, "w") as f:
        json.dump(rows, f, indent=2)


if __name__ == "__main__":
    main()
