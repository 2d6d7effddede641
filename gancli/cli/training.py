"""gancli train and gancli list: what there is to train, and training it."""

from __future__ import annotations

import json
import os
import sys
from typing import Optional

import typer

from gancli.cli.base import (BACKGROUND_HELP, DATA_HELP, IMAGE_SIZE_HELP, LIMIT_HELP,
                             VENDOR_HELP, app, data_flag, err, friendly, out, wrote)
from gancli.errors import GancliError


@app.command()
@friendly
def train(
    model: str = typer.Argument(..., help="Model family: gan, cgan, infogan, dcgan or r3gan."),
    recipe: Optional[str] = typer.Option(None, "--recipe", "-r",
                                         help="Recipe name or .toml path (default: digits, the "
                                              "data set that ships with the install)."),
    data: Optional[str] = typer.Option(None, "--data", help=DATA_HELP),
    steps: Optional[int] = typer.Option(None, "--steps", help="Training steps (overrides --epochs)."),
    epochs: Optional[float] = typer.Option(None, "--epochs", help="Training length in epochs."),
    batch_size: Optional[int] = typer.Option(None, "--batch-size", "-b"),
    lr_g: Optional[float] = typer.Option(None, "--lr-g", help="Generator learning rate."),
    lr_d: Optional[float] = typer.Option(None, "--lr-d", help="Discriminator learning rate."),
    loss: Optional[str] = typer.Option(None, "--loss", help="bce (non-saturating), lsgan, hinge or rpgan (relativistic pairing: R3GAN's, r3gan's default)."),
    g_steps: Optional[int] = typer.Option(None, "--g-steps", help="Generator updates per D update."),
    seed: Optional[int] = typer.Option(None, "--seed"),
    out_dir: Optional[str] = typer.Option(None, "--out", "-o", help="Run directory (default runs/<model>-<recipe>)."),
    mixed_precision: Optional[str] = typer.Option(None, "--mixed-precision", help="no, bf16, fp16, or auto (bf16 where the hardware runs it natively, fp16 on older GPUs, else fp32; printed at start)."),
    channels_last: Optional[bool] = typer.Option(None, "--channels-last/--no-channels-last", help="channels_last memory for convolutional networks (on by default)."),
    adam: Optional[str] = typer.Option(None, "--adam", help="Adam's implementation: auto (fused on CUDA and the CPU, foreach elsewhere), plain, foreach or fused."),
    compile_: Optional[bool] = typer.Option(None, "--compile/--no-compile", help="torch.compile G and D (off by default: slower on the CPUs measured)."),
    compile_mode: Optional[str] = typer.Option(None, "--compile-mode", help="With --compile: auto (reduce-overhead on a GPU, which replays each network's kernels as one CUDA graph; default elsewhere), default, reduce-overhead, max-autotune or max-autotune-no-cudagraphs."),
    cpu: Optional[bool] = typer.Option(None, "--cpu", help="Train on the CPU even if a GPU is present."),
    log_with: Optional[str] = typer.Option(None, "--log-with", help="Experiment trackers through Accelerate, a comma list: tensorboard, wandb, mlflow, comet_ml, aim, clearml, dvclive, swanlab, trackio (TensorBoard writes under RUN/trackers/)."),
    sync_bn: Optional[bool] = typer.Option(None, "--sync-bn/--no-sync-bn", help="BatchNorm statistics over the batches of every GPU (SyncBatchNorm; CUDA only)."),
    ema: Optional[bool] = typer.Option(None, "--ema/--no-ema", help="Keep an EMA of G's weights."),
    ema_decay: Optional[float] = typer.Option(None, "--ema-decay"),
    sample_every: Optional[int] = typer.Option(None, "--sample-every"),
    checkpoint_every: Optional[int] = typer.Option(None, "--checkpoint-every"),
    log_every: Optional[int] = typer.Option(None, "--log-every"),
    eval_every: Optional[int] = typer.Option(None, "--eval-every", help="Evaluate every N steps, keep checkpoints/best."),
    eval_metric: Optional[str] = typer.Option(None, "--eval-metric", help="score or fid."),
    eval_samples: Optional[int] = typer.Option(None, "--eval-samples", help="Images generated for each evaluation (default 2000)."),
    limit: Optional[int] = typer.Option(None, "--limit", help=LIMIT_HELP),
    image_size: Optional[int] = typer.Option(None, "--image-size", help=IMAGE_SIZE_HELP),
    background: Optional[str] = typer.Option(None, "--background", help=BACKGROUND_HELP),
    vendor: Optional[str] = typer.Option(None, "--vendor", help=VENDOR_HELP),
    resume: Optional[str] = typer.Option(None, "--resume", help="Continue the run in this directory, exactly where its newest checkpoint left it (with a larger --steps/--epochs to extend it)."),
    keep_last: Optional[int] = typer.Option(None, "--keep-last", help="Keep only the K newest step checkpoints (0: all; best/ is always kept)."),
    on_nan: Optional[str] = typer.Option(None, "--on-nan", help="A non-finite loss or weight: stop (keep the last good checkpoint) or skip (roll back, halve the learning rates, go on)."),
    balance_classes: Optional[bool] = typer.Option(None, "--balance-classes/--no-balance-classes", help="Draw the real images so that every class is equally frequent (labelled data; rare classes repeat more often): the real labels then match a conditional model's uniform fake labels."),
    augment: Optional[str] = typer.Option(None, "--augment", help="Differentiable augmentation of every image D sees: none (default), diffaug (colour, translation, cutout), ada (the same with an adaptive probability) or a comma list of colour, translation, cutout."),
    ada_target: Optional[float] = typer.Option(None, "--ada-target", help="--augment ada: the E[sign D(real)] the probability is steered to (default 0.6)."),
    r1: Optional[float] = typer.Option(None, "--r1", help="R1 gradient penalty on real images, gamma (default 0: off)."),
    r1_every: Optional[int] = typer.Option(None, "--r1-every", help="Apply R1 and R2 every K steps, scaled by K (lazy regularisation; default 1)."),
    r2: Optional[float] = typer.Option(None, "--r2", help="R2 gradient penalty on generated images, gamma (default 0: off; r3gan: R1 and R2 on)."),
    dry_run: bool = typer.Option(False, "--dry-run", help="Print the resolved config and exit."),
    progress: bool = typer.Option(True, "--progress/--no-progress", help="Show a progress bar."),
) -> None:
    """Train a model; writes a run directory (config, checkpoints, sample grids, metrics)."""
    from gancli.models import get_family
    from gancli.recipes import resolve
    from gancli.train import RESUME_OVERRIDES, resume_config
    from gancli.train import train as run_training

    get_family(model)
    overrides = dict(steps=steps, epochs=epochs, batch_size=batch_size, lr_g=lr_g, lr_d=lr_d,
                     loss=loss, g_steps=g_steps, seed=seed, out=out_dir,
                     mixed_precision=mixed_precision, cpu=cpu, ema=ema, ema_decay=ema_decay,
                     sample_every=sample_every, checkpoint_every=checkpoint_every,
                     log_every=log_every, eval_every=eval_every, eval_metric=eval_metric,
                     eval_samples=eval_samples, keep_last=keep_last, on_nan=on_nan,
                     channels_last=channels_last, adam=adam, compile=compile_, compile_mode=compile_mode, sync_bn=sync_bn,
                     log_with=log_with, balance_classes=balance_classes, augment=augment, ada_target=ada_target, r1=r1,
                     r1_every=r1_every, r2=r2)
    data_options = {"path": data, "limit": limit, "image_size": image_size,
                    "background": background, "vendor": vendor}
    if resume:
        fixed = sorted(k for k, v in overrides.items() if v is not None and k not in RESUME_OVERRIDES)
        given = [("--recipe", recipe)] + [(data_flag(k), v) for k, v in data_options.items()]
        if fixed or any(v is not None for _, v in given):
            names = [f"--{k.replace('_', '-')}" for k in fixed] + \
                [f for f, v in given if v is not None]
            raise GancliError(f"--resume continues a run with its own settings; {', '.join(names)} "
                              f"cannot change (only --steps, --epochs, --keep-last, --on-nan, "
                              f"--sync-bn, --log-with can): start a new run instead")
        cfg = resume_config(resume, overrides)
        if cfg.model != model:
            raise GancliError(f"{resume} is a {cfg.model} run, not {model}")
    else:
        cfg = resolve(model, recipe, overrides, data_options)
    from gancli.checks import training_checks

    # Before any model, data or classifier work: output room, image size, evaluation split.
    said = training_checks(cfg, resume)
    if dry_run:
        out.print_json(json.dumps(cfg.to_dict()))
        err.print("checks: " + "; ".join(said), soft_wrap=True, markup=False)
        return
    evaluator = None
    if cfg.train.eval_every:
        from gancli.evaluate import make_evaluator
        evaluator = make_evaluator(cfg, print_fn=out.print)
    run_dir = run_training(cfg, resume=resume, print_fn=lambda s: out.print(s, soft_wrap=True),
                           progress=progress and sys.stdout.isatty(), evaluator=evaluator)
    if int(os.environ.get("RANK", "0")) == 0:  # one line per run, not one per process
        wrote(run_dir, "run directory")


# ---------------------------------------------------------------------------- sample


@app.command("list")
@friendly
def list_things() -> None:
    """List the model families and the recipes that ship with gancli."""
    from gancli.models import get_family, names
    from gancli.recipes import builtin_recipes, read_recipe

    from rich.table import Table

    models = Table("model", "what it is", box=None, title="models", title_justify="left")
    for name in names():
        models.add_row(name, get_family(name).description)
    recipes = Table("recipe", "data", box=None, title="recipes", title_justify="left")
    for name in builtin_recipes():
        recipes.add_row(name, read_recipe(name)[1].get("description", ""))
    out.print(models)
    out.print(recipes)


