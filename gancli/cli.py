"""The gancli command line: parse, call, print. A user error is one line on stderr and exit 2."""

from __future__ import annotations

import functools
import json
import os
import sys
from pathlib import Path
from typing import Any, Callable, Optional, TypeVar

import typer
from rich.console import Console

from gancli import __version__
from gancli.errors import GancliError

app = typer.Typer(add_completion=False, no_args_is_help=True, pretty_exceptions_enable=False,
                  help="Train, sample, explore and evaluate GANs: gan, cgan, infogan, dcgan.")
out = Console(highlight=False)
err = Console(stderr=True, highlight=False)
F = TypeVar("F", bound=Callable[..., Any])


def friendly(fn: F) -> F:
    """Turn a GancliError (a user error) into one line on stderr and exit status 2."""
    @functools.wraps(fn)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        try:
            return fn(*args, **kwargs)
        except GancliError as e:
            err.print(f"[bold red]error:[/] {e}", soft_wrap=True)
            raise typer.Exit(2) from None
        except KeyboardInterrupt:
            err.print("interrupted")
            raise typer.Exit(130) from None
    return wrapper  # type: ignore[return-value]


def wrote(path: Path | str, what: str = "") -> None:
    out.print(f"wrote {path}" + (f"  ({what})" if what else ""), soft_wrap=True)


def run_root(path: Path) -> Path:
    """The run directory that a run, step directory or generator file belongs to (where outputs
    go when no --out is given)."""
    p = path if path.is_dir() else path.parent
    for cand in (p, p.parent, p.parent.parent):
        if (cand / "config.json").is_file():
            return cand
    return p


def version_callback(value: bool) -> None:
    if value:
        out.print(f"gancli {__version__}")
        raise typer.Exit()


@app.callback()
def root(version: bool = typer.Option(False, "--version", callback=version_callback,
                                      is_eager=True, help="Print the version and exit.")) -> None:
    """gancli: GANs you can train, look inside and measure."""


# ---------------------------------------------------------------------------- train


@app.command()
@friendly
def train(
    model: str = typer.Argument(..., help="Model family: gan, cgan, infogan or dcgan."),
    recipe: Optional[str] = typer.Option(None, "--recipe", "-r",
                                         help="Recipe name or .toml path (default: digits, the "
                                              "data set that ships with the install)."),
    data: Optional[str] = typer.Option(None, "--data", help="Local copy of the data set (a directory)."),
    steps: Optional[int] = typer.Option(None, "--steps", help="Training steps (overrides --epochs)."),
    epochs: Optional[float] = typer.Option(None, "--epochs", help="Training length in epochs."),
    batch_size: Optional[int] = typer.Option(None, "--batch-size", "-b"),
    lr_g: Optional[float] = typer.Option(None, "--lr-g", help="Generator learning rate."),
    lr_d: Optional[float] = typer.Option(None, "--lr-d", help="Discriminator learning rate."),
    loss: Optional[str] = typer.Option(None, "--loss", help="bce (non-saturating), lsgan or hinge."),
    g_steps: Optional[int] = typer.Option(None, "--g-steps", help="Generator updates per D update."),
    seed: Optional[int] = typer.Option(None, "--seed"),
    out_dir: Optional[str] = typer.Option(None, "--out", "-o", help="Run directory (default runs/<model>-<recipe>)."),
    mixed_precision: Optional[str] = typer.Option(None, "--mixed-precision", help="no, bf16 or fp16."),
    cpu: Optional[bool] = typer.Option(None, "--cpu", help="Train on the CPU even if a GPU is present."),
    ema: Optional[bool] = typer.Option(None, "--ema/--no-ema", help="Keep an EMA of G's weights."),
    ema_decay: Optional[float] = typer.Option(None, "--ema-decay"),
    sample_every: Optional[int] = typer.Option(None, "--sample-every"),
    checkpoint_every: Optional[int] = typer.Option(None, "--checkpoint-every"),
    log_every: Optional[int] = typer.Option(None, "--log-every"),
    eval_every: Optional[int] = typer.Option(None, "--eval-every", help="Evaluate every N steps, keep checkpoints/best."),
    eval_metric: Optional[str] = typer.Option(None, "--eval-metric", help="score or fid."),
    limit: Optional[int] = typer.Option(None, "--limit", help="Use only the first N images."),
    resume: Optional[str] = typer.Option(None, "--resume", help="Continue the run in this directory."),
    dry_run: bool = typer.Option(False, "--dry-run", help="Print the resolved config and exit."),
    progress: bool = typer.Option(True, "--progress/--no-progress", help="Show a progress bar."),
) -> None:
    """Train a model; writes a run directory (config, checkpoints, sample grids, metrics)."""
    from gancli.models import get_family
    from gancli.recipes import resolve
    from gancli.train import resume_config
    from gancli.train import train as run_training

    get_family(model)
    overrides = dict(steps=steps, epochs=epochs, batch_size=batch_size, lr_g=lr_g, lr_d=lr_d,
                     loss=loss, g_steps=g_steps, seed=seed, out=out_dir,
                     mixed_precision=mixed_precision, cpu=cpu, ema=ema, ema_decay=ema_decay,
                     sample_every=sample_every, checkpoint_every=checkpoint_every,
                     log_every=log_every, eval_every=eval_every, eval_metric=eval_metric)
    if resume:
        cfg = resume_config(resume, overrides)
        if cfg.model != model:
            raise GancliError(f"{resume} is a {cfg.model} run, not {model}")
    else:
        cfg = resolve(model, recipe, overrides, {"path": data, "limit": limit})
    if dry_run:
        out.print_json(json.dumps(cfg.to_dict()))
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


