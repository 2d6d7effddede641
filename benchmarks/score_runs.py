"""Score every checkpoint of one or more runs with the recipe classifier (any family).

Usage: python benchmarks/score_runs.py RUN [RUN ...] [--n 10000] [--seed 0] [--last]

One line per checkpoint step: the epoch, the family's key figure (InfoGAN: c1 accuracy after
Hungarian matching; cGAN: label agreement; others: the classifier's Fréchet distance), and mode
coverage (the smallest and largest share of samples per predicted class, and how many classes
fall under 5%). It answers the quality bars of issues 2 and 3: InfoGAN c1 >= 95% within 5 epochs,
cGAN agreement >= 97% within 10 epochs, GAN/DCGAN no class under 5% of 10,000 samples.
The classifier is trained once per recipe and cached (GANCLI_CACHE); its test accuracy is printed.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import torch

from gancli.checkpoint import load_generator, step_dirs
from gancli.classifier import load_or_train
from gancli.score import score_generator


def epochs_per_step(run: Path) -> float | None:
    """Epochs per step, from the run's metrics.jsonl (the loop logs both); None if unknown."""
    log = run / "metrics.jsonl"
    if log.is_file():
        for line in reversed(log.read_text().splitlines()):
            rec = json.loads(line)
            if rec.get("step") and "epoch" in rec:
                return float(rec["epoch"]) / int(rec["step"])
    return None


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("runs", nargs="+")
    ap.add_argument("--n", type=int, default=10000)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--no-ema", action="store_true", help="score the raw generator, not the EMA")
    ap.add_argument("--last", action="store_true", help="only the latest checkpoint of each run")
    args = ap.parse_args()
    classifiers: dict[str, tuple] = {}
    for run in args.runs:
        steps = [s for s, _ in step_dirs(Path(run))]
        for step in steps[-1:] if args.last else steps:
            g = load_generator(run, ema=not args.no_ema, step=step)
            data = g.config.data
            key = repr(data)
            if key not in classifiers:
                classifiers[key] = load_or_train(data, "cpu")
                print(f"classifier for {data.source}: test accuracy "
                      f"{classifiers[key][1]['accuracy']:.4f}")
            clf, info = classifiers[key]
            res = score_generator(g, args.n, args.seed, "cpu", clf, classifier_info=info)
            per_step = epochs_per_step(Path(run))
            epoch = f"(epoch {g.step * per_step:.2f})" if per_step else ""
            key_name = res["key_metric"]
            print(f"{run} {g.config.model}{' (EMA)' if g.ema else ''} step {g.step} {epoch}: {key_name} "
                  f"{res[key_name]:.4f}  min share {res['min_share']:.4f}  "
                  f"max share {res['max_share']:.4f}  classes under 5% "
                  f"{res['classes_under_5pct']}", flush=True)


if __name__ == "__main__":
    main()
