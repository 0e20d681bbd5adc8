"""Look at a prediction: one z slice of image | prediction | target as a PNG with titled panels.

With ``--label`` it also prints the Dice of the thresholded prediction (first channel, >= 0.5)
against the target that ``--target-opt`` derives from the label, over the whole volume. With
``--segmentation`` (what connectomics-mednext-segment wrote) two more panels show the instances
as colours over the image, the segmentation and then the label's own instances, so splits and
merges can be seen side by side; the PNG is then in colour.

    connectomics-mednext-export-slice --image ../shared/data/fib25/image.h5 \\
        --prediction outputs/FIB25_MedNeXt/test/result.h5 \\
        --label ../shared/data/fib25/label.h5 --target-opt 4-1-1 --out fib25_z125.png
"""

import argparse
import os
from typing import List, Optional, Sequence, Tuple

import numpy as np

from .data.targets import make_target, target_foreground
from .errors import ConfigError, InputError, WriteError, argument, failure_reason, import_extra, run_reporting_errors
from .evaluate.voxel import overlap_scores
from .io import open_volume, read_whole, split_names
from .io.volumes import open_prediction

FLAGS = {name: f"--{name}" for name in ("image", "prediction", "label", "segmentation", "z", "out")}
OVERLAY_ALPHA = 0.5
# Rows above each panel for its title: the default bitmap font is 11 pixels high.
TITLE_HEIGHT = 14
PILLOW_NEEDED = "export_slice writes PNGs with Pillow: pip install pillow (the segment extra brings it)."


def instance_colours(labels: np.ndarray) -> np.ndarray:
    """A fixed, well-spread RGB colour per instance id (the same id always gets the same colour).

    Args:
        labels: instance ids, any shape.
    """
    ids = labels.astype(np.uint64)
    # Knuth's multiplicative hash spreads neighbouring ids over the colour cube.
    mixed = (ids * np.uint64(2654435761)) % np.uint64(2**24)
    rgb = np.stack([(mixed >> np.uint64(shift)) & np.uint64(255) for shift in (16, 8, 0)], axis=-1)
    return (64 + rgb.astype(np.float64) * 191 / 255).astype(np.uint8)  # never too dark to see


def overlay(gray: np.ndarray, labels: np.ndarray) -> np.ndarray:
    """The image in gray with each instance (label > 0) blended in its colour.

    Args:
        gray: a (height, width) uint8 image.
        labels: (height, width) instance ids; 0 stays gray.
    """
    rgb = np.repeat(gray[..., None].astype(np.float64), 3, axis=2)
    inside = labels > 0
    rgb[inside] = (1 - OVERLAY_ALPHA) * rgb[inside] + OVERLAY_ALPHA * instance_colours(labels[inside])
    return np.rint(rgb).astype(np.uint8)


def titled_row(panels: Sequence[np.ndarray], titles: Sequence[str]) -> np.ndarray:
    """The panels side by side, each under its title in white on a black band.

    Args:
        panels: (height, width) gray or (height, width, 3) RGB uint8 arrays of one height and kind.
        titles: one title per panel; a title wider than its panel is cut at the panel's edge.
    """
    image_module = import_extra("PIL.Image", PILLOW_NEEDED)
    draw_module = import_extra("PIL.ImageDraw", PILLOW_NEEDED)
    columns = []
    for panel, title in zip(panels, titles):
        # A band per panel, so that a long title is clipped at its own panel and never covers the next.
        band = image_module.new("L", (panel.shape[1], TITLE_HEIGHT), 0)
        draw_module.Draw(band).text((2, 1), title, fill=255)
        band = np.asarray(band)
        if panel.ndim == 3:
            band = np.repeat(band[..., None], 3, axis=2)
        columns.append(np.concatenate([band, panel], axis=0))
    return np.concatenate(columns, axis=1)


def write_png(path: str, pixels: np.ndarray) -> None:
    """Write a gray or RGB uint8 array as a PNG, whole or not at all.

    Args:
        path: the file.
        pixels: (height, width) or (height, width, 3) uint8.
    """
    image_module = import_extra("PIL.Image", PILLOW_NEEDED)
    temporary = f"{path}.tmp{os.getpid()}"
    try:
        image_module.fromarray(pixels).save(temporary, format="PNG")
        os.replace(temporary, path)
    except OSError as error:
        raise WriteError(f"{argument('out')} {path!r} could not be written ({failure_reason(error)}).") from error
    finally:
        if os.path.exists(temporary):
            os.remove(temporary)


def open_named(path: str, name: str):
    """The volume at ``path``, opened lazily; a missing file is named with argument ``name``.

    Args:
        path: any volume :func:`open_volume` reads.
        name: the argument that gave it, for messages.
    """
    (checked,) = split_names(path, "", argument(name))
    return open_volume(checked)


