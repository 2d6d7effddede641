"""InfoGAN's Q as an unsupervised digit classifier: c1 on the 10,000 MNIST test digits.

For each run, Q (on the checkpoint's discriminator, as `gancli encode` reads it) gives c1's most
probable value for every test digit; the values are matched one to one to the digits (Hungarian,
as `gancli score` does for generated images) and the matched accuracy is reported, with the
error beside the InfoGAN paper's (about 5%, Chen et al. 2016, section 5.1).

    python benchmarks/encode_mnist.py RUN [RUN ...] [--data DIR] [--step N] [--json OUT]

The test digits are read with gancli's own loader (`mnist`, local IDX files), at the run's size.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import sys
import time
from pathlib import Path

DEFAULT_DATA = Path(__file__).resolve().parents[2] / "shared" / "data" / "MNIST" / "raw"
PAPER_ERROR = 0.05   # InfoGAN paper: "5% error rate" for c1 against the digit labels


def measure(run: str, data: Path, step: int | None = None, device: str = "cpu") -> dict:
    import torch

    from gancli.checkpoint import load_discriminator, load_generator
    from gancli.data import load_images
    from gancli.encode import check_infogan, encode_images
    from gancli.matching import confusion, hungarian_accuracy, purity

    t0 = time.time()
    g = load_generator(run, step=step, device=device)
    check_infogan(g.config.model, "encode_mnist")
    D = load_discriminator(g, device)
    cfg = dataclasses.replace(g.config.data, source="mnist", path=str(data), limit=None,
                              num_classes=10)
    test = load_images(cfg, "test")
    reading = encode_images(D, g.spec, test.images, device)
    cat = next(c for c in g.spec.codes if c.categorical)
    codes = reading[cat.name].argmax(1)
    table = confusion(codes, test.labels, cat.size, 10)
    acc, mapping = hungarian_accuracy(table)
    pure, _ = purity(table)
    used = torch.bincount(codes, minlength=cat.size)
    return {"run": str(run), "step": g.step, "code": cat.name, "n": int(len(codes)),
            "hungarian_accuracy": round(acc, 4), "error": round(1 - acc, 4),
            "purity": round(pure, 4), "mapping": {str(k): v for k, v in sorted(mapping.items())},
            "values_used": used.tolist(), "seconds": round(time.time() - t0, 1)}


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("runs", nargs="+", help="InfoGAN run directories (or step directories)")
    ap.add_argument("--data", type=Path, default=DEFAULT_DATA, help="MNIST IDX files")
    ap.add_argument("--step", type=int, default=None, help="a checkpoint step (default: latest)")
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--json", type=Path, default=None, help="also write the figures here")
    a = ap.parse_args()
    results = []
    for run in a.runs:
        r = measure(run, a.data, a.step, a.device)
        results.append(r)
        print(f"{r['run']} step {r['step']}: {r['code']} Hungarian accuracy "
              f"{r['hungarian_accuracy']:.4f} (error {100 * r['error']:.1f}%, paper "
              f"~{100 * PAPER_ERROR:.0f}%), purity {r['purity']:.4f}, on {r['n']:,} test digits "
              f"({r['seconds']} s)")
    if len(results) > 1:
        accs = sorted(r["hungarian_accuracy"] for r in results)
        print(f"{len(results)} runs: accuracy {accs[0]:.4f}..{accs[-1]:.4f}, median "
              f"{accs[len(accs) // 2]:.4f}")
    if a.json:
        a.json.write_text(json.dumps(results, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
