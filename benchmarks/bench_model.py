"""Training-step time, peak memory and inference throughput of one MedNeXt preset.

Compares eager against gradient checkpointing, fp32 against bf16 autocast, and the
channels-last layout on against off. Each case runs in its own process so that peak
memory belongs to that case alone.

    python benchmarks/bench_model.py --model S --kernel 3 --patch 64 --device cpu
"""

import argparse
import json
import os
import subprocess
import sys
from typing import Dict, List

import torch

from connectomics_mednext.engine.allocator import keep_freed_memory

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from timing import make_train_step, peak_memory_mib, time_repeated  # noqa: E402

CASES: Dict[str, Dict] = {
    "eager fp32": dict(checkpoint_style=None, bf16=False, channels_last=None),
    "checkpointing fp32": dict(checkpoint_style="outside_block", bf16=False, channels_last=None),
    "eager bf16": dict(checkpoint_style=None, bf16=True, channels_last=None),
    "eager fp32 channels_last off": dict(checkpoint_style=None, bf16=False, channels_last=False),
    "eager fp32 channels_last on": dict(checkpoint_style=None, bf16=False, channels_last=True),
}


def run_case(args: argparse.Namespace, case: Dict) -> Dict:
    from connectomics_mednext import create_mednext_v1

    device = torch.device(args.device)
    torch.manual_seed(0)
    model = create_mednext_v1(
        1,
        2,
        args.model,
        kernel_size=args.kernel,
        deep_supervision=True,
        checkpoint_style=case["checkpoint_style"],
        channels_last=case["channels_last"],
    ).to(device)
    shape = (args.batch, 1) + (args.patch,) * 3
    x = torch.randn(shape, device=device)
    target = torch.randint(0, 2, (args.batch,) + (args.patch,) * 3, device=device)
    train_step = make_train_step(model, x, target, case["bf16"])

    def infer() -> None:
        with torch.no_grad(), torch.autocast(device.type, dtype=torch.bfloat16, enabled=case["bf16"]):
            model(x)

    model.train()
    train = time_repeated(train_step, device, args.warmup, args.repeats)
    train_peak = peak_memory_mib(device)
    model.eval()
    inference = time_repeated(infer, device, args.warmup, args.repeats)
    voxels = x.numel()
    return {
        "train_step": train,
        "peak_memory_mib": train_peak,
        "inference": inference,
        "inference_voxels_per_s": voxels / inference["median_s"],
    }


def main(argv: List[str] = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", default="S", choices=["S", "B", "M", "L"])
    parser.add_argument("--kernel", type=int, default=3)
    parser.add_argument("--patch", type=int, default=64)
    parser.add_argument("--batch", type=int, default=1)
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--threads", type=int, default=2, help="CPU threads (torch.set_num_threads)")
    parser.add_argument("--warmup", type=int, default=1)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--cases", nargs="*", default=list(CASES), help="subset of: " + ", ".join(CASES))
    parser.add_argument("--json", help="write the results here")
    parser.add_argument("--case", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)
    keep_freed_memory()
    if args.case:  # worker mode: one case, result as JSON on the last line
        print(json.dumps(run_case(args, CASES[args.case])))
        return
    results = {}
    passthrough = list(argv if argv is not None else sys.argv[1:])
    for name in args.cases:
        if name not in CASES:
            parser.error(f"unknown case {name!r}; choose from {list(CASES)}")
        out = subprocess.run(
            [sys.executable, os.path.abspath(__file__), *passthrough, "--case", name],
            check=True,
            capture_output=True,
            text=True,
        )
        results[name] = json.loads(out.stdout.strip().splitlines()[-1])
    header = f"MedNeXt-{args.model} k{args.kernel}, batch {args.batch}, patch {args.patch}^3, {args.device}"
    if args.device == "cpu":
        header += f", {args.threads} threads"
    print(header)
    print(f"{'case':30s} {'train step s (min-max)':>24s} {'peak MiB':>9s} {'infer Mvox/s':>13s}")
    for name, r in results.items():
        t = r["train_step"]
        print(
            f"{name:30s} {t['median_s']:8.3f} ({t['min_s']:.3f}-{t['max_s']:.3f}) "
            f"{r['peak_memory_mib']:9.0f} {r['inference_voxels_per_s'] / 1e6:13.3f}"
        )
    if args.json:
        with open(args.json, "w") as f:
            json.dump({"config": vars(args), "results": results}, f, indent=2)


if __name__ == "__main__":
    main()
