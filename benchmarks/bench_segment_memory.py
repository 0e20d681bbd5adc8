"""Peak memory of each decoding mode, per voxel, on synthetic predictions; one process per case.

The whole-volume modes' figures are what ``connectomics_mednext/segment/decoders.py`` budgets
(``Decoder.bytes_per_voxel``) before it refuses a volume; ``binary`` should stay flat as the
depth grows, since it labels slab by slab.

    python benchmarks/bench_segment_memory.py --out benchmarks/results/segment_memory_cpu.json
"""

import argparse
import json
import os
import subprocess
import sys
import tempfile

MAKE = r"""
import sys, h5py, numpy as np
from connectomics_mednext.data.synthetic import make_em_volume
from connectomics_mednext.data.targets import make_target
mode, depth, folder = sys.argv[1], int(sys.argv[2]), sys.argv[3]
cells = make_em_volume((depth, 256, 256), cells=depth, mitochondria=0, seed=0)["label"]
codes = {"binary": ["0"], "bc": ["0", "4"], "boundary": ["4"], "affinity": ["2"]}[mode]
channels = np.concatenate([make_target(cells, code) for code in codes])
with h5py.File(f"{folder}/p.h5", "w") as f:
    f.create_dataset("vol0", data=(channels * 255).astype(np.uint8), chunks=(1, 16, 256, 256))
"""
# Measured in a process of its own, so that making the prediction does not set the high-water mark.
DECODE = r"""
import resource, sys
from connectomics_mednext.segment import segment_file
import connectomics_mednext.segment.decoders, scipy.ndimage, skimage.segmentation, waterz, cc3d
mode, folder = sys.argv[1], sys.argv[2]
start = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
segment_file(f"{folder}/p.h5", f"{folder}/s.h5", mode)
print("RSS", start * 1024, resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024)
"""


def measure(mode: str, depth: int) -> dict:
    """Peak RSS growth of one decode of a (depth, 256, 256) volume, in a fresh process."""
    with tempfile.TemporaryDirectory() as folder:
        subprocess.run([sys.executable, "-c", MAKE, mode, str(depth), folder], check=True)
        result = subprocess.run(
            [sys.executable, "-c", DECODE, mode, folder], capture_output=True, text=True, check=True
        )
    line = next(line for line in result.stdout.splitlines() if line.startswith("RSS "))
    start, peak = (int(v) for v in line.split()[1:])
    voxels = depth * 256 * 256
    return {
        "mode": mode,
        "shape": [depth, 256, 256],
        "voxels": voxels,
        "rss_before_mib": start / 2**20,
        "peak_rss_mib": peak / 2**20,
        "bytes_per_voxel": (peak - start) / voxels,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--depths", type=int, nargs="+", default=[64, 256])
    parser.add_argument("--out", help="JSON file for the results")
    args = parser.parse_args()
    rows = [measure(mode, depth) for mode in ("binary", "bc", "boundary", "affinity") for depth in args.depths]
    for row in rows:
        print(
            f"{row['mode']:<9} {row['shape']}  peak {row['peak_rss_mib']:7.0f} MiB  "
            f"{row['bytes_per_voxel']:5.1f} bytes/voxel above the start"
        )
    if args.out:
        with open(args.out, "w", encoding="utf-8") as handle:
            json.dump({"machine": os.uname().machine, "cpus": os.cpu_count(), "rows": rows}, handle, indent=2)


if __name__ == "__main__":
    main()
