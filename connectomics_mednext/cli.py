"""``connectomics-mednext`` / ``scripts/main.py``: PyTC's command line, with MedNeXt registered.

The flags are PyTC v1.0's. When PyTC is importable, the plugin is registered and PyTC's own
flow runs unchanged: ``Trainer``, then ``train``, ``test``, ``test_singly`` or ``run_chunk``.
Otherwise our engine trains or infers from the same YAML and writes the same files.

A mistake in the config, the flags or an input file ends the run with one sentence naming it
and exit code 2; ``--debug`` shows the traceback too.
"""

import argparse
import os
from typing import List, Optional

from .config import check_config_file, check_native_values, load_native_cfg
from .engine.allocator import keep_freed_memory
from .engine.checkpoint import NEWEST, saved_config_file
from .engine.stop_signals import TrainingStopped
from .engine.threads import set_threads
from .errors import ConfigError, argument_names, run_reporting_errors
from .pytc import PyTCNotAvailable, describe_pytc, import_pytc, run_pytc

# Library argument -> this command's flag, so that messages name what the user typed.
FLAGS = {
    "inference": "--inference",
    "distributed": "--distributed",
    "checkpoint": "--checkpoint",
    "target_opt": "MODEL.TARGET_OPT",
    "config_file": "--config-file",
    "config_base": "--config-base",
}


# Shown by --help: the two jobs a newcomer runs first. Relative paths in a config are read from the
# folder the command runs in; a path given on the command line is used as written.
EXAMPLES = """examples:
  train from a copied config (checkpoints go to its DATASET.OUTPUT_PATH):
    connectomics-mednext --config-base configs/MedNeXt-Base.yaml --config-file my.yaml

  predict a new volume with a trained checkpoint (its saved config gives the network):
    connectomics-mednext --inference --checkpoint outputs/run/checkpoint_00200.pth.tar \\
        INFERENCE.IMAGE_NAME /abs/path/volume.h5 INFERENCE.OUTPUT_PATH predictions
"""


