"""The gancli command line: parse, call, print. A user error is one line on stderr and exit 2.

Every error, a user's or gancli's own, is one line on stderr and a non-zero exit, never a
traceback, unless `gancli --debug ...` (or GANCLI_DEBUG=1) asks for the traceback, for bug reports.
"""

from __future__ import annotations

import functools
import json
import os
import sys
from pathlib import Path
from typing import Any, Callable, Optional, TypeVar

import typer
from rich.console import Console
from rich.markup import escape
from typer.core import TyperGroup
from typer.exceptions import Abort, Exit, TyperException

from gancli import __version__
from gancli.errors import GancliError

out = Console(highlight=False)
err = Console(stderr=True, highlight=False)
F = TypeVar("F", bound=Callable[..., Any])


class OneLineErrors(TyperGroup):
    """Click's own usage errors (a bad option value, a missing argument, an unknown option) as
    one line too, with where to look for help. `gancli` alone still shows the help."""

    def main(self, *args: Any, standalone_mode: bool = True, **kwargs: Any) -> Any:
        if not standalone_mode:
            return super().main(*args, standalone_mode=False, **kwargs)
        try:
            rv = super().main(*args, standalone_mode=False, **kwargs)
        except TyperException as e:  # click's usage errors
            if type(e).__name__ == "NoArgsIsHelpError":
                return super().main(*args, **kwargs)  # prints the help, as before
            ctx = getattr(e, "ctx", None)
            where = f" (see {ctx.command_path} --help)" if ctx is not None else ""
            say_error(e.format_message() + where)
            sys.exit(getattr(e, "exit_code", 2))
        except Abort:
            say_error("aborted")
            sys.exit(1)
        sys.exit(rv if isinstance(rv, int) else 0)


app = typer.Typer(cls=OneLineErrors, add_completion=False, no_args_is_help=True,
                  pretty_exceptions_enable=False,
                  help="Train, sample, explore and evaluate GANs: gan, cgan, infogan, dcgan.")


_debug_flag = False


def debugging() -> bool:
    """--debug on the command line, or GANCLI_DEBUG set to anything but 0/false/no."""
    env = os.environ.get("GANCLI_DEBUG", "").strip().lower()
    return _debug_flag or env not in ("", "0", "false", "no")


def _is_out_of_memory(e: BaseException) -> bool:
    if isinstance(e, MemoryError):
        return True
    text = str(e)
    return isinstance(e, RuntimeError) and ("out of memory" in text.lower()
                                            or "can't allocate memory" in text
                                            or "DefaultCPUAllocator" in text)


def explain(e: Exception) -> tuple[int, str]:
    """(exit status, one line) for an error that reached the command line."""
    if isinstance(e, GancliError):
        return getattr(e, "exit_code", 2), str(e)
    first = (str(e).strip().splitlines() or [type(e).__name__])[0][:300]
    if _is_out_of_memory(e):
        return 2, (f"out of memory ({first}): ask for less (a smaller --n, --rows, --steps or "
                   f"--batch-size), or use a machine with more memory")
    if isinstance(e, OSError):
        where = f"{e.filename}: " if e.filename else ""
        return 2, f"{where}{e.strerror or first}"
    return 1, (f"internal error: {type(e).__name__}: {first} (a gancli bug: rerun with --debug "
               f"for the traceback and report it)")


def say_error(message: str, label: str = "error") -> None:
    # One line whatever the message holds (newlines, rich markup characters in a path).
    line = " ".join(message.split("\n")).replace("\r", " ")
    if label:
        err.print(f"[bold red]{label}:[/] {escape(line)}", soft_wrap=True)
    else:   # a stop the user asked for (Ctrl-C while training) is not an error
        err.print(f"[bold yellow]{escape(line)}[/]", soft_wrap=True)


def friendly(fn: F) -> F:
    """Turn any error into one line on stderr and a non-zero exit: a GancliError (a user error)
    into its message and exit 2, anything else into a line that says it is a bug (exit 1).
    With --debug (or GANCLI_DEBUG=1) the error is raised again, so its traceback shows."""
    @functools.wraps(fn)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        try:
            return fn(*args, **kwargs)
        except (Exit, Abort, TyperException):
            raise  # typer's own ending and usage errors
        except KeyboardInterrupt:
            if debugging():
                raise
            err.print("interrupted at once: the step under way is lost; every file written "
                      "before it is whole, so --resume continues from the last checkpoint")
            raise typer.Exit(130) from None
        except Exception as e:
            if debugging():
                raise
            code, message = explain(e)
            if not getattr(e, "quiet", False):  # another process of the run says it
                say_error(message, getattr(e, "label", "error"))
            raise typer.Exit(code) from None
    return wrapper  # type: ignore[return-value]


def wrote(path: Path | str, what: str = "") -> None:
    out.print(escape(f"wrote {path}" + (f"  ({what})" if what else "")), soft_wrap=True)


RUN_HELP = ("A run directory, a step directory or a generator file (default: the newest run "
            "under ./runs).")


