"""Look at a prediction: one z slice of image | prediction | target as a grayscale PNG.

With ``--label`` it also prints the Dice of the thresholded prediction (first channel, >= 0.5)
against the target that ``--target-opt`` derives from the label, over the whole volume.

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
from connectomics_mednext.data.volumes import open_volume, read_whole
from connectomics_mednext.engine.trainer import dice_iou


def png_bytes(gray: np.ndarray) -> bytes:
    """An 8-bit grayscale PNG of a (height, width) uint8 array (written with the standard library only)."""

    def chunk(tag: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + tag + data + struct.pack(">I", zlib.crc32(tag + data) & 0xFFFFFFFF)

    height, width = gray.shape
    rows = b"".join(b"\x00" + row.tobytes() for row in np.ascontiguousarray(gray, dtype=np.uint8))
    header = struct.pack(">IIBBBBB", width, height, 8, 0, 0, 0, 0)
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IDAT", zlib.compress(rows, 6)) + chunk(b"IEND", b"")


def main(argv: Optional[List[str]] = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--image", required=True, help="the input volume (HDF5 or TIFF)")
    parser.add_argument("--prediction", required=True, help="our or PyTC's result HDF5")
    parser.add_argument("--dataset", default="vol0", help="prediction dataset")
    parser.add_argument("--label", help="label volume; adds the target panel and prints Dice")
    parser.add_argument("--target-opt", default="0", help="PyTC TARGET_OPT code that turns the label into a target")
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
    panels = [image[z:z + 1, :, :][0], prediction[z]]
    if args.label:
        target = target_foreground(make_target(read_whole(open_volume(args.label)), args.target_opt))
        print(f"Dice {dice_iou(prediction >= 128, target)['dice']:.4f} (prediction >= 0.5 against target "
              f"{args.target_opt}; predicting it everywhere scores {2 * target.mean() / (1 + target.mean()):.4f})")
        panels.append(target[z].astype(np.uint8) * 255)
    with open(args.out, "wb") as f:
        f.write(png_bytes(np.concatenate([p.astype(np.uint8) for p in panels], axis=1)))
    print(f"Wrote {args.out}: slice {z}, panels image | prediction{' | target' if args.label else ''}.")


if __name__ == "__main__":
    main()
