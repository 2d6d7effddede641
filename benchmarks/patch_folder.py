"""Cut a folder of colour image patches from a few large photos, for trying DCGAN on colour data
where no colour data set can be downloaded (this project's build machines reach only package
registries).

Usage: python benchmarks/patch_folder.py SRC_DIR OUT_DIR [--per-image 200] [--size 64]

SRC_DIR is searched for *.jpg/*.png/*.webp; the largest file under each immediate subfolder (or
each file, for a flat folder) is one source photo and becomes one class subfolder of OUT_DIR, so
`gancli train dcgan --recipe imagefolder --data OUT_DIR` sees labels too. Each patch is a random
square window (1/8 to 1/3 of the short side) resized to --size. Seeded: the same inputs give the
same folder. On Debian, KDE's wallpapers are real photos that ship through apt:
    apt-get download plasma-workspace-wallpapers && dpkg-deb -x plasma-*.deb x
    python benchmarks/patch_folder.py x/usr/share/wallpapers patches64
"""

from __future__ import annotations

import argparse
import random
from pathlib import Path

from PIL import Image

EXTS = {".jpg", ".jpeg", ".png", ".webp"}


def sources(src: Path) -> dict[str, Path]:
    found: dict[str, Path] = {}
    for sub in sorted(p for p in src.iterdir()):
        files = [sub] if sub.is_file() else [f for f in sub.rglob("*") if f.is_file()]
        files = [f for f in files if f.suffix.lower() in EXTS and "screenshot" not in f.name]
        if files:
            found[sub.stem] = max(files, key=lambda f: f.stat().st_size)
    return found


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("src")
    ap.add_argument("out")
    ap.add_argument("--per-image", type=int, default=200)
    ap.add_argument("--size", type=int, default=64)
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args()
    rng = random.Random(args.seed)
    out = Path(args.out)
    total = 0
    for name, path in sources(Path(args.src)).items():
        img = Image.open(path).convert("RGB")
        img.thumbnail((1280, 1280))          # photos of 5K pixels: patches then hold shapes, not grain
        w, h = img.size
        short = min(w, h)
        (out / name).mkdir(parents=True, exist_ok=True)
        for i in range(args.per_image):
            side = rng.randint(short // 8, short // 3)
            x, y = rng.randint(0, w - side), rng.randint(0, h - side)
            patch = img.crop((x, y, x + side, y + side)).resize((args.size, args.size),
                                                                Image.LANCZOS)
            patch.save(out / name / f"{i:04d}.png")
        total += args.per_image
        print(f"{name}: {path.name} {w}x{h}")
    print(f"wrote {total} patches to {out}")


if __name__ == "__main__":
    main()