def run_or_newest(run: Optional[str]) -> str:
    """RUN as given, or the newest run under ./runs, said on stderr (stdout may be JSON)."""
    if run is not None:
        return run
    from gancli.checkpoint import newest_run

    path = newest_run()
    typer.echo(f"using the newest run: {path}", err=True)
    return str(path)


OVERWRITE_HELP = ("Replace an --out that exists (a file, or a whole directory). Default outputs "
                  "inside the run directory are gancli's own and are always replaced.")


def check_outputs(*targets: tuple[Path, bool], overwrite: bool) -> None:
    """Check every output of a command before any image is made: (path, is a directory)."""
    from gancli.files import check_target

    for path, directory in targets:
        check_target(path, directory=directory, overwrite=overwrite)


def default_output(run_dir: Path, folder: str, name: str) -> Path:
    """A default output inside the run: the name is built from codes and seeds, some read from
    the checkpoint, so it must stay one plain file name inside `folder`."""
    from gancli.files import safe_name

    return run_dir / folder / safe_name(name, "output name")


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
                                      is_eager=True, help="Print the version and exit."),
         debug: bool = typer.Option(False, "--debug",
                                    help="On an error, show the full Python traceback (for bug "
                                         "reports); also GANCLI_DEBUG=1.")) -> None:
    """gancli: GANs you can train, look inside and measure."""
    global _debug_flag
    _debug_flag = debug


# ---------------------------------------------------------------------------- train


@app.command()
@friendly
def train(
    model: str = typer.Argument(..., help="Model family: gan, cgan, infogan or dcgan."),
    recipe: Optional[str] = typer.Option(None, "--recipe", "-r",
                                         help="Recipe name or .toml path (default: digits, the "
                                              "data set that ships with the install)."),
    data: Optional[str] = typer.Option(None, "--data", help="Local copy of the data set: a directory (IDX files, a folder of images, a datasets save_to_disk or parquet directory), a .parquet file, or for the hf recipe a hub id."),
    steps: Optional[int] = typer.Option(None, "--steps", help="Training steps (overrides --epochs)."),
    epochs: Optional[float] = typer.Option(None, "--epochs", help="Training length in epochs."),
    batch_size: Optional[int] = typer.Option(None, "--batch-size", "-b"),
    lr_g: Optional[float] = typer.Option(None, "--lr-g", help="Generator learning rate."),
    lr_d: Optional[float] = typer.Option(None, "--lr-d", help="Discriminator learning rate."),
    loss: Optional[str] = typer.Option(None, "--loss", help="bce (non-saturating), lsgan or hinge."),
    g_steps: Optional[int] = typer.Option(None, "--g-steps", help="Generator updates per D update."),
    seed: Optional[int] = typer.Option(None, "--seed"),
    out_dir: Optional[str] = typer.Option(None, "--out", "-o", help="Run directory (default runs/<model>-<recipe>)."),
    mixed_precision: Optional[str] = typer.Option(None, "--mixed-precision", help="no, bf16, fp16, or auto (bf16 where the hardware runs it natively, fp16 on older GPUs, else fp32; printed at start)."),
    channels_last: Optional[bool] = typer.Option(None, "--channels-last/--no-channels-last", help="channels_last memory for convolutional networks (on by default)."),
    adam: Optional[str] = typer.Option(None, "--adam", help="Adam's implementation: auto (fused on CUDA and the CPU, foreach elsewhere), plain, foreach or fused."),
    compile_: Optional[bool] = typer.Option(None, "--compile/--no-compile", help="torch.compile G and D (off by default: slower on the CPUs measured)."),
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
    limit: Optional[int] = typer.Option(None, "--limit", help="Use only the first N images."),
    resume: Optional[str] = typer.Option(None, "--resume", help="Continue the run in this directory, exactly where its newest checkpoint left it (with a larger --steps/--epochs to extend it)."),
    keep_last: Optional[int] = typer.Option(None, "--keep-last", help="Keep only the K newest step checkpoints (0: all; best/ is always kept)."),
    on_nan: Optional[str] = typer.Option(None, "--on-nan", help="A non-finite loss or weight: stop (keep the last good checkpoint) or skip (roll back, halve the learning rates, go on)."),
    augment: Optional[str] = typer.Option(None, "--augment", help="Differentiable augmentation of every image D sees: none (default), diffaug (colour, translation, cutout), ada (the same with an adaptive probability) or a comma list of colour, translation, cutout."),
    ada_target: Optional[float] = typer.Option(None, "--ada-target", help="--augment ada: the E[sign D(real)] the probability is steered to (default 0.6)."),
    r1: Optional[float] = typer.Option(None, "--r1", help="R1 gradient penalty on real images, gamma (default 0: off)."),
    r1_every: Optional[int] = typer.Option(None, "--r1-every", help="Apply R1 every K steps, scaled by K (lazy R1; default 1)."),
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
                     channels_last=channels_last, adam=adam, compile=compile_, sync_bn=sync_bn,
                     log_with=log_with, augment=augment, ada_target=ada_target, r1=r1,
                     r1_every=r1_every)
    if resume:
        fixed = sorted(k for k, v in overrides.items() if v is not None and k not in RESUME_OVERRIDES)
        if fixed or recipe or data or limit:
            names = [f"--{k.replace('_', '-')}" for k in fixed] + \
                [f for f, v in (("--recipe", recipe), ("--data", data), ("--limit", limit)) if v]
            raise GancliError(f"--resume continues a run with its own settings; {', '.join(names)} "
                              f"cannot change (only --steps, --epochs, --keep-last, --on-nan, "
                              f"--sync-bn, --log-with can): start a new run instead")
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
        latents = spec.fix(latents, name, spec.parse_value(name, value, option))
    return latents


