"""``connectomics-mednext-segment`` / ``python -m connectomics_mednext.segment``: prediction -> instance labels."""
import argparse
from typing import List, Optional

from ..errors import run_reporting_errors
from .decoders import DECODERS, SegmentOptions, resolution_tuple
from .run import segment_file

DEFAULTS = SegmentOptions()


def build_parser() -> argparse.ArgumentParser:
    """The flags, each with its default and the modes that read it."""
    parser = argparse.ArgumentParser(
        description="Decode a prediction in PyTC's layout (HDF5 'vol0', (C, Z, Y, X) uint8, probability x 255) "
                    "into instance labels (HDF5 'main', uint32 or uint64, background 0). Probabilities are in 0..1.")
    parser.add_argument("--prediction", required=True, help="the prediction HDF5 written by either engine")
    parser.add_argument("--mode", required=True, metavar="MODE",
                        help=f"one of {sorted(DECODERS)}: binary (TARGET_OPT 0), bc (0 and 4), boundary (4), "
                             "affinity (2)")
    parser.add_argument("--output", required=True, help="the label HDF5 to write (dataset 'main')")
    parser.add_argument("--dataset", default="vol0", help="the prediction's dataset (default vol0)")
    parser.add_argument("--threshold", type=float, default=DEFAULTS.threshold,
                        help="binary: foreground probability; boundary: below it a voxel is not boundary "
                             f"(default {DEFAULTS.threshold})")
    parser.add_argument("--channel", type=int, default=DEFAULTS.channel,
                        help=f"binary, boundary: the channel to read (default {DEFAULTS.channel})")
    parser.add_argument("--connectivity", type=int, default=DEFAULTS.connectivity,
                        help=f"6, 18 or 26: of the components (binary) and the seeds (bc, boundary) "
                             f"(default {DEFAULTS.connectivity})")
    parser.add_argument("--min-size", type=int, default=DEFAULTS.min_size,
                        help=f"objects with fewer voxels become background (default {DEFAULTS.min_size})")
    parser.add_argument("--slab-planes", type=int, default=DEFAULTS.slab_planes,
                        help="binary: z planes labelled at a time, which bounds memory; 0 labels the whole volume "
                             f"at once (default {DEFAULTS.slab_planes})")
    parser.add_argument("--seed-threshold", type=float, default=DEFAULTS.seed_threshold,
                        help=f"bc: foreground probability above which a voxel may seed (default {DEFAULTS.seed_threshold})")
    parser.add_argument("--contour-threshold", type=float, default=DEFAULTS.contour_threshold,
                        help=f"bc: contour probability below which a voxel may seed (default {DEFAULTS.contour_threshold})")
    parser.add_argument("--foreground-threshold", type=float, default=DEFAULTS.foreground_threshold,
                        help="bc: foreground probability above which a voxel belongs to an object "
                             f"(default {DEFAULTS.foreground_threshold})")
    parser.add_argument("--seed-min-size", type=int, default=DEFAULTS.seed_min_size,
                        help=f"bc, boundary: seeds with fewer voxels are dropped (default {DEFAULTS.seed_min_size})")
    parser.add_argument("--seed-distance", type=float, default=DEFAULTS.seed_distance,
                        help="boundary: distance to the nearest boundary, in the units of --resolution, from which "
                             f"a voxel seeds (default {DEFAULTS.seed_distance})")
    parser.add_argument("--resolution", type=float, nargs="+", default=list(DEFAULTS.resolution),
                        help="voxel size (z y x, or one value), e.g. 30 6 6 nm for SNEMI; the distance transform "
                             "of boundary uses it (default 1 1 1)")
    parser.add_argument("--merge-threshold", type=float, default=DEFAULTS.merge_threshold,
                        help="affinity: waterz merges regions while 1 - mean affinity is below this "
                             f"(default {DEFAULTS.merge_threshold})")
    parser.add_argument("--affinity-low", type=float, default=DEFAULTS.affinity_low,
                        help=f"affinity: edges below never join fragments (default {DEFAULTS.affinity_low})")
    parser.add_argument("--affinity-high", type=float, default=DEFAULTS.affinity_high,
                        help=f"affinity: edges above always join fragments (default {DEFAULTS.affinity_high})")
    parser.add_argument("--max-memory", type=float, default=None,
                        help="GiB the whole-volume modes (bc, boundary, affinity) may use; default: what the "
                             "machine has available. A volume that would need more is refused.")
    parser.add_argument("--debug", action="store_true", help="print the full traceback of an error")
    return parser


def options_from(args: argparse.Namespace) -> SegmentOptions:
    """The :class:`SegmentOptions` the flags describe."""
    names = {field for field in SegmentOptions.__dataclass_fields__}
    values = {name: getattr(args, name) for name in names if name != "resolution"}
    return SegmentOptions(resolution=resolution_tuple(args.resolution), **values)


def run(argv: List[str]) -> int:
    """Parse ``argv``, decode, print one line; errors propagate."""
    args = build_parser().parse_args(argv)
    count = segment_file(args.prediction, args.output, args.mode, options_from(args), args.dataset, args.max_memory)
    print(f"Wrote {args.output}: {count} objects ({args.mode}).")
    return count


def main(argv: Optional[List[str]] = None) -> None:
    """Entry point; a mistake is printed as one line, exit code 2 (``--debug`` adds the traceback)."""
    run_reporting_errors(run, argv)
