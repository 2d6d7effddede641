"""Evaluation while training: every `eval_every` steps, score (default) or FID on
`eval_samples` samples, a line in metrics.jsonl, and `checkpoints/best/` kept by the key figure.

Key figures (see gancli.score): score -> code_accuracy (InfoGAN) or label_agreement (cGAN),
higher is better, else classifier_fd, lower is better; fid -> fid, lower is better. The FID
reference is a seeded subset of the training split of the same size as the generated set
(`eval_samples`): figures compare steps of one run, not published FIDs.

Under several processes every process generates its share of the images (gancli.generate.
generate_shared: the same latents, so the figure is the one-process figure), the main process
scores them and writes; every process then meets at a barrier, so ranks resume together.
"""

from __future__ import annotations

import json
import math
import os
import time
from pathlib import Path
from typing import Any, Callable

import torch
from torch import nn

from gancli.checkpoint import LoadedGenerator
from gancli.errors import GancliError
from gancli.files import append_jsonl
from gancli.recipes import Config

Printer = Callable[[str], None]


class Evaluator:
    """The callable the training loop runs: evaluator(step=, generator=, checkpoint=,
    accelerator=, run_dir=)."""

    def __init__(self, cfg: Config, print_fn: Printer = print) -> None:
        from gancli import metrics
        from gancli.models import get_family
        from gancli.score import check_labelled, key_metric

        self.cfg, self.say = cfg, print_fn
        self.metric = cfg.train.eval_metric
        self.n = cfg.train.eval_samples
        self.spec = get_family(cfg.model).latent_spec(cfg)
        self.classifier: Any = None
        self.classifier_info: dict[str, Any] = {}
        self.best: float | None = None
        self._resumed = False
        if self.metric == "score":
            check_labelled(cfg.data, "--eval-metric score")
            self.key, self.higher = key_metric(self.spec, cfg.data.num_classes)
        elif self.metric == "fid":
            self.key, self.higher = "fid", False
            if self.n < 2:
                raise GancliError("--eval-metric fid needs eval_samples >= 2")
            # Fail before training, not at the first evaluation hours later.
            if not os.environ.get(metrics.ENV_EXTRACTOR):
                metrics.inception_weights()
        else:
            raise GancliError(f"--eval-metric must be score or fid, got '{self.metric}'")

    # ------------------------------------------------------------------ hook
    def __call__(self, *, step: int, generator: nn.Module, checkpoint: Callable[..., Path],
                 accelerator: Any, run_dir: str | Path | None = None, **_: Any) -> None:
        images = self._images(generator, accelerator.device)
        if accelerator.is_main_process:
            self._evaluate(step, generator, images, checkpoint, accelerator.device, run_dir,
                           accelerator)
        accelerator.wait_for_everyone()

    def _images(self, G: nn.Module, device: torch.device) -> torch.Tensor:
        """The evaluation's n images from the fixed latents, made by every process together."""
        from gancli.generate import generate_shared

        latents = self.spec.sample(self.n, torch.Generator().manual_seed(self.cfg.train.seed))
        was_training = G.training
        G.eval()
        devices = [device] if device.type == "cuda" else []
        try:
            # Evaluation must not move the training's random streams (DataLoaders draw seeds).
            with torch.random.fork_rng(devices=devices):
                return generate_shared(G, latents, device)
        finally:
            G.train(was_training)

    def _evaluate(self, step: int, G: nn.Module, images: torch.Tensor,
                  checkpoint: Callable[..., Path], device: torch.device,
                  run_dir: str | Path | None, accelerator: Any = None) -> None:
        run_dir = Path(run_dir) if run_dir is not None else None
        if not self._resumed:
            self._resumed = True
            self.best = self._previous_best(run_dir)
        devices = [device] if device.type == "cuda" else []
        with torch.random.fork_rng(devices=devices):
            figures = self._figures(step, G, images, device)
        value = figures.get(self.key)
        improved = value is not None and math.isfinite(value) and (
            self.best is None or (value > self.best if self.higher else value < self.best))
        if improved:
            self.best = value
            checkpoint(step, name="best")
        record = {**figures, "step": step, "eval": True, "best": bool(improved),
                  "time": time.time()}
        record.pop("confusion", None)  # the per-eval log stays one readable line
        if run_dir is not None:
            append_jsonl(run_dir / "metrics.jsonl", record)
        if accelerator is not None:
            from gancli.train import trackers

            trackers.log(accelerator, {f"eval/{k}": v for k, v in record.items()
                                       if k not in ("step", "time", "eval", "n", "seed")}, step)
        shown = f"{value:.4f}" if isinstance(value, float) else str(value)
        self.say(f"eval step {step}: {self.key}={shown}"
                 + ("  (best so far: checkpoints/best)" if improved else ""))

    def _figures(self, step: int, G: nn.Module, images: torch.Tensor,
                 device: torch.device) -> dict[str, Any]:
        seed = self.cfg.train.seed  # the same latents at every evaluation: steps compare
        if self.metric == "score":
            from gancli.classifier import load_or_train
            from gancli.score import score_generator

            if self.classifier is None:
                self.classifier, self.classifier_info = load_or_train(
                    self.cfg.data, device, progress=self.say)
                info = self.classifier_info
                self.say(f"classifier test accuracy {info['accuracy']:.4f}, balanced "
                         f"{info['balanced_accuracy']:.4f} (mean per-class recall)")
            loaded = LoadedGenerator(G, self.spec, self.cfg, step, self.cfg.train.ema, Path())
            return score_generator(loaded, self.n, seed, device, self.classifier,
                                   classifier_info=self.classifier_info, images=images)
        from gancli.metrics import TensorImages, compute_metrics, recipe_reference

        ref = recipe_reference(self.cfg.data, "train", n=self.n)
        res = compute_metrics(TensorImages(images), ref, ["fid"], device=device, seed=seed)
        return {"kind": "fid", "model": self.cfg.model, "n": self.n, "seed": seed,
                "ema": self.cfg.train.ema, "key_metric": "fid", "higher_is_better": False,
                **res}

    def _previous_best(self, run_dir: Path | None) -> float | None:
        """On --resume, the best figure logged before (only if checkpoints/best still exists)."""
        if run_dir is None or not (run_dir / "checkpoints" / "best").is_dir():
            return None
        best = None
        try:
            lines = (run_dir / "metrics.jsonl").read_text().splitlines()
        except OSError:
            return None
        for line in lines:
            try:
                rec = json.loads(line)
            except json.JSONDecodeError:
                continue
            v = rec.get(self.key) if rec.get("eval") and rec.get("kind") == self.metric else None
            if isinstance(v, (int, float)) and math.isfinite(v):
                if best is None or (v > best if self.higher else v < best):
                    best = float(v)
        return best


def make_evaluator(cfg: Config, print_fn: Printer = print) -> Evaluator:
    """The evaluator for `cfg.train.eval_metric`; raises a GancliError before training when it
    could not run (no labels for score, no Inception weights for fid)."""
    return Evaluator(cfg, print_fn)