def _sample_kind(target: Path) -> str:
    suffix = target.suffix.lower()
    if suffix in (".png", ".npz"):
        return suffix[1:]
    if suffix:
        raise GancliError(f"--out {target}: use a .png (grid), a .npz, or a directory")
    return "dir"


@app.command()
@friendly
def sample(
    run: Optional[str] = typer.Argument(None, help=RUN_HELP),
    n: int = typer.Option(64, "--n", help="Number of images."),
    seed: int = typer.Option(0, "--seed"),
    code: Optional[list[str]] = typer.Option(None, "--code", help="Fix a code: NAME=VALUE (repeatable), e.g. c1=3, c2=-1.5, z7=0."),
    label: Optional[int] = typer.Option(None, "--label", help="Conditional models: the class to draw (same as --code label=N)."),
    per_class: bool = typer.Option(False, "--per-class", help="Conditional models: one class per row."),
    out_path: Optional[str] = typer.Option(None, "--out", "-o", help="a .png grid, a .npz, or a directory of PNG files."),
    overwrite: bool = typer.Option(False, "--overwrite", help=OVERWRITE_HELP),
    nrow: Optional[int] = typer.Option(None, "--nrow", help="Images per grid row."),
    ema: bool = typer.Option(True, "--ema/--no-ema", help="Use the EMA generator when the checkpoint has one."),
    step: Optional[int] = typer.Option(None, "--step", help="Use this checkpoint step of a run."),
    device: Optional[str] = typer.Option(None, "--device", help="cpu, cuda, cuda:1 (default: a GPU if present)."),
) -> None:
    """Draw samples: a grid (.png), single files (a directory) or images + latents (.npz)."""
    run = run_or_newest(run)
    import math

    import torch

    from gancli.generate import (MAX_FILES, check_count, check_memory, check_seed, generate,
                                 generate_batches, image_bytes, latent_bytes, save_npz)
    from gancli.viz import MAX_COLUMNS, check_picture, save_grid, write_image_batches

    check_count(n, "--n", at_most=MAX_FILES)
    if nrow is not None:
        check_count(nrow, "--nrow", at_most=MAX_COLUMNS)
    check_seed(seed)
    explicit = Path(out_path) if out_path else None
    kind = _sample_kind(explicit) if explicit else "png"
    if explicit:  # fail fast: before the checkpoint is even read
        check_outputs((explicit, kind == "dir"), overwrite=overwrite)
    g, dev = _load(run, ema, step, device)
    spec, data = g.spec, g.config.data
    lc = spec.label_code
    if per_class and lc is None:
        raise GancliError(f"--per-class needs a conditional model; {g.config.model} has no labels")
    if label is not None and lc is None:
        raise GancliError(f"--label needs a conditional model; {g.config.model} has no labels")
    cols = max(1, n // lc.size) if per_class else 0
    count = lc.size * cols if per_class else n
    row = nrow or cols or max(1, int(math.ceil(math.sqrt(count))))
    fewer = "a smaller --n"
    if kind == "png":
        check_picture(count, row, data.image_size, f"{fewer}, or --out DIR (one file per image)")
    elif kind == "npz":
        check_memory(image_bytes(count, data.channels, data.image_size)
                     + latent_bytes(spec, count), f"{count:,} images and their latents",
                     f"{fewer}, or --out DIR (streamed, one file per image)")
    else:
        check_memory(latent_bytes(spec, count), f"the latents of {count:,} images", fewer)
    target = explicit or default_output(run_root(g.path), "samples",
                                        f"sample-seed{seed}-n{count}.png")
    if not explicit:
        check_outputs((target, False), overwrite=True)

    gen = torch.Generator().manual_seed(seed)
    if per_class:
        latents = spec.traversal(lc.name, cols, torch.arange(lc.size), gen)
        # traversal is row-major over noise draws; transpose so each row is one class
        order = torch.arange(lc.size * cols).view(cols, lc.size).t().reshape(-1)
        latents = {k: v[order] for k, v in latents.items()}
    else:
        latents = spec.sample(n, gen)
    codes = list(code or [])
    if label is not None:
        codes.append(f"{lc.name}={label}")
    latents = _fixed(spec, latents, codes)
    if kind == "dir":  # streamed: one batch of images in memory at a time
        written = write_image_batches(generate_batches(g.generator, latents, dev), target)
        wrote(target, f"{written} PNG files")
        return
    images = generate(g.generator, latents, dev)
    if kind == "npz":
        wrote(save_npz(target, images, latents), f"{len(images)} images + latents")
    else:
        wrote(save_grid(images, target, nrow=row), f"grid of {len(images)}")


# ---------------------------------------------------------------------------- traverse


@app.command()
@friendly
def traverse(
    run: Optional[str] = typer.Argument(None, help=RUN_HELP),
    code: str = typer.Option(..., "--code", "-c", help="The code to walk: a named code (c1, c2, label, ...) or a noise dimension zN."),
    value_range: tuple[float, float] = typer.Option((-2.0, 2.0), "--range", help="Range for a continuous code (may exceed the training range)."),
    steps: int = typer.Option(9, "--steps", help="Values for a continuous code (a categorical one walks all its values)."),
    rows: int = typer.Option(8, "--rows", help="Noise draws, one per row, held fixed across the row."),
    fix: Optional[list[str]] = typer.Option(None, "--fix", help="Hold another code at a value: NAME=VALUE (repeatable)."),
    seed: int = typer.Option(0, "--seed"),
    gif: bool = typer.Option(False, "--gif", help="Also write an animation, one frame per value."),
    out_path: Optional[str] = typer.Option(None, "--out", "-o", help="Output .png (default: inside the run)."),
    overwrite: bool = typer.Option(False, "--overwrite", help=OVERWRITE_HELP),
    ema: bool = typer.Option(True, "--ema/--no-ema"),
    step: Optional[int] = typer.Option(None, "--step"),
    device: Optional[str] = typer.Option(None, "--device"),
) -> None:
    """Vary one code and hold the rest: rows are noise draws, columns the code's values."""
    run = run_or_newest(run)
    import torch

    from gancli.generate import check_count, check_seed, generate
    from gancli.viz import (MAX_COLUMNS, MAX_PICTURE_IMAGES, check_picture, column_frames,
                            save_gif, save_grid)

    check_count(rows, "--rows", at_most=MAX_PICTURE_IMAGES)
    check_count(steps, "--steps", at_least=2, at_most=MAX_COLUMNS)
    check_seed(seed)
    explicit = Path(out_path) if out_path else None
    if explicit:
        if explicit.suffix.lower() != ".png":
            raise GancliError(f"--out {explicit}: traverse writes a .png")
        check_outputs((explicit, False), *([(explicit.with_suffix(".gif"), False)] if gif else []),
                      overwrite=overwrite)
    g, dev = _load(run, ema, step, device)
    spec = g.spec
    spec.check_name(code)
    values = spec.traversal_values(code, steps, value_range)
    fewer = "fewer --rows or --steps"
    check_picture(rows * len(values), len(values), g.config.data.image_size, fewer)
    target = explicit or default_output(run_root(g.path), "traversals", f"{code}-seed{seed}.png")
    if not explicit:
        check_outputs((target, False), *([(target.with_suffix(".gif"), False)] if gif else []),
                      overwrite=True)
    latents = spec.traversal(code, rows, values, torch.Generator().manual_seed(seed))
    latents = _fixed(spec, latents, fix, "--fix")
    latents = spec.fix(latents, code, values.repeat(rows))  # --fix must not override the walk
    images = generate(g.generator, latents, dev)
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


# ---------------------------------------------------------------------------- interpolate


def _seed_pairs(seeds: list[str] | None, rows: Optional[int]) -> list[tuple[int, int]]:
    """--seeds A,B (repeatable) and --rows R -> one (start seed, end seed) pair per row."""
    pairs = []
    for item in seeds or ["0,1"]:
        parts = item.split(",")
        try:
            if len(parts) != 2:
                raise ValueError
            pairs.append((int(parts[0]), int(parts[1])))
        except ValueError:
            raise GancliError(f"--seeds expects A,B (two integers, e.g. 3,7), got '{item}'") from None
    from gancli.generate import check_count, check_seed
    from gancli.viz import MAX_PICTURE_IMAGES

    span = 1
    if rows is not None:
        check_count(rows, "--rows", at_most=MAX_PICTURE_IMAGES)
        if len(pairs) > 1:
            raise GancliError("--rows goes with a single --seeds A,B; with several --seeds, "
                              "each pair is one row")
        span = rows
    for a, b in pairs:  # rows walk seeds A..A+R-1 and B..B+R-1
        check_seed(a, "--seeds (each seed)", span)
        check_seed(b, "--seeds (each seed)", span)
    if rows is not None:
        a, b = pairs[0]
        pairs = [(a + r, b + r) for r in range(rows)]
    return pairs


@app.command()
@friendly
def interpolate(
    run: Optional[str] = typer.Argument(None, help=RUN_HELP),
    seeds: Optional[list[str]] = typer.Option(None, "--seeds", help="A,B: walk from seed A's latents (exactly those of `sample --n 1 --seed A`) to seed B's. Repeat for more rows (--seeds 3,7 --seeds 1,2). Default 0,1."),
    steps: int = typer.Option(10, "--steps", help="Images per row, both ends included."),
    method: str = typer.Option("slerp", "--method", help="slerp (along the sphere where the noise lives) or lerp (a straight line)."),
    rows: Optional[int] = typer.Option(None, "--rows", help="With one --seeds A,B: R rows, row r walking seed A+r to seed B+r."),
    code: Optional[list[str]] = typer.Option(None, "--code", "-c", help="Also walk this code from A's value to B's (repeatable): label, c1, ... (a categorical one blends as soft weights). Codes not named stay at A's values."),
    fix: Optional[list[str]] = typer.Option(None, "--fix", help="Hold a code at a value along the whole walk: NAME=VALUE (repeatable), e.g. label=3."),
    gif: bool = typer.Option(False, "--gif", help="Also write an animation beside the output, one frame per step."),
    out_path: Optional[str] = typer.Option(None, "--out", "-o", help="Output .png (one row per pair) or .npz (images + latents); default <run>/interpolations/seedA-seedB-METHOD.png."),
    overwrite: bool = typer.Option(False, "--overwrite", help=OVERWRITE_HELP),
    ema: bool = typer.Option(True, "--ema/--no-ema", help="Use the EMA generator when the checkpoint has one."),
    step: Optional[int] = typer.Option(None, "--step", help="Use this checkpoint step of a run."),
    device: Optional[str] = typer.Option(None, "--device", help="cpu, cuda, cuda:1 (default: a GPU if present)."),
) -> None:
    """Walk the latent space from one seed's draw to another's: a strip per pair of seeds."""
    run = run_or_newest(run)
    import torch

    from gancli.generate import (check_count, check_memory, generate, image_bytes, latent_bytes,
                                 save_npz)
    from gancli.latent import interpolate as walk_between
    from gancli.viz import MAX_COLUMNS, check_picture, column_frames, save_gif, save_grid

    if method not in ("slerp", "lerp"):
        raise GancliError(f"--method must be slerp or lerp, got '{method}'")
    check_count(steps, "--steps", at_least=2, at_most=MAX_COLUMNS)
    pairs = _seed_pairs(seeds, rows)
    explicit = Path(out_path) if out_path else None
    if explicit:
        if explicit.suffix.lower() not in (".png", ".npz"):
            raise GancliError(f"--out {explicit}: interpolate writes a .png or a .npz")
        check_outputs((explicit, False), *([(explicit.with_suffix(".gif"), False)] if gif else []),
                      overwrite=overwrite)
    g, dev = _load(run, ema, step, device)
    spec, data = g.spec, g.config.data
    walk = tuple(code or [])
    for name in walk:
        if spec.z_index(name) is not None:
            raise GancliError(f"--code {name}: the noise always walks; --code names a code to walk "
                              f"too: {', '.join(spec.names()) or 'this model has none'}")
        spec.check_name(name)
    count = len(pairs) * steps
    fewer = "fewer --steps or rows"
    if explicit is not None and explicit.suffix.lower() == ".npz":
        check_memory(image_bytes(count, data.channels, data.image_size)
                     + latent_bytes(spec, count), f"{count:,} images and their latents", fewer)
        if gif:  # each frame: one column of the sheet
            check_picture(len(pairs), 1, data.image_size, fewer)
    else:
        check_picture(count, steps, data.image_size, fewer)
    a, b = pairs[0]
    name = f"seed{a}-seed{b}-{method}" + (f"-{len(pairs)}rows" if len(pairs) > 1 else "")
    target = explicit or default_output(run_root(g.path), "interpolations", f"{name}.png")
    if not explicit:
        check_outputs((target, False), *([(target.with_suffix(".gif"), False)] if gif else []),
                      overwrite=True)

    def draws(which: int) -> dict:
        # The same draw as `sample --n 1 --seed S`, one row per pair.
        rows_ = [spec.sample(1, torch.Generator().manual_seed(p[which])) for p in pairs]
        return _fixed(spec, {k: torch.cat([r[k] for r in rows_]) for k in rows_[0]}, fix, "--fix")

    latents = walk_between(spec, draws(0), draws(1), steps, method, walk)
    images = generate(g.generator, latents, dev)
    what = (f"{len(pairs)} row{'s' if len(pairs) > 1 else ''} x {steps} steps, {method}: seeds "
            + ", ".join(f"{p}->{q}" for p, q in pairs))
    if target.suffix.lower() == ".npz":
        wrote(save_npz(target, images, latents), what)
    else:
        wrote(save_grid(images, target, nrow=steps), what)
    if gif:
        wrote(save_gif(column_frames(images, len(pairs), steps), target.with_suffix(".gif")),
              "animation")


# ---------------------------------------------------------------------------- fid / score


def _is_generator_path(path: Path) -> bool:
    """A run, a step directory or a generator file, as opposed to a folder of images."""
    if path.is_file():
        return True
    return any((path / name).exists() for name in ("config.json", "checkpoints",
                                                    "generator.safetensors",
                                                    "generator_ema.safetensors"))


def _record_in_run(loaded_path: Path, record: dict) -> Optional[Path]:
    """Append a result to the run's metrics.jsonl (only when the generator belongs to a run)."""
    import time

    from gancli.files import append_jsonl

    root = run_root(loaded_path)
    if not (root / "config.json").is_file():
        return None
    append_jsonl(root / "metrics.jsonl", {**record, "time": time.time()})
    return root / "metrics.jsonl"


def _figures_table(title: str, rows: list[tuple[str, str]]):
    from rich.console import Group
    from rich.table import Table

    table = Table(show_header=False)
    table.add_column(style="bold")
    table.add_column(justify="right")
    for k, v in rows:
        table.add_row(k, v)
    return Group(title, table)  # a title above, not squeezed to the table's width


@app.command()
@friendly
def fid(
    source: Optional[str] = typer.Argument(None, help="A run directory, step directory or generator file (default: the newest run under ./runs); or a folder of images (then --ref is needed)."),
    ref: Optional[str] = typer.Option(None, "--ref", help="A folder of images as the reference (default: the run's recipe data)."),
    split: str = typer.Option("train", "--split", help="Which split of the recipe data is the reference: train or test."),
    ref_n: Optional[int] = typer.Option(None, "--ref-n", help="Reference images: a fixed random subset of this size (default: all, at most 50,000)."),
    metrics: str = typer.Option("fid,kid", "--metrics", help="Comma list of fid, kid, isc (Inception score), prc (precision/recall; uses VGG16)."),
    n: int = typer.Option(10000, "--n", help="Generated samples. 10,000 keeps a GPU run to a minute or two; FID shrinks as n grows, so compare figures at equal n (50,000 for published numbers)."),
    batch_size: int = typer.Option(128, "--batch-size", "-b"),
    seed: int = typer.Option(0, "--seed", help="Latents are those of `sample --seed S --n N`."),
    device: Optional[str] = typer.Option(None, "--device", help="cpu, cuda, cuda:1 (default: a GPU if present)."),
    ema: bool = typer.Option(True, "--ema/--no-ema", help="Use the EMA generator when the checkpoint has one."),
    step: Optional[int] = typer.Option(None, "--step", help="Use this checkpoint step of a run."),
    inception_weights: Optional[str] = typer.Option(None, "--inception-weights", envvar="GANCLI_INCEPTION_WEIGHTS", help="weights-inception-2015-12-05-6726825d.pth, for machines without network."),
    vgg16_weights: Optional[str] = typer.Option(None, "--vgg16-weights", envvar="GANCLI_VGG16_WEIGHTS", help="torchvision's vgg16-397923af.pth, for prc without network."),
    feature_extractor: Optional[str] = typer.Option(None, "--feature-extractor", hidden=True, help="A feature extractor registered with torch-fidelity, for every metric."),
    cache: bool = typer.Option(True, "--cache/--no-cache", help="Reuse (and store) the reference statistics."),
    json_out: bool = typer.Option(False, "--json", help="Print one JSON object instead of a table."),
    verbose: bool = typer.Option(False, "--verbose", help="Show torch-fidelity's own progress."),
) -> None:
    """FID, KID, Inception score and precision/recall (torch-fidelity) of a generator or a folder."""
    source = run_or_newest(source)
    import os

    import torch

    from gancli import metrics as M
    from gancli.generate import pick_device

    from gancli.generate import (MAX_BATCH, MAX_METRIC_SAMPLES, check_count, check_memory,
                                 check_seed, generate_shared, image_bytes, join_processes,
                                 latent_bytes, launch_device)

    wanted = M.parse_metrics(metrics)
    check_count(n, "--n", at_least=2, at_most=MAX_METRIC_SAMPLES)
    check_count(batch_size, "--batch-size", at_most=MAX_BATCH)
    if ref_n is not None:
        check_count(ref_n, "--ref-n", at_least=2, at_most=MAX_METRIC_SAMPLES)
    check_seed(seed)
    src = Path(source)
    if not src.exists():
        raise GancliError(f"no such run, checkpoint, file or folder: {source}")
    say = err.print if json_out else out.print
    loaded = None
    if _is_generator_path(src):
        loaded, dev = _load(source, ema, step, launch_device(device))
        # torch-fidelity pulls images batch by batch; the latents are drawn up front
        check_memory(latent_bytes(loaded.spec, n), f"the latents of {n:,} images", "a smaller --n")
        input1 = M.GeneratorInput(loaded.generator, loaded.spec, n, seed)
        count = n
        procs = join_processes(dev)
        if procs.world > 1:
            # Launched as several processes: each makes its share of the same images, the
            # main one measures them (the features are torch-fidelity's, on one process).
            data = loaded.config.data
            check_memory(image_bytes(n, 3, data.image_size), f"{n:,} images", "a smaller --n")
            latents = loaded.spec.sample(n, torch.Generator().manual_seed(seed))
            images = generate_shared(loaded.generator, latents, dev, batch_size)
            if not procs.main:
                return
            input1 = M.TensorImages(images)
    else:
        if ref is None:
            raise GancliError(f"{source} is a folder of images: name the reference with --ref FOLDER")
        dev = pick_device(device)
        input1 = M.FolderFiles(M.image_files(src))
        count = len(input1)
    if ref is not None:
        if Path(ref).is_dir() and _is_generator_path(Path(ref)):
            raise GancliError(f"--ref {ref} is a run; --ref takes a folder of images")
        reference = M.folder_reference(ref, ref_n)
    else:
        reference = M.recipe_reference(loaded.config.data, split, ref_n)
    extractor = feature_extractor or os.environ.get(M.ENV_EXTRACTOR)
    if dev.type == "cpu" and not extractor and count > 500:
        say(f"note: Inception runs at a few images per second on a CPU; {count} images will "
            f"take a while (--device cuda, or a smaller --n)")
    res = M.compute_metrics(input1, reference, wanted, device=dev, batch_size=batch_size,
                            seed=seed, feature_extractor=feature_extractor,
                            inception_weights_path=inception_weights,
                            vgg16_weights_path=vgg16_weights, cache=cache, verbose=verbose)
    record = {"kind": "fid", "input": source, "n": count, "seed": seed,
              "reference": reference.description, **res}
    if loaded is not None:
        record.update(model=loaded.config.model, step=loaded.step, ema=loaded.ema)
        _record_in_run(loaded.path, record)
    if json_out:
        typer.echo(json.dumps(record, sort_keys=True))
        return
    names = {"fid": "FID", "kid": "KID", "kid_std": "KID std", "isc": "Inception score",
             "isc_std": "IS std", "precision": "precision", "recall": "recall",
             "f_score": "F-score"}
    what = (f"{loaded.config.model} step {loaded.step}" + (" (EMA)" if loaded.ema else "")
            if loaded is not None else source)
    rows = [(names[k], f"{res[k]:.4f}" if k != "kid" else f"{res[k]:.5f}")
            for k in names if k in res]
    out.print(_figures_table(f"{what}: {count} samples vs {reference.description}", rows))
    out.print(f"features: {res['feature_extractor']}; reference statistics: "
              f"{res['reference_cache']}", soft_wrap=True)


@app.command()
@friendly
def score(
    run: Optional[str] = typer.Argument(None, help=RUN_HELP),
    n: int = typer.Option(10000, "--n", help="Generated samples."),
    seed: int = typer.Option(0, "--seed"),
    device: Optional[str] = typer.Option(None, "--device", help="cpu, cuda, cuda:1 (default: a GPU if present)."),
    ema: bool = typer.Option(True, "--ema/--no-ema", help="Use the EMA generator when the checkpoint has one."),
    step: Optional[int] = typer.Option(None, "--step", help="Use this checkpoint step of a run."),
    json_out: bool = typer.Option(False, "--json", help="Print one JSON object instead of tables."),
) -> None:
    """Judge samples with the recipe classifier: code accuracy, label agreement, mode coverage."""
    run = run_or_newest(run)
    from gancli.classifier import load_or_train
    from gancli.generate import (MAX_METRIC_SAMPLES, check_count, check_memory, check_seed,
                                 image_bytes, latent_bytes)
    from gancli.generate import join_processes, launch_device
    from gancli.score import check_labelled, score_generator

    check_count(n, "--n", at_least=2, at_most=MAX_METRIC_SAMPLES)
    check_seed(seed)
    say = (lambda s: err.print(s, soft_wrap=True)) if json_out else \
        (lambda s: out.print(s, soft_wrap=True))
    g, dev = _load(run, ema, step, launch_device(device))
    # Launched as several processes, each makes its share of the images; the main one reports.
    procs = join_processes(dev)
    if not procs.main:
        say = lambda s: None  # noqa: E731
    data = g.config.data
    # score holds every image it judges at once
    check_memory(image_bytes(n, data.channels, data.image_size) + latent_bytes(g.spec, n),
                 f"{n:,} images and their latents", "a smaller --n")
    check_labelled(g.config.data)
    if procs.main:   # the main process trains and caches a missing classifier, alone
        clf, info = load_or_train(g.config.data, dev, progress=say)
    procs.barrier()
    if not procs.main:
        clf, info = load_or_train(g.config.data, dev, progress=say)
    say(f"classifier: test accuracy {info['accuracy']:.4f} on {info['test_name']}"
        + (" (cached)" if info.get("cached") else ""))
    res = score_generator(g, n, seed, dev, clf, classifier_info=info)
    if not procs.main:
        return
    _record_in_run(g.path, res)
    if json_out:
        typer.echo(json.dumps(res, sort_keys=True))
        return
    rows = []
    if "code_accuracy" in res:
        rows += [(f"{res['code']} accuracy (one-to-one)", f"{res['code_accuracy']:.4f}"),
                 (f"{res['code']} purity (many-to-one)", f"{res['code_purity']:.4f}")]
    if "label_agreement" in res:
        rows.append(("label agreement", f"{res['label_agreement']:.4f}"))
    rows += [("classifier Fréchet distance", f"{res['classifier_fd']:.4f}"),
             ("smallest class share", f"{res['min_share']:.4f}"),
             ("largest class share", f"{res['max_share']:.4f}"),
             ("classes under 5%", str(res["classes_under_5pct"]))]
    out.print(_figures_table(f"{g.config.model} step {g.step}" + (" (EMA)" if g.ema else "")
                             + f": {n} samples; key figure {res['key_metric']}", rows))
    if "code_table" in res:
        from rich.table import Table

        out.print(f"{res['code']} value -> class (one-to-one match, majority class, share of "
                  f"samples, share the classifier puts in the matched class)", soft_wrap=True)
        table = Table()
        for col in ("code", "class", "majority class", "share of samples", "agreement"):
            table.add_column(col, justify="right")
        for r in res["code_table"]:
            table.add_row(str(r["code"]), str(r["class"]), str(r["majority_class"]),
                          f"{r['share']:.3f}", f"{r['agreement']:.3f}")
        out.print(table)
    out.print("class shares: " + " ".join(f"{i}:{s:.3f}" for i, s in enumerate(res["class_shares"])),
              soft_wrap=True)


# ---------------------------------------------------------------------------- export


@app.command()
@friendly
def export(
    run: Optional[str] = typer.Argument(None, help=RUN_HELP),
    fmt: str = typer.Option("onnx", "--format", "-f", help="onnx (a model for onnxruntime; needs the export extra) or safetensors (the generator file alone, which sample, traverse, interpolate, fid and score take)."),
    output: Optional[str] = typer.Option(None, "--output", help="ONNX only: the image output, uint8 (NCHW, 0..255; the default) or float (NCHW, [-1, 1])."),
    out_path: Optional[str] = typer.Option(None, "--out", "-o", help="Output file (default <run>/export/generator.onnx or .safetensors)."),
    overwrite: bool = typer.Option(False, "--overwrite", help=OVERWRITE_HELP),
    ema: bool = typer.Option(True, "--ema/--no-ema", help="Export the EMA generator when the checkpoint has one."),
    step: Optional[int] = typer.Option(None, "--step", help="Use this checkpoint step of a run."),
) -> None:
    """Export the generator: an ONNX model (checked against torch in onnxruntime) or a generator file."""
    run = run_or_newest(run)
    from gancli import export as E

    explicit = Path(out_path) if out_path else None
    kind = E.check_options(fmt, output, explicit)
    if explicit:
        check_outputs((explicit, False), overwrite=overwrite)
    if fmt == "onnx":
        E.require_onnx()
    g = E.load(run, ema, step)
    target = explicit or default_output(run_root(g.path), "export", f"generator{E.SUFFIX[fmt]}")
    if not explicit:
        check_outputs((target, False), overwrite=True)
    what = f"{g.config.model} step {g.step}" + (" (EMA)" if g.ema else "")
    if fmt == "safetensors":
        res = E.export_safetensors(g, target)
        wrote(res["path"], f"{what}, generator file, {res['bytes']:,} bytes")
        return
    res = E.export_onnx(g, target, kind)
    c, s = g.config.data.channels, g.config.data.image_size
    wrote(res["path"], f"{what}, ONNX opset {E.OPSET}: {', '.join(res['inputs'])} -> image "
                       f"{kind} [batch, {c}, {s}, {s}], {res['bytes']:,} bytes")
    out.print(f"checked in onnxruntime against torch on {res['checked']} random latents "
              f"(batches of {' and '.join(map(str, E.CHECK_BATCHES))}): max abs difference "
              f"{res['max_abs_diff']:.3g}{res['unit']} (tolerance {res['tolerance']:g})",
              soft_wrap=True)


# ---------------------------------------------------------------------------- report


@app.command()
@friendly
def report(
    run: Optional[str] = typer.Argument(None, help="A run directory (default: the newest run under ./runs)."),
    out_path: Optional[str] = typer.Option(None, "--out", "-o", help="Output .html file (default <run>/report.html)."),
    overwrite: bool = typer.Option(False, "--overwrite", help=OVERWRITE_HELP),
    open_page: bool = typer.Option(False, "--open", help="Open the report in the default web browser."),
    device: Optional[str] = typer.Option(None, "--device", help="Where the latest checkpoint's pictures are made: cpu, cuda, cuda:1 (default: a GPU if present)."),
) -> None:
    """One self-contained HTML page about a run: what was trained, curves, samples over time,
    traversals and an interpolation from the latest checkpoint, score and FID results."""
    from gancli.generate import pick_device
    from gancli.report import check_run, write_report

    explicit = Path(out_path) if out_path else None
    if explicit:
        if explicit.suffix.lower() not in (".html", ".htm"):
            raise GancliError(f"--out {explicit}: report writes an .html file")
        check_outputs((explicit, False), overwrite=overwrite)
    if run is None:
        from gancli.checkpoint import newest_run

        run = str(newest_run())
        err.print(escape(f"using the newest run: {run}"), soft_wrap=True)
    run_dir = check_run(run)
    dev = pick_device(device)
    target = explicit or run_dir / "report.html"
    if not explicit:
        check_outputs((target, False), overwrite=True)
    res = write_report(run_dir, target, dev)
    wrote(res["path"], f"{res['pictures']} pictures, {res['bytes'] / 2 ** 20:.1f} MiB, "
                       f"self-contained")
    if open_page:
        import webbrowser

        if not webbrowser.open(res["path"].resolve().as_uri()):
            out.print(escape(f"no web browser found: open {res['path']} yourself"),
                      soft_wrap=True)


def main() -> None:
    app()
