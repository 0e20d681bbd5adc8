"""Our MedNeXt against MONAI's on a shared CPU: alone, then beside 1 and 2 competing 2-thread processes.

A shared workstation, or a cluster node whose scheduler gives fewer cores than the process
sees, runs other work beside ours. Each competitor is a process of 2 threads multiplying
matrices without pause. For each load this runs ``bench_vs_monai.py`` (same weights, the two
implementations timed in turn, so the load hits both alike) and writes one JSON of all loads.

    python benchmarks/bench_contention.py                 # S k3, 64^3, loads 0, 1, 2
    python benchmarks/bench_contention.py --loads 0 2 --models S B
"""

import argparse
import json
import os
import subprocess
import sys
import tempfile
from typing import List

HERE = os.path.dirname(os.path.abspath(__file__))
COMPETITOR = (
    "import torch; torch.set_num_threads(2); a = torch.randn(1024, 1024)\nwhile True:\n    a = torch.tanh(a @ a)\n"
)


def run_load(load: int, forwarded: List[str]) -> dict:
    """bench_vs_monai's figures beside ``load`` competing processes."""
    competitors = [subprocess.Popen([sys.executable, "-c", COMPETITOR]) for _ in range(load)]
    try:
        with tempfile.TemporaryDirectory() as folder:
            report = os.path.join(folder, "vs_monai.json")
            subprocess.run(
                [
                    sys.executable,
                    os.path.join(HERE, "bench_vs_monai.py"),
                    "--volume",
                    "0",
                    "--json",
                    report,
                    *forwarded,
                ],
                check=True,
            )
            with open(report, encoding="utf-8") as handle:
                return json.load(handle)
    finally:
        for process in competitors:
            process.kill()
            process.wait()


def main(argv: List[str] = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--loads", nargs="+", type=int, default=[0, 1, 2], help="competing 2-thread processes")
    parser.add_argument("--json", default=os.path.join(HERE, "results", "contention_cpu.json"))
    args, forwarded = parser.parse_known_args(argv)
    forwarded = forwarded or ["--models", "S", "--kernels", "3"]
    results = {"competitor": COMPETITOR, "arguments": forwarded, "loads": {}}
    for load in args.loads:
        results["loads"][str(load)] = run_load(load, forwarded)
    with open(args.json, "w", encoding="utf-8") as handle:
        json.dump(results, handle, indent=1)
    print(f"{'load':<6}{'model':<8}{'train ours/MONAI (s)':<28}{'ratio':<8}{'window ours/MONAI (s)':<28}ratio")
    for load, report in results["loads"].items():
        for row in report["rows"]:
            ours, theirs = row["ours"], row["monai"]
            train = (ours["train_step"]["median_s"], theirs["train_step"]["median_s"])
            window = (ours["window"]["median_s"], theirs["window"]["median_s"])
            print(
                f"{load:<6}{row['model'] + ' k' + str(row['kernel']):<8}"
                f"{f'{train[0]:.2f} / {train[1]:.2f}':<28}{train[0] / train[1]:<8.2f}"
                f"{f'{window[0]:.3f} / {window[1]:.3f}':<28}{window[0] / window[1]:.2f}"
            )
    print(f"results written to {args.json}")


if __name__ == "__main__":
    main()
