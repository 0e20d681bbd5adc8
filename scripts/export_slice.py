"""Look at a prediction: one z slice of image | prediction | target as a PNG.

With ``--label`` it also prints the Dice of the thresholded prediction (first channel, >= 0.5)
against the target that ``--target-opt`` derives from the label, over the whole volume. With
``--segmentation`` (what connectomics-mednext-segment wrote) two more panels show the instances
as colours over the image, the segmentation and then the label's own instances, so splits and
merges can be seen side by side; the PNG is then in colour.

    python scripts/export_slice.py --image ../shared/data/fib25/image.h5 \
        --prediction outputs/FIB25_MedNeXt/test/result.h5 \
        --label ../shared/data/fib25/label.h5 --target-opt 4-1-1 --out fib25_z125.png
"""

import argparse
import struct
import zlib
from typing import List, Optional

import h5py
import numpy as np

from connectomics_mednext.data.targets import make_target, target_foreground
from connectomics_mednext.evaluate.voxel import overlap_scores
from connectomics_mednext.io import open_volume, read_whole

# PNG colour types by channels: grayscale, RGB.
PNG_COLOUR_TYPES = {1: 0, 3: 2}
OVERLAY_ALPHA = 0.5


def png_bytes(pixels: np.ndarray) -> bytes:
    """An 8-bit PNG of a (height, width) grayscale or (height, width, 3) RGB uint8 array (standard library only)."""

    def chunk(tag: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + tag + data + struct.pack(">I", zlib.crc32(tag + data) & 0xFFFFFFFF)

    pixels = np.ascontiguousarray(pixels, dtype=np.uint8)
    height, width = pixels.shape[:2]
    channels = 1 if pixels.ndim == 2 else pixels.shape[2]
    rows = b"".join(b"\x00" + row.tobytes() for row in pixels)
    header = struct.pack(">IIBBBBB", width, height, 8, PNG_COLOUR_TYPES[channels], 0, 0, 0)
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IDAT", zlib.compress(rows, 6)) + chunk(b"IEND", b"")


def instance_colours(labels: np.ndarray) -> np.ndarray:
    """A fixed, well-spread RGB colour per instance id (the same id always gets the same colour)."""
    ids = labels.astype(np.uint64)
    # Knuth's multiplicative hash spreads neighbouring ids over the colour cube.
    mixed = (ids * np.uint64(2654435761)) % np.uint64(2**24)
    rgb = np.stack([(mixed >> np.uint64(shift)) & np.uint64(255) for shift in (16, 8, 0)], axis=-1)
    return (64 + rgb.astype(np.float64) * 191 / 255).astype(np.uint8)  # never too dark to see


def overlay(gray: np.ndarray, labels: np.ndarray) -> np.ndarray:
    """The image in gray with each instance (label > 0) blended in its colour."""
    rgb = np.repeat(gray[..., None].astype(np.float64), 3, axis=2)
    inside = labels > 0
    rgb[inside] = (1 - OVERLAY_ALPHA) * rgb[inside] + OVERLAY_ALPHA * instance_colours(labels[inside])
    return np.rint(rgb).astype(np.uint8)


def main(argv: Optional[List[str]] = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--image", required=True, help="the input volume (HDF5 or TIFF)")
    parser.add_argument("--prediction", required=True, help="our or PyTC's result HDF5")
    parser.add_argument("--dataset", default="vol0", help="prediction dataset")
    parser.add_argument("--label", help="label volume; adds the target panel and prints Dice")
    parser.add_argument("--target-opt", default="0", help="PyTC TARGET_OPT code that turns the label into a target")
    parser.add_argument(
        "--segmentation", help="instance labels (HDF5 'main'); adds colour overlays of them and of --label's instances"
    )
    parser.add_argument("--z", type=int, help="slice (default: the middle one)")
    parser.add_argument("--out", required=True, help="PNG file to write")
    args = parser.parse_args(argv)

    image = open_volume(args.image)
    with h5py.File(args.prediction, "r") as f:
        if args.dataset not in f:
            raise SystemExit(f"{args.prediction!r} has no dataset {args.dataset!r}; it holds {list(f)}.")
        prediction = f[args.dataset][0]
    if prediction.shape != image.shape:
        raise SystemExit(f"The prediction has shape {prediction.shape} but the image {image.shape}.")
    z = image.shape[0] // 2 if args.z is None else args.z
    if not 0 <= z < image.shape[0]:
        raise SystemExit(f"--z {z} is outside the volume's {image.shape[0]} slices.")
    panels = [image[z : z + 1, :, :][0], prediction[z]]
    if args.label:
        target = target_foreground(make_target(read_whole(open_volume(args.label)), args.target_opt))
        print(
            f"Dice {overlap_scores(prediction >= 128, target)['dice']:.4f} (prediction >= 0.5 against target "
            f"{args.target_opt}; predicting it everywhere scores {2 * target.mean() / (1 + target.mean()):.4f})"
        )
        panels.append(target[z].astype(np.uint8) * 255)
    names = ["image", "prediction"] + (["target"] if args.label else [])
    panels = [p.astype(np.uint8) for p in panels]
    if args.segmentation:
        segmentation = open_volume(args.segmentation)
        if segmentation.shape != image.shape:
            raise SystemExit(f"The segmentation has shape {segmentation.shape} but the image {image.shape}.")
        panels = [np.repeat(p[..., None], 3, axis=2) for p in panels] + [overlay(panels[0], segmentation[z : z + 1][0])]
        names.append("segmentation")
        if args.label:
            panels.append(overlay(panels[0][..., 0], open_volume(args.label)[z : z + 1][0]))
            names.append("label instances")
    with open(args.out, "wb") as f:
        f.write(png_bytes(np.concatenate(panels, axis=1)))
    print(f"Wrote {args.out}: slice {z}, panels {' | '.join(names)}.")


if __name__ == "__main__":
    main()
