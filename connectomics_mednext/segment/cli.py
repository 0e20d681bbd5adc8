"""``connectomics-mednext-segment`` / ``python -m connectomics_mednext.segment``: prediction -> instance labels."""

import argparse
from typing import List, Optional

from ..errors import argument_names, run_reporting_errors
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
        "boundary: distance to the nearest boundary, in the units of --resolution, from which a voxel seeds",
    ),
    (
        "resolution",
        float,
        "voxel size (z y x, or one value), e.g. 30 6 6 nm for SNEMI; the distance transform of boundary uses it",
    ),
    ("merge_threshold", float, "affinity: waterz merges regions while 1 - mean affinity is below this"),
    ("affinity_low", float, "affinity: edges below never join fragments"),
    ("affinity_high", float, "affinity: edges above always join fragments"),
]


# segment_file's and SegmentOptions' argument names -> this command's flags.
FLAGS = {
    name: f"--{name.replace('_', '-')}"
    for name in ["prediction", "output", "mode", "dataset", "max_memory"] + [name for name, _, _ in OPTION_FLAGS]
}


def build_parser() -> argparse.ArgumentParser:
    """The flags, each with its default and the modes that read it."""
    parser = argparse.ArgumentParser(
        prog="connectomics-mednext-segment",
        description="Decode a prediction in PyTC's layout (HDF5 or zarr 'vol0', (C, Z, Y, X) uint8, probability x 255) "
        "into instance labels (HDF5 'main', uint32 or uint64, background 0). Probabilities are in 0..1.",
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
    parser.add_argument("--output", required=True, help="the label HDF5 to write (dataset 'main')")
    parser.add_argument("--dataset", default="vol0", help="the prediction's dataset (default vol0)")
    for name, kind, text in OPTION_FLAGS:
        default = getattr(DEFAULTS, name)
        extra = {"nargs": "+", "default": list(default)} if name == "resolution" else {"default": default}
        parser.add_argument(f"--{name.replace('_', '-')}", type=kind, help=f"{text} (default {default})", **extra)
    parser.add_argument(
        "--max-memory",
        type=float,
        default=None,
        help="GiB the whole-volume modes (bc, boundary, affinity) may use; default: what the "
        "machine has available. A volume that would need more is refused.",
    )
    parser.add_argument("--debug", action="store_true", help="print the full traceback of an error")
    return parser


def options_from(args: argparse.Namespace) -> SegmentOptions:
    """The :class:`SegmentOptions` the flags describe."""
    values = {name: getattr(args, name) for name, _, _ in OPTION_FLAGS if name != "resolution"}
    return SegmentOptions(resolution=resolution_tuple(args.resolution), **values)


def run(argv: List[str]) -> int:
    """Parse ``argv``, decode, print one line; errors propagate, naming flags."""
    args = build_parser().parse_args(argv)
    with argument_names(FLAGS):
        count = segment_file(args.prediction, args.output, args.mode, options_from(args), args.dataset, args.max_memory)
    print(f"Wrote {args.output}: {count} objects ({args.mode}).")
    return count


def main(argv: Optional[List[str]] = None) -> None:
    """Entry point; a mistake is printed as one line, exit code 2 (``--debug`` adds the traceback)."""
    run_reporting_errors(run, argv, FLAGS)
