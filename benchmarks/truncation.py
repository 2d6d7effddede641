"""The truncation trick's trade-off on one run: quality and diversity at a few values of psi.

For each psi, n samples are drawn from the same seed (so only the noise's scale differs), truncated
as `gancli sample --truncation PSI` does (gancli.latent.truncate), and judged by the recipe
classifier as `gancli score` judges a run: mode coverage (the smallest and largest class share),
InfoGAN's code accuracy, and the Fréchet distance in the classifier's features; with `--fid`,
also Inception's FID against the training split (slow on a CPU: use a smaller `--fid-n` and
`--ref-n`; the reference's features are cached, so only the first psi pays for them).

    python benchmarks/truncation.py RUN [--psi 0.3 0.5 0.7 1.0] [--n 10000]
        [--fid --fid-n 2000 --ref-n 10000 --precision fp32]
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("run")
    ap.add_argument("--psi", type=float, nargs="+", default=[0.3, 0.5, 0.7, 1.0])
    ap.add_argument("--n", type=int, default=10000)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--fid", action="store_true", help="also Inception FID (train split)")
    ap.add_argument("--fid-n", type=int, default=2000)
    ap.add_argument("--ref-n", type=int, default=None,
                    help="reference images of the training split (default: gancli fid's)")
    ap.add_argument("--precision", default="fp32", choices=("fp32", "bf16", "auto"),
                    help="Inception's precision (compare FIDs at one precision only)")
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--json", type=Path, default=None)
    a = ap.parse_args()

    import torch

    from gancli.checkpoint import load_generator
    from gancli.generate import generate
    from gancli.latent import check_truncation, truncate
    from gancli.score import score_generator

    g = load_generator(a.run, device=a.device)
    rows = []
    for psi in a.psi:
        check_truncation(psi)
        t0 = time.time()
        latents = truncate(g.spec.sample(a.n, torch.Generator().manual_seed(a.seed)), psi)
        images = generate(g.generator, latents, a.device)
        s = score_generator(g, a.n, a.seed, a.device, images=images)
        row = {"psi": psi, "n": a.n, "min_share": s["min_share"], "max_share": s["max_share"],
               "classes_under_5pct": s["classes_under_5pct"],
               "classifier_fd": s["classifier_fd"], "code_accuracy": s.get("code_accuracy"),
               "label_agreement": s.get("label_agreement")}
        if a.fid:
            from gancli.metrics import TensorImages, compute_metrics, recipe_reference

            m = compute_metrics(TensorImages(images[: a.fid_n]),
                                recipe_reference(g.config.data, "train", a.ref_n), ["fid"],
                                device=a.device, seed=a.seed, precision=a.precision)
            row["fid"], row["fid_n"] = round(m["fid"], 2), min(a.fid_n, a.n)
            row["ref_n"], row["precision"] = a.ref_n, m.get("precision", a.precision)
        row["seconds"] = round(time.time() - t0, 1)
        rows.append(row)
        print(json.dumps(row), flush=True)
    if a.json:
        a.json.write_text(json.dumps({"run": a.run, "step": g.step, "rows": rows}, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
