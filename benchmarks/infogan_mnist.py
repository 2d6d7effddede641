"""InfoGAN's quality bar on real MNIST: used as a classifier after matching its 10 values to the
10 digits (Hungarian), c1 must label generated digits correctly >= 95% of the time.

Usage: python benchmarks/infogan_mnist.py RUN [RUN ...] [--n 5000] [--mnist DIR] [--all-steps]

For each run (and each checkpoint step with --all-steps) it draws N samples with random c1,
labels them with gancli's MNIST classifier (trained once and cached; its test accuracy is printed)
and prints the matched accuracy, the purity and the code -> digit table.
"""

from __future__ import annotations

import argparse
from pathlib import Path

import torch

from gancli.checkpoint import load_generator, step_dirs
from gancli.classifier import load_or_train, predict
from gancli.generate import generate
from gancli.matching import confusion, hungarian_accuracy, purity
from gancli.recipes import DataConfig

DEFAULT_MNIST = Path(__file__).resolve().parents[2] / "shared" / "data" / "MNIST" / "raw"


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("runs", nargs="+")
    ap.add_argument("--n", type=int, default=5000)
    ap.add_argument("--seed", type=int, default=1234)
    ap.add_argument("--mnist", default=str(DEFAULT_MNIST))
    ap.add_argument("--all-steps", action="store_true")
    args = ap.parse_args()
    torch.set_num_threads(max(1, torch.get_num_threads()))
    clf, info = load_or_train(DataConfig(source="mnist", image_size=28, channels=1, num_classes=10,
                                         path=args.mnist))
    print(f"classifier: MNIST test accuracy {info['accuracy']:.4f} ({info['path']})")
    for run in args.runs:
        steps = [s for s, _ in step_dirs(Path(run))] if args.all_steps else [None]
        for step in steps:
            g = load_generator(run, ema=True, step=step)
            lat = g.spec.sample(args.n, torch.Generator().manual_seed(args.seed))
            imgs = generate(g.generator, lat)
            pred = predict(clf, imgs)
            conf = confusion(lat["c1"], pred, 10, 10)
            acc, mapping = hungarian_accuracy(conf)
            pur, _ = purity(conf)
            epoch = g.step / (60000 // g.config.train.batch_size)
            print(f"{run} step {g.step} (epoch {epoch:.2f}): c1 accuracy {acc:.4f}  "
                  f"purity {pur:.4f}  c1->digit {mapping}")


if __name__ == "__main__":
    main()
