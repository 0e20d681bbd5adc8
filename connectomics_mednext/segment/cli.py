"""``connectomics-mednext-segment`` / ``python -m connectomics_mednext.segment``: prediction -> instance labels."""

import argparse
from typing import List, Optional

from ..errors import ConfigError, argument, argument_names, look_up_option, run_reporting_errors
from ..io.chunked import split_container
from .blockwise import is_blockwise_output, segment_blockwise
from .decoders import DECODERS, SegmentOptions, resolution_tuple
from .run import segment_file

DEFAULTS = SegmentOptions()


# (SegmentOptions field, type, help without the default): one flag each.
OPTION_FLAGS = [
    ("threshold", float, "binary: foreground probability; boundary: below it a voxel is not boundary"),
    ("channel", int, "binary, boundary: the channel to read"),
    ("connectivity", int, "6, 18 or 26: of the components (binary) and the seeds (bc, boundary)"),
    ("min_size", int, "objects with fewer voxels become background"),
    ("slab_planes", int, "binary: z planes labelled at a time, which bounds memory; 0 labels the whole volume at once"),
    ("seed_threshold", float, "bc: foreground probability above which a voxel may seed"),
    ("contour_threshold", float, "bc: contour probability below which a voxel may seed"),
    ("foreground_threshold", float, "bc: foreground probability above which a voxel belongs to an object"),
    ("seed_min_size", int, "bc, boundary: seeds with fewer voxels are dropped"),
    (
        "seed_distance",
        float,
        "boundary: distance to the nearest boundary, in the units of --resolution, from which a voxel seeds; "
        "None: 3 voxels of the finest axis",
    ),
    (
        "resolution",
        float,
        "voxel size (z y x, or one value), e.g. 30 6 6 nm for SNEMI, for boundary's distances; None: the "
        "prediction's recorded voxel size, else 1 (distances in voxels)",
    ),
    ("merge_threshold", float, "affinity: waterz merges regions while 1 - mean affinity is below this"),
    ("affinity_low", float, "affinity: edges below never join fragments"),
    ("affinity_high", float, "affinity: edges above always join fragments"),
    ("block_context", int, "blockwise: voxels read beyond each face of a block (bc, boundary, affinity)"),
]


# segment_file's and SegmentOptions' argument names -> this command's flags.
FLAGS = {
    name: f"--{name.replace('_', '-')}"
    for name in ["prediction", "output", "mode", "dataset", "max_memory", "block_size", "workers", "worker_command"]
    + [name for name, _, _ in OPTION_FLAGS]
}


def build_parser() -> argparse.ArgumentParser:
    """The flags, each with its default and the modes that read it."""
    parser = argparse.ArgumentParser(
        prog="connectomics-mednext-segment",
        description="Decode a prediction in PyTC's layout (HDF5 or zarr 'vol0', (C, Z, Y, X) uint8, probability x 255) "
        "into instance labels (uint32 or uint64, background 0): an HDF5 file (dataset 'main'), or, blockwise on "
        "daisy workers, a zarr array named <container>.zarr/<array>. Probabilities are in 0..1.",
    )
    parser.add_argument(
        "--prediction", required=True, help="the prediction written by either engine (HDF5, or our .zarr folder)"
    )
    parser.add_argument(
        "--mode",
        required=True,
        metavar="MODE",
        help=f"one of {sorted(DECODERS)}: binary (TARGET_OPT 0), bc (0 and 4), boundary (4), affinity (2)",
    )
    parser.add_argument(
        "--output",
        required=True,
        help="the labels to write: an HDF5 file (dataset 'main'), or seg.zarr/labels to decode blockwise on daisy",
    )
    parser.add_argument("--dataset", default="vol0", help="the prediction's dataset (default vol0)")
    for name, kind, text in OPTION_FLAGS:
        default = getattr(DEFAULTS, name)
        extra = {"nargs": "+", "default": default} if name == "resolution" else {"default": default}
        parser.add_argument(f"--{name.replace('_', '-')}", type=kind, help=f"{text} (default {default})", **extra)
    parser.add_argument(
        "--max-memory",
        type=float,
        default=None,
        help="GiB a block (the local workers' blocks together) may use; default: what the machine has "
        "available. Blocks that would need more are refused.",
    )
    parser.add_argument(
        "--block-size",
        type=int,
        nargs=3,
        metavar=("Z", "Y", "X"),
        help="decode in blocks of this many voxels; default: 64 256 256 for a zarr output; for HDF5, z slabs of "
        "--slab-planes (binary) or the whole volume",
    )
    parser.add_argument("--workers", type=int, default=1, help="zarr output: daisy workers pulling blocks (default 1)")
    parser.add_argument(
        "--worker-command",
        help="zarr output: a command that starts each worker elsewhere, e.g. 'srun -p cpu -c 2' or 'bsub -I'; "
        "default: on this machine",
    )
    parser.add_argument("--debug", action="store_true", help="print the full traceback of an error")
    return parser


def options_from(args: argparse.Namespace) -> SegmentOptions:
    """The :class:`SegmentOptions` the flags describe."""
    values = {name: getattr(args, name) for name, _, _ in OPTION_FLAGS if name != "resolution"}
    return SegmentOptions(resolution=resolution_tuple(args.resolution), **values)


def decode(args: argparse.Namespace) -> int:
    """Decode as the flags say: blockwise on daisy into a zarr array, or in this process into HDF5."""
    options = options_from(args)
    options.check()
    look_up_option(argument("mode"), args.mode, DECODERS)
    if split_container(args.output) is not None and not is_blockwise_output(args.output):
        raise ConfigError(
            f"{argument('output')} {args.output!r} is not an array in a zarr container; name one, e.g. seg.zarr/labels "
            "(labels are written as HDF5 or zarr)."
        )
    if is_blockwise_output(args.output):
        return segment_blockwise(
            args.prediction,
            args.output,
            args.mode,
            options,
            args.dataset,
            args.block_size,
            args.workers,
            worker_command=args.worker_command,
            max_memory_gib=args.max_memory,
        )
    if args.workers != 1 or args.worker_command:
        raise ConfigError(
            f"{argument('workers')} and {argument('worker_command')} need a zarr output (seg.zarr/labels); "
            f"{argument('output')} {args.output!r} is decoded in this process."
        )
    return segment_file(
        args.prediction, args.output, args.mode, options, args.dataset, args.max_memory, args.block_size
    )


def run(argv: List[str]) -> int:
    """Parse ``argv``, decode, print one line; errors propagate, naming flags."""
    args = build_parser().parse_args(argv)
    with argument_names(FLAGS):
        count = decode(args)
    print(f"Wrote {args.output}: {count} objects ({args.mode}).")
    return count


def main(argv: Optional[List[str]] = None) -> None:
    """Entry point; a mistake is printed as one line, exit code 2 (``--debug`` adds the traceback)."""
    run_reporting_errors(run, argv, FLAGS)