def export_slice(
    image: str,
    prediction: str,
    out: str,
    label: Optional[str] = None,
    segmentation: Optional[str] = None,
    z: Optional[int] = None,
    dataset: str = "vol0",
    target_opt: str = "0",
) -> Tuple[int, List[str]]:
    """Write one z slice of the volumes side by side as a PNG; return the slice and the panels' titles.

    Args:
        image: the input volume (any format :func:`open_volume` reads).
        prediction: either engine's prediction (HDF5 or zarr, PyTC's (C, Z, Y, X) uint8 layout).
        out: the PNG to write.
        label: a label volume; adds the target panel, and the label's instances with ``segmentation``.
        segmentation: instance labels (what connectomics-mednext-segment wrote).
        z: the slice; None is the middle one.
        dataset: the prediction's dataset or array.
        target_opt: the PyTC ``TARGET_OPT`` code that turns the label into the target.

    Raises:
        InputError: volumes whose shapes differ, or a slice outside the volume.
    """
    volume = open_named(image, "image")
    probabilities = open_prediction(prediction, dataset)
    if tuple(probabilities.shape[1:]) != tuple(volume.shape):
        raise InputError(
            f"{argument('prediction')} {prediction!r} has shape {tuple(probabilities.shape[1:])} (z, y, x) but "
            f"{argument('image')} {image!r} has {tuple(volume.shape)}; give the image it was predicted from."
        )
    z = volume.shape[0] // 2 if z is None else z
    if not 0 <= z < volume.shape[0]:
        raise ConfigError(
            f"{argument('z')} is {z}, but {image!r} has {volume.shape[0]} slices: give 0..{volume.shape[0] - 1}."
        )
    gray = np.asarray(volume[z : z + 1])[0].astype(np.uint8)
    first_channel = np.asarray(probabilities[0])
    panels = [gray, first_channel[z]]
    titles = ["image", "prediction"]
    if label:
        target = target_foreground(make_target(read_whole(open_named(label, "label")), target_opt))
        if target.shape != tuple(volume.shape):
            raise InputError(
                f"{argument('label')} {label!r} has shape {target.shape} but {argument('image')} {image!r} has "
                f"{tuple(volume.shape)}."
            )
        print(
            f"Dice {overlap_scores(first_channel >= 128, target)['dice']:.4f} (prediction >= 0.5 against target "
            f"{target_opt}; predicting it everywhere scores {2 * target.mean() / (1 + target.mean()):.4f})"
        )
        panels.append(target[z].astype(np.uint8) * 255)
        titles.append("target")
    if segmentation:
        instances = open_named(segmentation, "segmentation")
        if tuple(instances.shape) != tuple(volume.shape):
            raise InputError(
                f"{argument('segmentation')} {segmentation!r} has shape {tuple(instances.shape)} but "
                f"{argument('image')} {image!r} has {tuple(volume.shape)}."
            )
        panels = [np.repeat(p[..., None], 3, axis=2) for p in panels] + [overlay(gray, instances[z : z + 1][0])]
        titles.append("segmentation")
        if label:
            panels.append(overlay(gray, open_named(label, "label")[z : z + 1][0]))
            titles.append("label instances")
    write_png(out, titled_row(panels, titles))
    return z, titles


def run(argv: List[str]) -> None:
    """The command: parse ``argv``, write the PNG and say what it holds.

    Args:
        argv: the command-line arguments.
    """
    parser = argparse.ArgumentParser(
        prog="connectomics-mednext-export-slice",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--image", required=True, help="the input volume (HDF5, TIFF, zarr, ...)")
    parser.add_argument("--prediction", required=True, help="our or PyTC's prediction (HDF5 or .zarr)")
    parser.add_argument("--dataset", default="vol0", help="the prediction's dataset (vol0: the first input volume)")
    parser.add_argument("--label", help="label volume; adds the target panel and prints Dice")
    parser.add_argument("--target-opt", default="0", help="PyTC TARGET_OPT code that turns the label into a target")
    parser.add_argument(
        "--segmentation", help="instance labels (HDF5 'main'); adds colour overlays of them and of --label's instances"
    )
    parser.add_argument("--z", type=int, help="slice (default: the middle one)")
    parser.add_argument("--out", required=True, help="PNG file to write")
    parser.add_argument("--debug", action="store_true", help="print the full traceback of an error")
    args = parser.parse_args(argv)
    z, titles = export_slice(
        args.image, args.prediction, args.out, args.label, args.segmentation, args.z, args.dataset, args.target_opt
    )
    print(f"Wrote {args.out}: slice {z}, panels {' | '.join(titles)}.")


def main(argv: Optional[List[str]] = None) -> None:
    """``connectomics-mednext-export-slice``: mistakes are one line on stderr and exit code 2.

    Args:
        argv: the arguments; None reads ``sys.argv``.
    """
    run_reporting_errors(run, argv, FLAGS)
