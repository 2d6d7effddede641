"""FID and KID between two real image sets, the floor a generator's FID is read against.

    python benchmarks/fid_datasets.py mnist [--n 10000] [--precision fp32]
    python benchmarks/fid_datasets.py emoji [--precision fp32]

- mnist: a seeded subset of n training images against n test images (MNIST from
  ../shared/data/MNIST/raw or $GANCLI_MNIST_DIR), grey repeated to RGB, 28 px resized to 299;
- emoji: the Twitter emoji's training split against the Google emoji's (the same emoji drawn by
  two vendors, white background, 64 px), from ../shared/data/emoji or $GANCLI_EMOJI_DIR.

The second set's features are cached like any reference (`gancli fid` reuses them).
"""

from __future__ import annotations

import argparse
import os
import time
from pathlib import Path

SHARED = Path(__file__).resolve().parents[2] / "shared" / "data"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("which", choices=("mnist", "emoji"))
    ap.add_argument("--n", type=int, default=10000)
    ap.add_argument("--precision", default="fp32", choices=("fp32", "bf16"))
    ap.add_argument("--batch-size", type=int, default=64)
    args = ap.parse_args()

    from gancli import metrics as M
    from gancli.data import open_dataset
    from gancli.recipes import DataConfig

    if args.which == "mnist":
        path = os.environ.get("GANCLI_MNIST_DIR") or str(SHARED / "MNIST" / "raw")
        cfg = DataConfig(source="mnist", image_size=28, channels=1, num_classes=10, path=path)
        second = M.recipe_reference(cfg, "test", n=args.n)
        what = f"MNIST train ({args.n:,}, seeded subset) against MNIST test ({args.n:,})"
    else:
        path = os.environ.get("GANCLI_EMOJI_DIR") or str(SHARED / "emoji")
        tw = DataConfig(source="emoji", image_size=64, channels=3, num_classes=9, path=path,
                        vendor="twitter")
        go = DataConfig(source="emoji", image_size=64, channels=3, num_classes=9, path=path,
                        vendor="google")
        second = M.recipe_reference(go, "train")
        what = "Twitter emoji (train split) against Google emoji (train split)"
    images = M.TensorImages(open_dataset(
        cfg if args.which == "mnist" else tw, "train").images)
    if args.which == "mnist":
        idx = M.references._subset(len(images), args.n)
        images = M.TensorImages(images.images[idx] if idx is not None else images.images)
    t = time.perf_counter()
    res = M.compute_metrics(images, second, ["fid", "kid"], precision=args.precision,
                            batch_size=args.batch_size)
    print(f"{what}, {args.precision}: FID {res['fid']:.3f}, KID {res['kid']:.5f} ± "
          f"{res['kid_std']:.5f} ({time.perf_counter() - t:.0f} s; {len(images):,} + "
          f"{len(second.dataset):,} images)")


if __name__ == "__main__":
    main()
