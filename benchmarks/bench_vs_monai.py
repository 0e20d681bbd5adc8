"""Our MedNeXt against MONAI's ``monai.networks.nets.MedNeXt``: same run, same machine, same weights.

MONAI is a benchmark-only dependency (``pip install monai``). MONAI's network is
numerically the reference's once keys are renamed; this script copies our weights into
it, checks that both give the same output, then runs each implementation in its own
subprocess (so peak memory is per implementation) and times them run by run in turn, so a
slow spell of the machine hits both. It prints our figure, theirs and the ratio. Ratios are
what we quote: this machine is noisy.

    python benchmarks/bench_vs_monai.py                      # CPU: S and B, k3 and k5, 64^3
    python benchmarks/bench_vs_monai.py --device cuda --bf16 # GPU: 128^3 windows
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
from provenance import cpu_name, provenance  # noqa: E402
from timing import as_list, make_train_step, peak_memory_mib, summarise, time_repeated  # noqa: E402


def build_pair(size: str, kernel: int):
    """Our preset, MONAI's equivalent, and whether they hold the same weights (MONAI's, loaded into ours).

    MONAI routes expansion ratios to the down blocks differently from the reference (its
    ``down_i`` uses the encoder ratio of stage ``i``, the reference's that of stage ``i + 1``),
    so only presets with one ratio everywhere (S) can share weights; for the others MONAI
    keeps its own initialisation and the row is marked ``same_weights: false``.
    """
    from monai.networks.nets import MedNeXt as MonaiMedNeXt

    from connectomics_mednext import create_mednext_v1, load_weights
    from connectomics_mednext.errors import CheckpointError
    from connectomics_mednext.model.sizes import size_kwargs

    torch.manual_seed(0)
    ours = create_mednext_v1(1, 2, size, kernel_size=kernel, deep_supervision=True, checkpoint_style=None)
    exp_r = size_kwargs(size)["exp_r"]
    exp_r = [exp_r] * 9 if isinstance(exp_r, int) else exp_r
    blocks = size_kwargs(size)["block_counts"]
    theirs = MonaiMedNeXt(
        spatial_dims=3,
        init_filters=32,
        in_channels=1,
        out_channels=2,
        encoder_expansion_ratio=exp_r[:4],
        bottleneck_expansion_ratio=exp_r[4],
        decoder_expansion_ratio=exp_r[5:],
        kernel_size=kernel,
        deep_supervision=True,
        use_residual_connection=True,
        blocks_down=blocks[:4],
        blocks_bottleneck=blocks[4],
        blocks_up=blocks[5:],
    )
    try:  # MONAI's weights into ours, through the product's MONAI layout filter
        load_weights(ours, theirs.state_dict(), layout="monai")
    except CheckpointError:
        return ours, theirs, False
    return ours, theirs, True


def check_same_outputs(size: str, kernel: int, side: int = 32):
    """Max abs difference between our and MONAI's full-resolution eval output (None without shared weights)."""
    ours, theirs, same_weights = build_pair(size, kernel)
    if not same_weights:
        return None
    x = torch.randn(1, 1, side, side, side)
    with torch.no_grad():
        a = as_list(ours.eval()(x))[0]
        b = as_list(theirs.eval()(x))[0]
    return (a - b).abs().max().item()


# Workers answer on stdout lines that start with this, so library output cannot be mistaken for a reply.
REPLY = "@@reply "


def serve(args: argparse.Namespace) -> None:
    """Worker: build one implementation, then time one run of each command read from stdin."""
    from monai.inferers import sliding_window_inference

    device = torch.device(args.device)
    ours, theirs, _ = build_pair(args.model, args.kernel)
    model = (ours if args.impl == "ours" else theirs).to(device)
    patch = (args.patch,) * 3
    x = torch.randn((1, 1) + patch, device=device)
    target = torch.randint(0, 2, (1,) + patch, device=device)
    volume = torch.randn((1, 1) + (args.volume,) * 3, device=device) if args.volume else None
    autocast = torch.autocast(device.type, dtype=torch.bfloat16, enabled=args.bf16)
    train_step = make_train_step(model, x, target, args.bf16)

    def full_resolution(inputs: torch.Tensor) -> torch.Tensor:
        return as_list(model(inputs))[0]

    def infer_window() -> None:
        with torch.no_grad(), autocast:
            full_resolution(x)

    def infer_volume() -> None:
        with torch.no_grad(), autocast:
            sliding_window_inference(volume, patch, args.sw_batch, full_resolution, overlap=0.5, mode="gaussian")

    commands = {
        "train": (model.train, train_step),
        "window": (model.eval, infer_window),
        "volume": (model.eval, infer_volume),
    }
    for line in sys.stdin:
        command = line.strip()
        if command == "peak_memory":
            reply = peak_memory_mib(device)
        else:
            set_mode, work = commands[command]
            set_mode()
            reply = time_repeated(work, device, 0, 1)["median_s"]
        print(REPLY + json.dumps(reply), flush=True)


class Worker:
    """One implementation in its own process, so its peak memory is its own."""

    def __init__(self, argv: List[str]) -> None:
        self.process = subprocess.Popen(argv, stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)

    def ask(self, command: str):
        self.process.stdin.write(command + "\n")
        self.process.stdin.flush()
        for line in self.process.stdout:
            if line.startswith(REPLY):
                return json.loads(line[len(REPLY) :])
        raise SystemExit(f"benchmark worker {self.process.args} stopped (exit code {self.process.wait()}).")

    def close(self) -> None:
        self.process.stdin.close()
        self.process.wait()


def interleaved(workers: Dict[str, Worker], command: str, warmup: int, repeats: int) -> Dict[str, Dict[str, float]]:
    """Run ``command`` in each worker in turn (ABBA order), so slow spells of the machine hit both sides.

    Args:
        workers: implementation name -> worker.
        command: what each run does ('train', 'window' or 'volume').
        warmup: untimed runs per worker first.
        repeats: timed runs per worker.
    """
    for worker in workers.values():
        for _ in range(warmup):
            worker.ask(command)
    times: Dict[str, List[float]] = {name: [] for name in workers}
    names = list(workers)
    for round_index in range(repeats):
        for name in names if round_index % 2 == 0 else reversed(names):
            times[name].append(workers[name].ask(command))
    return {name: summarise(values) for name, values in times.items()}


def compare(args: argparse.Namespace, forwarded: List[str], size: str, kernel: int) -> Dict[str, Dict]:
    """Time ours and MONAI's, interleaved run by run.

    Returns, per implementation, ``train_step``, ``train_peak_memory_mib``, ``window`` and, with
    ``--volume``, ``sliding_window``.

    Args:
        args: the parsed command line.
        forwarded: the command-line arguments the workers get.
        size: the MedNeXt size ('S', 'B', ...).
        kernel: the kernel size.
    """
    workers = {
        impl: Worker(
            [
                sys.executable,
                os.path.abspath(__file__),
                *forwarded,
                "--worker",
                "--impl",
                impl,
                "--model",
                size,
                "--kernel",
                str(kernel),
            ]
        )
        for impl in ("ours", "monai")
    }
    try:
        train = interleaved(workers, "train", args.warmup, args.repeats)
        result = {
            impl: {"train_step": train[impl], "train_peak_memory_mib": worker.ask("peak_memory")}
            for impl, worker in workers.items()
        }
        window = interleaved(workers, "window", args.warmup, args.window_repeats)
        voxels = args.patch**3
        for impl in workers:
            result[impl]["window"] = dict(window[impl], voxels_per_s=voxels / window[impl]["median_s"])
        if args.volume:
            sweep = interleaved(workers, "volume", 0, args.volume_repeats)
            for impl in workers:
                result[impl]["sliding_window"] = dict(
                    sweep[impl], voxels_per_s=args.volume**3 / sweep[impl]["median_s"]
                )
    finally:
        for worker in workers.values():
            worker.close()
    return result


def main(argv: List[str] = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--models", nargs="*", default=["S", "B"])
    parser.add_argument("--kernels", nargs="*", type=int, default=[3, 5])
    parser.add_argument("--patch", type=int, help="window side (default 64 on CPU, 128 on GPU)")
    parser.add_argument(
        "--volume", type=int, help="sliding-window volume side; 0 skips (default 96 on CPU, 256 on GPU)"
    )
    parser.add_argument("--sw-batch", type=int, default=1, help="windows per batch in the sliding window")
    parser.add_argument("--bf16", action="store_true", help="bf16 autocast")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--warmup", type=int, default=1)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument(
        "--window-repeats",
        type=int,
        default=15,
        help="timed single-window inferences per side (cheap next to training steps)",
    )
    parser.add_argument("--volume-repeats", type=int, default=1)
    parser.add_argument(
        "--default-malloc",
        action="store_true",
        help="leave glibc malloc as is (by default both sides keep freed memory; see README)",
    )
    parser.add_argument("--json", default=None, help="write results here (default benchmarks/results/<device>.json)")
    parser.add_argument("--worker", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--impl", choices=["ours", "monai"], help=argparse.SUPPRESS)
    parser.add_argument("--model", help=argparse.SUPPRESS)
    parser.add_argument("--kernel", type=int, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    gpu = args.device.startswith("cuda")
    args.patch = args.patch or (128 if gpu else 64)
    args.volume = (256 if gpu else 96) if args.volume is None else args.volume
    torch.set_num_threads(args.threads)
    if not args.default_malloc:
        keep_freed_memory()
    if args.worker:
        serve(args)
        return

    forwarded = list(argv if argv is not None else sys.argv[1:])
    rows = []
    for size in args.models:
        for kernel in args.kernels:
            difference = check_same_outputs(size, kernel)
            if difference is not None and difference > 1e-4:
                raise SystemExit(f"MedNeXt-{size} k{kernel}: ours and MONAI's outputs differ by {difference:.2e}.")
            pair = compare(args, forwarded, size, kernel)
            rows.append(
                {
                    "model": size,
                    "kernel": kernel,
                    "same_weights": difference is not None,
                    "max_abs_difference": difference,
                    **pair,
                }
            )
            _print_row(rows[-1])
    path = args.json or os.path.join(
        os.path.dirname(os.path.abspath(__file__)), "results", f"vs_monai_{'gpu' if gpu else 'cpu'}.json"
    )
    os.makedirs(os.path.dirname(path), exist_ok=True)
    with open(path, "w") as f:
        json.dump(
            {
                "config": {k: v for k, v in vars(args).items() if k not in ("worker", "impl", "model", "kernel")},
                "device_name": torch.cuda.get_device_name() if gpu else cpu_name(),
                "provenance": provenance(["connectomics_mednext/model"]),
                "torch": torch.__version__,
                "rows": rows,
            },
            f,
            indent=2,
        )
    print(f"results written to {path}")


def _print_row(row: Dict) -> None:
    ours, theirs = row["ours"], row["monai"]
    figures = [
        ("train step s", ours["train_step"]["median_s"], theirs["train_step"]["median_s"]),
        ("train peak MiB", ours["train_peak_memory_mib"], theirs["train_peak_memory_mib"]),
        ("window infer s", ours["window"]["median_s"], theirs["window"]["median_s"]),
    ]
    if "sliding_window" in ours:
        figures.append(("sliding window s", ours["sliding_window"]["median_s"], theirs["sliding_window"]["median_s"]))
    if row["same_weights"]:
        print(
            f"MedNeXt-{row['model']} k{row['kernel']} (same weights; outputs differ by {row['max_abs_difference']:.1e})"
        )
    else:
        print(
            f"MedNeXt-{row['model']} k{row['kernel']} (MONAI's nearest config, its own weights: exp_r routing differs)"
        )
    print(f"  {'figure':18s} {'ours':>10s} {'MONAI':>10s} {'ratio':>7s}")
    for name, a, b in figures:
        print(f"  {name:18s} {a:10.3f} {b:10.3f} {a / b:7.2f}")
    t = ours["train_step"]
    print(
        f"  (ours train step min-max {t['min_s']:.3f}-{t['max_s']:.3f}; "
        f"MONAI {theirs['train_step']['min_s']:.3f}-{theirs['train_step']['max_s']:.3f})"
    )


if __name__ == "__main__":
    main()
