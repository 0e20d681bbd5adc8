"""``connectomics-mednext-evaluate`` / ``python -m connectomics_mednext.evaluate``: labels vs predictions -> scores."""

import argparse
import os
from typing import Dict, List, Optional

from ..errors import InputError, argument_names, run_reporting_errors
from .run import evaluate, format_table, write_json

# evaluate()'s argument names -> this command's flags.
FLAGS = {
    name: f"--{name.replace('_', '-')}"
    for name in ("label", "segmentation", "prediction", "mask", "dataset", "channel", "threshold", "target_opt")
}


def build_parser() -> argparse.ArgumentParser:
    """The flags."""
    parser = argparse.ArgumentParser(
        prog="connectomics-mednext-evaluate",
        description="Score a segmentation (instance and neuron metrics) and/or a probability map (voxel metrics) "
        "against a label volume; print a table and optionally write flat JSON.",
    )
    parser.add_argument(
        "--label",
        required=True,
        help="ground-truth labels (HDF5 'main' or the only dataset, TIFF, or <name>.zarr/<array>)",
    )
    parser.add_argument("--segmentation", help="instance labels to score, e.g. what connectomics-mednext-segment wrote")
    parser.add_argument(
        "--prediction", help="a probability map in PyTC's layout (HDF5 or .zarr 'vol0', (C, Z, Y, X) uint8)"
    )
    parser.add_argument("--mask", help="voxels where this volume is 0 are ignored by every metric")
    parser.add_argument("--json", help="write the metrics here as flat JSON")
    parser.add_argument("--dataset", default="vol0", help="the prediction's dataset (default vol0)")
    parser.add_argument("--channel", type=int, default=0, help="the prediction's channel (default 0)")
    parser.add_argument(
        "--threshold",
        type=float,
        default=0.5,
        help="probability threshold of iou and dice (default 0.5); best_threshold sweeps 0.05..0.95",
    )
    parser.add_argument(
        "--target-opt",
        default="0",
        help="PyTC TARGET_OPT code turning the label into the voxel target: 0 is label > 0, 4 the "
        "instance boundaries (default 0)",
    )
    parser.add_argument("--debug", action="store_true", help="print the full traceback of an error")
    return parser


def run(argv: List[str]) -> Dict[str, float]:
    """Parse ``argv``, score, print the table (and write JSON); errors propagate."""
    args = build_parser().parse_args(argv)
    if args.json and not os.path.isdir(os.path.dirname(os.path.abspath(args.json))):
        raise InputError(f"--json {args.json!r}: its folder does not exist.")
    if args.json and os.path.isdir(args.json):
        raise InputError(f"--json {args.json!r} is a folder; give the name of the JSON file to write.")
    with argument_names(FLAGS):
        results = evaluate(
            args.label,
            args.segmentation,
            args.prediction,
            args.mask,
            args.dataset,
            args.channel,
            args.threshold,
            args.target_opt,
        )
    print(format_table(results))
    if args.json:
        write_json(results, args.json)
        print(f"Wrote {args.json}")
    return results


def main(argv: Optional[List[str]] = None) -> None:
    """Entry point; a mistake is printed as one line, exit code 2 (``--debug`` adds the traceback)."""
    run_reporting_errors(run, argv, FLAGS)