def build_parser() -> argparse.ArgumentParser:
    """The argument parser, with PyTC v1.0's flags."""
    parser = argparse.ArgumentParser(
        description="Train or infer MedNeXt with PyTorch Connectomics' flags: PyTC's engine when it is importable "
        "(see --engine), else ours, from the same YAML.",
        epilog=EXAMPLES,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument(
        "--config-file",
        type=str,
        default=None,
        help="the task configuration (.yaml or .yml); with --inference it may be left out, and the "
        "config saved in the --checkpoint is used (overrides still apply)",
    )
    parser.add_argument(
        "--config-base", type=str, default=None, help="a base configuration merged before --config-file (.yaml or .yml)"
    )
    parser.add_argument(
        "--inference",
        action="store_true",
        help="predict INFERENCE.IMAGE_NAME with the weights of --checkpoint instead of training",
    )
    parser.add_argument(
        "--distributed",
        action="store_true",
        help="one process per device under torchrun (DDP training; inference ranks share the blocks)",
    )
    parser.add_argument(
        "--workers",
        type=int,
        default=None,
        help="with --inference and a zarr INFERENCE.OUTPUT_NAME: N daisy workers, each loading the network once and "
        "pulling blocks; a dead worker's block is retried by another (needs the scale extra)",
    )
    parser.add_argument(
        "--worker-command",
        default=None,
        help="with --workers: a command that starts each worker elsewhere, e.g. 'srun -p gpu --gres=gpu:1'",
    )
    parser.add_argument(
        "--checkpoint",
        type=str,
        default=None,
        help="with --inference: the weights to predict with; without: the checkpoint to resume "
        "training from (weights, optimizer, scheduler, iteration and crop generators); 'last' resumes the newest "
        "in DATASET.OUTPUT_PATH, or starts afresh when there is none (for scheduler requeues)",
    )
    parser.add_argument(
        "--manual-seed",
        type=int,
        default=None,
        help="seed of weight initialisation, crops and augmentation (default 0, as in PyTC)",
    )
    parser.add_argument(
        "--local_world_size",
        type=int,
        default=1,
        help="devices per process; our engine uses one (start one process per GPU with torchrun)",
    )
    parser.add_argument(
        "--local_rank",
        "--local-rank",
        type=int,
        default=None,
        help="this process's rank on its node, as torch.distributed.launch passes it; our engine "
        "reads LOCAL_RANK from torchrun and accepts the flag only when it agrees",
    )
    parser.add_argument("--debug", action="store_true", help="print the full traceback of an error")
    parser.add_argument(
        "--engine",
        choices=["auto", "pytc", "native"],
        default="auto",
        help="auto: PyTorch Connectomics when importable, else our engine (the first line printed "
        "says which runs and why)",
    )
    parser.add_argument(
        "opts",
        default=None,
        nargs=argparse.REMAINDER,
        help="config overrides as KEY VALUE pairs, e.g. SOLVER.ITERATION_TOTAL 100",
    )
    return parser


def check_files(args: argparse.Namespace) -> None:
    """Refuse a missing or non-YAML config file and a missing checkpoint before anything starts.

    Args:
        args: parsed command-line arguments.
    """
    for flag, path in (("--config-file", args.config_file), ("--config-base", args.config_base)):
        if path is not None:
            check_config_file(path, flag)
    if args.checkpoint == NEWEST:
        if args.inference:
            raise ConfigError(f"--checkpoint {NEWEST} resumes training; with --inference name the checkpoint file.")
    elif args.checkpoint is not None and not os.path.isfile(args.checkpoint):
        raise ConfigError(f"--checkpoint: file {args.checkpoint!r} does not exist.")
    if (args.workers is not None or args.worker_command) and not args.inference:
        raise ConfigError("--workers and --worker-command share the blocks of --inference; training uses torchrun.")
    if args.config_file is None and not (args.inference and args.checkpoint):
        raise ConfigError(
            "--config-file is required; only --inference --checkpoint CK can take the config saved "
            "in the checkpoint instead."
        )


def check_native_flags(args: argparse.Namespace) -> None:
    """Refuse PyTC flags whose value our engine cannot honour.

    Args:
        args: parsed command-line arguments.
    """
    if args.manual_seed is not None and args.manual_seed < 0:
        raise ConfigError(
            f"--manual-seed is {args.manual_seed}, but must be 0 or more (numpy's generators refuse negative seeds)."
        )
    if args.local_world_size != 1:
        raise ConfigError(
            f"--local_world_size is {args.local_world_size}, but our engine drives one device per "
            "process; start one process per GPU with torchrun --nproc_per_node=N ... --distributed."
        )
    if args.local_rank is None:
        return
    if not args.distributed:
        raise ConfigError("--local_rank is only meaningful with --distributed.")
    env_rank = os.environ.get("LOCAL_RANK")
    if env_rank is not None and int(env_rank) != args.local_rank:
        raise ConfigError(f"--local_rank is {args.local_rank}, but torchrun set LOCAL_RANK={env_rank}.")


def run_native(args: argparse.Namespace) -> None:
    """Train or infer with our engine, from the same flags and YAML.

    Args:
        args: parsed command-line arguments.
    """
    from .engine.inference import main_infer
    from .engine.trainer import main_train

    check_native_flags(args)
    cfg = load_native_cfg(args.config_file, args.config_base, args.opts)
    check_native_values(cfg)
    _say(set_threads())
    seed = 0 if args.manual_seed is None else args.manual_seed
    if args.inference:
        main_infer(cfg, args.checkpoint, args.distributed, args.workers, args.worker_command)
    else:
        main_train(cfg, args.checkpoint, distributed=args.distributed, seed=seed)


def choose_engine(choice: str, daisy_workers: bool = False) -> bool:
    """Whether PyTC runs for ``--engine choice``; prints one line saying which engine runs and why.

    Args:
        choice: ``auto``, ``pytc`` or ``native``.
        daisy_workers: ``--workers`` was given, which only our engine runs.
    """
    if choice == "native":
        _say("engine: ours (--engine native)")
        return False
    if choice == "auto" and daisy_workers:
        _say("engine: ours, because --workers runs our engine's prediction on daisy")
        return False
    try:
        modules = import_pytc()
    except PyTCNotAvailable as error:
        if choice == "pytc":
            raise ConfigError(f"--engine pytc: {error}") from error
        _say(f"engine: ours, because {error}")
        return False
    _say(f"engine: {describe_pytc(modules)} (--engine {choice})")
    return True


def _say(line: str) -> None:
    if os.environ.get("RANK", "0") == "0":
        print(line, flush=True)


def run_command(argv: List[str]) -> None:
    """Parse ``argv`` and run training or inference; errors propagate (see :func:`main`).

    Args:
        argv: command-line arguments, without the program name.
    """
    args = build_parser().parse_args(argv)
    with argument_names(FLAGS):
        check_files(args)
        # This process is ours, so its allocator may be tuned (see engine/allocator.py).
        keep_freed_memory()
        run = run_pytc if choose_engine(args.engine, args.workers is not None) else run_native
        if run is run_pytc and args.checkpoint == NEWEST:
            raise ConfigError(f"--checkpoint {NEWEST} is our engine's; PyTorch Connectomics needs the checkpoint file.")
        if run is run_pytc and args.workers is not None:
            raise ConfigError("--workers runs our engine's prediction on daisy; use --engine native or auto.")
        try:
            if args.config_file is not None:
                run(args)
                return
            with saved_config_file(args.checkpoint) as args.config_file:
                _say(f"config: the one saved in {args.checkpoint}")
                run(args)
        except TrainingStopped as stopped:
            raise SystemExit(stopped.exit_code) from None


def main(argv: Optional[List[str]] = None) -> None:
    """Entry point of ``connectomics-mednext`` and ``scripts/main.py``.

    A :class:`~connectomics_mednext.errors.UserError` is printed as one line to stderr and
    exits with code 2; with ``--debug`` its traceback is printed too.

    Args:
        argv: command-line arguments; ``None`` reads ``sys.argv``.
    """
    run_reporting_errors(run_command, argv, FLAGS)