def _load(run: str, ema: bool, step: Optional[int], device: Optional[str]):
    from gancli.checkpoint import load_generator
    from gancli.generate import pick_device

    dev = pick_device(device)
    return load_generator(run, ema=ema, step=step, device=dev), dev


def _fixed(spec, latents, codes: list[str] | None, option: str = "--code"):
    from gancli.generate import parse_assignments

    for name, value in parse_assignments(codes, option):
        spec.check_name(name)
        latents = spec.fix(latents, name, spec.parse_value(name, value))
    return latents


@app.command()
@friendly
def sample(
    run: str = typer.Argument(..., help="A run directory, a step directory or a generator file."),
    n: int = typer.Option(64, "--n", help="Number of images."),
    seed: int = typer.Option(0, "--seed"),
    code: Optional[list[str]] = typer.Option(None, "--code", help="Fix a code: NAME=VALUE (repeatable), e.g. c1=3, c2=-1.5, z7=0."),
    label: Optional[int] = typer.Option(None, "--label", help="Conditional models: the class to draw (same as --code label=N)."),
    per_class: bool = typer.Option(False, "--per-class", help="Conditional models: one class per row."),
    out_path: Optional[str] = typer.Option(None, "--out", "-o", help="a .png grid, a .npz, or a directory of PNG files."),
    nrow: Optional[int] = typer.Option(None, "--nrow", help="Images per grid row."),
    ema: bool = typer.Option(True, "--ema/--no-ema", help="Use the EMA generator when the checkpoint has one."),
    step: Optional[int] = typer.Option(None, "--step", help="Use this checkpoint step of a run."),
    device: Optional[str] = typer.Option(None, "--device", help="cpu, cuda, cuda:1 (default: a GPU if present)."),
) -> None:
    """Draw samples: a grid (.png), single files (a directory) or images + latents (.npz)."""
    import math

    import torch

    from gancli.generate import generate, save_npz
    from gancli.viz import save_grid, save_images

    if n <= 0:
        raise GancliError(f"--n must be positive, got {n}")
    g, dev = _load(run, ema, step, device)
    spec = g.spec
    gen = torch.Generator().manual_seed(seed)
    row = nrow
    if per_class:
        lc = spec.label_code
        if lc is None:
            raise GancliError(f"--per-class needs a conditional model; {g.config.model} has no labels")
        cols = max(1, n // lc.size)
        latents = spec.traversal(lc.name, cols, torch.arange(lc.size), gen)
        # traversal is row-major over noise draws; transpose so each row is one class
        order = torch.arange(lc.size * cols).view(cols, lc.size).t().reshape(-1)
        latents = {k: v[order] for k, v in latents.items()}
        row = row or cols
    else:
        latents = spec.sample(n, gen)
    codes = list(code or [])
    if label is not None:
        if spec.label_code is None:
            raise GancliError(f"--label needs a conditional model; {g.config.model} has no labels")
        codes.append(f"{spec.label_code.name}={label}")
    latents = _fixed(spec, latents, codes)
    images = generate(g.generator, latents, dev)
    target = Path(out_path) if out_path else run_root(g.path) / "samples" / f"sample-seed{seed}-n{len(images)}.png"
    if target.suffix.lower() == ".npz":
        wrote(save_npz(target, images, latents), f"{len(images)} images + latents")
    elif target.suffix.lower() == ".png":
        wrote(save_grid(images, target, nrow=row or max(1, int(math.ceil(math.sqrt(len(images)))))),
              f"grid of {len(images)}")
    else:
        if target.suffix:
            raise GancliError(f"--out {target}: use a .png (grid), a .npz, or a directory")
        save_images(images, target)
        wrote(target, f"{len(images)} PNG files")


# ---------------------------------------------------------------------------- traverse


@app.command()
@friendly
def traverse(
    run: str = typer.Argument(..., help="A run directory, a step directory or a generator file."),
    code: str = typer.Option(..., "--code", "-c", help="The code to walk: a named code (c1, c2, label, ...) or a noise dimension zN."),
    value_range: tuple[float, float] = typer.Option((-2.0, 2.0), "--range", help="Range for a continuous code (may exceed the training range)."),
    steps: int = typer.Option(9, "--steps", help="Values for a continuous code (a categorical one walks all its values)."),
    rows: int = typer.Option(8, "--rows", help="Noise draws, one per row, held fixed across the row."),
    fix: Optional[list[str]] = typer.Option(None, "--fix", help="Hold another code at a value: NAME=VALUE (repeatable)."),
    seed: int = typer.Option(0, "--seed"),
    gif: bool = typer.Option(False, "--gif", help="Also write an animation, one frame per value."),
    out_path: Optional[str] = typer.Option(None, "--out", "-o", help="Output .png (default: inside the run)."),
    ema: bool = typer.Option(True, "--ema/--no-ema"),
    step: Optional[int] = typer.Option(None, "--step"),
    device: Optional[str] = typer.Option(None, "--device"),
) -> None:
    """Vary one code and hold the rest: rows are noise draws, columns the code's values."""
    import torch

    from gancli.generate import generate
    from gancli.viz import column_frames, save_gif, save_grid

    if rows <= 0:
        raise GancliError(f"--rows must be positive, got {rows}")
    g, dev = _load(run, ema, step, device)
    spec = g.spec
    spec.check_name(code)
    values = spec.traversal_values(code, steps, value_range)
    latents = spec.traversal(code, rows, values, torch.Generator().manual_seed(seed))
    latents = _fixed(spec, latents, fix, "--fix")
    latents = spec.fix(latents, code, values.repeat(rows))  # --fix must not override the walk
    images = generate(g.generator, latents, dev)
    target = Path(out_path) if out_path else run_root(g.path) / "traversals" / f"{code}-seed{seed}.png"
    if target.suffix.lower() != ".png":
        raise GancliError(f"--out {target}: traverse writes a .png")
    wrote(save_grid(images, target, nrow=len(values)),
          f"{rows} rows x {len(values)} values of {code}: "
          + ", ".join(f"{v:g}" for v in values.tolist()))
    if gif:
        wrote(save_gif(column_frames(images, rows, len(values)), target.with_suffix(".gif")), "animation")


# ---------------------------------------------------------------------------- info


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


def main() -> None:
    app()
