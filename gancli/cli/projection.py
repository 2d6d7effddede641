"""gancli project and encode: from real images back to latents (optimised, or read by Q)."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Optional

import typer

from gancli.cli.base import (DEVICE_HELP, EMA_HELP, OVERWRITE_HELP, STEP_HELP, app, check_outputs,
                             friendly, load, run_or_newest, run_root, wrote)
from gancli.errors import GancliError

PATHS_HELP = ("Image files or directories of them (read recursively), then optionally RUN: a run "
              "directory, a step directory or a generator file (default: the newest run under "
              "./runs).")


def _is_run(p: Path) -> bool:
    """Whether a path names a run rather than an image or a folder of images."""
    if p.is_file():
        return p.suffix.lower() == ".safetensors"
    return p.is_dir() and ((p / "config.json").is_file() or (p / "checkpoints").is_dir()
                           or (p / "generator.safetensors").is_file())


def _split(paths: list[str]) -> tuple[list[str], Optional[str]]:
    """IMAGE... [RUN]: the last path is the run when it looks like one."""
    if len(paths) > 1 and _is_run(Path(paths[-1])):
        return paths[:-1], paths[-1]
    if len(paths) == 1 and _is_run(Path(paths[0])):
        raise GancliError(f"{paths[0]} is a run: name the image(s) first (IMAGE... [RUN])")
    return paths, None


def _stems(paths: list[Path]) -> list[str]:
    """One plain, distinct output name per input image (its file name's stem, made safe)."""
    seen: dict[str, int] = {}
    names = []
    for p in paths:
        stem = re.sub(r"[^A-Za-z0-9_-]+", "_", p.stem)[:80].strip("_") or "image"
        k = seen.get(stem, 0) + 1
        seen[stem] = k
        names.append(stem if k == 1 else f"{stem}-{k}")
    return names


@app.command()
@friendly
def project(
    paths: list[str] = typer.Argument(..., help=PATHS_HELP, metavar="IMAGE|DIR... [RUN]"),
    starts: int = typer.Option(8, "--starts", help="Starting points optimised at once (the best one wins)."),
    steps: int = typer.Option(300, "--steps", help="Optimisation steps."),
    lr: float = typer.Option(0.05, "--lr", help="Adam's learning rate on the latents."),
    seed: int = typer.Option(0, "--seed", help="Seed of the starting draws."),
    use_q: bool = typer.Option(True, "--q/--no-q", help="InfoGAN: start half the starts' codes from Q's reading of the image."),
    out_dir: Optional[str] = typer.Option(None, "--out", "-o", help="Directory for the results (default RUN/projections)."),
    overwrite: bool = typer.Option(False, "--overwrite", help=OVERWRITE_HELP),
    ema: bool = typer.Option(True, "--ema/--no-ema", help=EMA_HELP),
    step: Optional[int] = typer.Option(None, "--step", help=STEP_HELP),
    device: Optional[str] = typer.Option(None, "--device", help=DEVICE_HELP),
) -> None:
    """Find latents that make the generator redraw each image: writes, per image, NAME.png (the
    original beside the reconstruction), NAME-original.png, NAME-projected.png, NAME.npz (for
    sample --latents) and NAME.json (MSE, PSNR, codes)."""
    from gancli.encode import encode_images, finite, image_paths, read_images
    from gancli.files import write_json
    from gancli.generate import check_seed, save_latents
    from gancli.project import MAX_STARTS, MAX_STEPS, describe
    from gancli.project import project as find
    from gancli.viz import save_grid
    import math

    import torch

    images, run = _split(paths)
    for name, value, top in (("--starts", starts, MAX_STARTS), ("--steps", steps, MAX_STEPS)):
        if not 1 <= value <= top:
            raise GancliError(f"{name} must be from 1 to {top:,}, got {value}")
    if not (math.isfinite(lr) and 0 < lr <= 10):
        raise GancliError(f"--lr must be a number in (0, 10], got {lr:g}")
    check_seed(seed)
    files = image_paths(images, limit=1000)   # each one is optimised: a thousand is hours
    explicit = Path(out_dir) if out_dir else None
    if explicit is not None:
        check_outputs((explicit, True), overwrite=overwrite)
    run = run_or_newest(run)
    g, dev = load(run, ema, step, device)
    spec, data = g.spec, g.config.data
    targets = read_images(files, data.image_size, data.channels, data.crop, data.background)
    D = None
    if use_q and g.config.model == "infogan":
        from gancli.checkpoint import load_discriminator

        try:
            D = load_discriminator(g, dev)
        except GancliError as e:   # a bare generator file: random starts only, said once
            typer.echo(f"note: no Q to start from ({e})", err=True)
    target_dir = explicit or run_root(g.path) / "projections"
    for f, name, x in zip(files, _stems(files), targets):
        reading = encode_images(D, spec, x.unsqueeze(0), dev) if D is not None else None
        p = find(g.generator, spec, x, starts=starts, steps=steps, lr=lr, seed=seed,
                 q_reading=reading, device=dev)
        pair = target_dir / f"{name}.png"
        save_grid(x.unsqueeze(0), target_dir / f"{name}-original.png", nrow=1)
        save_grid(p.image.unsqueeze(0), target_dir / f"{name}-projected.png", nrow=1)
        save_grid(torch.stack([x, p.image]), pair, nrow=2)   # original | reconstruction
        save_latents(target_dir / f"{name}.npz", p.latents)
        write_json(target_dir / f"{name}.json", {
            "image": str(f), "run": str(g.path), "step": g.step, "mse": p.mse,
            "psnr": finite(p.psnr), "codes": describe(p, spec), "latents": f"{name}.npz",
            "starts": starts, "steps": steps, "lr": lr, "seed": seed, "init": p.init,
            "start_mse": p.start_mse})
        psnr = f"{p.psnr:.1f} dB" if math.isfinite(p.psnr) else "exact"
        wrote(pair, f"{f.name}: MSE {p.mse:.5f}, PSNR {psnr}; latents {name}.npz")


@app.command()
@friendly
def encode(
    paths: list[str] = typer.Argument(..., help=PATHS_HELP, metavar="IMAGE|DIR... [RUN]"),
    fmt: str = typer.Option("json", "--format", help="json (default) or csv."),
    out_path: Optional[str] = typer.Option(None, "--out", "-o", help="Write to this file instead of stdout."),
    overwrite: bool = typer.Option(False, "--overwrite", help=OVERWRITE_HELP),
    ema: bool = typer.Option(True, "--ema/--no-ema", help=EMA_HELP),
    step: Optional[int] = typer.Option(None, "--step", help=STEP_HELP),
    device: Optional[str] = typer.Option(None, "--device", help=DEVICE_HELP),
) -> None:
    """InfoGAN's Q as an encoder: per image, each categorical code's probabilities (and most
    probable value) and each continuous code's mean."""
    import json

    from gancli.checkpoint import load_discriminator
    from gancli.encode import as_csv, check_infogan, encode_images, image_paths, read_images, records
    from gancli.files import atomic_path

    if fmt not in ("json", "csv"):
        raise GancliError(f"--format must be json or csv, got {fmt!r}")
    images, run = _split(paths)
    files = image_paths(images)
    target = Path(out_path) if out_path else None
    if target is not None:
        check_outputs((target, False), overwrite=overwrite)
    run = run_or_newest(run)
    g, dev = load(run, ema, step, device)
    check_infogan(g.config.model, "encode")
    D = load_discriminator(g, dev)
    data = g.config.data
    x = read_images(files, data.image_size, data.channels, data.crop, data.background)
    rows = records(files, g.spec, encode_images(D, g.spec, x, dev))
    if fmt == "csv":
        text = as_csv(g.spec, rows)
    else:
        codes = {c.name: ({"kind": "categorical", "size": c.size} if c.categorical
                          else {"kind": "continuous", "low": c.low, "high": c.high})
                 for c in g.spec.codes}
        text = json.dumps({"run": str(g.path), "step": g.step, "codes": codes, "images": rows},
                          indent=2) + "\n"
    if target is None:
        typer.echo(text, nl=False)
        return
    with atomic_path(target) as tmp:
        tmp.write_text(text)
    wrote(target, f"{len(rows)} images")
