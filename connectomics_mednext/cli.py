"""``connectomics-mednext`` / ``scripts/main.py``: PyTC's command line, with MedNeXt registered.

The flags are PyTC v1.0's. When PyTC is importable, the plugin is registered and PyTC's own
flow runs unchanged: ``Trainer``, then ``train``, ``test``, ``test_singly`` or ``run_chunk``.
Otherwise our engine trains or infers from the same YAML and writes the same files.
"""
import argparse
import os
import sys
from typing import List, Optional

from .config import add_mednext_config, check_native_values, load_native_cfg
from .engine.allocator import keep_freed_memory
from .pytc import PyTCNotAvailable, is_pytc_available, register


def build_parser() -> argparse.ArgumentParser:
    """The argument parser, with PyTC v1.0's flags."""
    parser = argparse.ArgumentParser(description="MedNeXt training and inference (PyTorch Connectomics flags)")
    parser.add_argument("--config-file", type=str, required=True, help="configuration file (yaml)")
    parser.add_argument("--config-base", type=str, default=None, help="base configuration file (yaml)")
    parser.add_argument("--inference", action="store_true", help="inference mode")
    parser.add_argument("--distributed", action="store_true", help="distributed training")
    parser.add_argument("--checkpoint", type=str, default=None, help="path to load the checkpoint")
    parser.add_argument("--manual-seed", type=int, default=None)
    parser.add_argument("--local_world_size", type=int, default=1, help="number of GPUs each process")
    parser.add_argument("--local_rank", "--local-rank", type=int, default=None, help="node rank for distributed training")
    parser.add_argument("--debug", action="store_true", help="run in debug mode")
    parser.add_argument("--engine", choices=["auto", "pytc", "native"], default="auto",
                        help="auto: PyTorch Connectomics when importable, else our engine")
    parser.add_argument("opts", default=None, nargs=argparse.REMAINDER,
                        help="config overrides, e.g. SOLVER.ITERATION_TOTAL 100")
    return parser


def _check_files(args: argparse.Namespace) -> None:
    for flag, path in (("--config-file", args.config_file), ("--config-base", args.config_base),
                       ("--checkpoint", args.checkpoint)):
        if path is not None and not os.path.isfile(path):
            raise SystemExit(f"{flag}: file {path!r} does not exist.")


def run_pytc(args: argparse.Namespace) -> None:
    """Register MedNeXt in PyTC, then run PyTC's training or inference as its main.py does.

    Args:
        args: parsed command-line arguments.
    """
    register()
    import torch
    from connectomics.config import load_cfg, save_all_cfg
    from connectomics.engine import Trainer
    from connectomics.utils.system import init_devices

    cfg = load_cfg(args, add_cfg_func=add_mednext_config)
    device = init_devices(args, cfg)
    if args.local_rank in (0, None):
        print("PyTorch:", torch.__version__)
        print(cfg)
        if not os.path.exists(cfg.DATASET.OUTPUT_PATH):
            os.makedirs(cfg.DATASET.OUTPUT_PATH)
            save_all_cfg(cfg, cfg.DATASET.OUTPUT_PATH)
    mode = "test" if args.inference else "train"
    trainer = Trainer(cfg, device, mode, rank=args.local_rank, checkpoint=args.checkpoint)
    if cfg.DATASET.DO_CHUNK_TITLE != 0:
        trainer.run_chunk(mode)
    elif not args.inference:
        trainer.train()
    elif cfg.INFERENCE.DO_SINGLY:
        trainer.test_singly()
    else:
        trainer.test()
    print(f"Rank: {args.local_rank}. Device: {device}. Process is finished!")


def run_native(args: argparse.Namespace) -> None:
    """Train or infer with our engine, from the same flags and YAML.

    Args:
        args: parsed command-line arguments.
    """
    from .engine.trainer import main_infer, main_train

    cfg = load_native_cfg(args.config_file, args.config_base, args.opts)
    check_native_values(cfg)
    if args.inference:
        main_infer(cfg, args.checkpoint, distributed=args.distributed)
    else:
        main_train(cfg, args.checkpoint, distributed=args.distributed)


def main(argv: Optional[List[str]] = None) -> None:
    """Entry point of ``connectomics-mednext`` and ``scripts/main.py``: PyTC's flow when PyTC is
    importable, else our engine.

    Args:
        argv: command-line arguments; ``None`` reads ``sys.argv``.
    """
    args = build_parser().parse_args(argv if argv is not None else sys.argv[1:])
    _check_files(args)
    # This process is ours, so its allocator may be tuned (see engine/allocator.py).
    keep_freed_memory()
    use_pytc = args.engine == "pytc" or (args.engine == "auto" and is_pytc_available())
    try:
        (run_pytc if use_pytc else run_native)(args)
    except PyTCNotAvailable as error:
        raise SystemExit(f"--engine pytc: {error}") from error
