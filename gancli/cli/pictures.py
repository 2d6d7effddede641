"""gancli sample, traverse and interpolate: pictures of what a generator learned."""

from __future__ import annotations

from pathlib import Path
from typing import Optional

import typer

from gancli.cli.base import (DEVICE_HELP, EMA_HELP, OVERWRITE_HELP, RUN_HELP, STEP_HELP, app,
                             check_outputs, default_output, fix_codes, friendly, load,
                             run_or_newest, run_root, wrote)
from gancli.errors import GancliError


TRUNCATION_HELP = ("The truncation trick: draw the noise z closer to its mean, z = psi * z (0 < psi <= 2; "
                   "below 1 trades diversity for typical images). Codes and labels are left as drawn.")
LATENTS_HELP = ("A .npz of latents (from --save-latents, `sample --out x.npz` or `gancli project`): "
                "exactly these inputs, one image per row; --code/--label/--truncation still apply on top.")


def _npz_option(value: Optional[str], option: str) -> Optional[Path]:
    if value is None:
        return None
    path = Path(value)
    if path.suffix.lower() != ".npz":
        raise GancliError(f"{option} {path}: name a .npz file")
    return path


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
    n: Optional[int] = typer.Option(None, "--n", help="Number of images (default 64; with --latents, the file's rows)."),
    seed: int = typer.Option(0, "--seed"),
    code: Optional[list[str]] = typer.Option(None, "--code", help="Fix a code: NAME=VALUE (repeatable), e.g. c1=3, c2=-1.5, z7=0."),
    truncation: float = typer.Option(1.0, "--truncation", help=TRUNCATION_HELP),
    latents_in: Optional[str] = typer.Option(None, "--latents", help=LATENTS_HELP),
    save_latents_to: Optional[str] = typer.Option(None, "--save-latents", help="Also write the latents used to this .npz (what --latents reads back)."),
    label: Optional[str] = typer.Option(None, "--label", help="Conditional models: the class to draw, a number or a class name (case-insensitive; a unique prefix will do), e.g. 3 or \"Flags\" (same as --code label=...)."),
    per_class: bool = typer.Option(False, "--per-class", help="Conditional models: one class per row (named at the left when the checkpoint knows the names)."),
    out_path: Optional[str] = typer.Option(None, "--out", "-o", help="a .png grid, a .npz, or a directory of PNG files."),
    overwrite: bool = typer.Option(False, "--overwrite", help=OVERWRITE_HELP),
    nrow: Optional[int] = typer.Option(None, "--nrow", help="Images per grid row."),
    ema: bool = typer.Option(True, "--ema/--no-ema", help=EMA_HELP),
    step: Optional[int] = typer.Option(None, "--step", help=STEP_HELP),
    device: Optional[str] = typer.Option(None, "--device", help=DEVICE_HELP),
) -> None:
    """Draw samples: a grid (.png), single files (a directory) or images + latents (.npz)."""
    run = run_or_newest(run)
    import math

    import torch

    from gancli.generate import (MAX_FILES, check_count, check_memory, check_seed, generate,
                                 generate_batches, image_bytes, latent_bytes, load_latents,
                                 parse_assignments, save_latents, save_npz)
    from gancli.latent import check_truncation, name_list, truncate
    from gancli.viz import MAX_COLUMNS, check_picture, save_grid, write_image_batches

    check_truncation(truncation)
    latents_file = _npz_option(latents_in, "--latents")
    save_to = _npz_option(save_latents_to, "--save-latents")
    if latents_file is not None and (n is not None or per_class):
        raise GancliError("--latents holds the images' latents, one row per image: drop "
                          + ("--n" if n is not None else "--per-class"))
    if n is not None:
        check_count(n, "--n", at_most=MAX_FILES)
    n = 64 if n is None else n
    if nrow is not None:
        check_count(nrow, "--nrow", at_most=MAX_COLUMNS)
    check_seed(seed)
    explicit = Path(out_path) if out_path else None
    kind = _sample_kind(explicit) if explicit else "png"
    if explicit:  # fail fast: before the checkpoint is even read
        check_outputs((explicit, kind == "dir"), overwrite=overwrite)
    if save_to is not None:
        if explicit is not None and save_to.resolve() == explicit.resolve():
            raise GancliError(f"--save-latents {save_to}: the same file as --out; name another")
        check_outputs((save_to, False), overwrite=overwrite)
    g, dev = load(run, ema, step, device)
    spec, data = g.spec, g.config.data
    loaded = load_latents(latents_file, spec) if latents_file is not None else None
    if loaded is not None:
        n = loaded["z"].shape[0]
    lc = spec.label_code
    if per_class and lc is None:
        raise GancliError(f"--per-class needs a conditional model; {g.config.model} has no labels")
    if label is not None and lc is None:
        raise GancliError(f"--label needs a conditional model; {g.config.model} has no labels")
    if per_class and (label is not None
                      or any(k == lc.name for k, _ in parse_assignments(code, "--code"))):
        # the label would overwrite every row's class, and the rows' names would lie
        raise GancliError(f"--per-class draws every class, one per row: drop --label / --code "
                          f"{lc.name}=..., or drop --per-class to draw one class")
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
    stem = "sample-latents" if loaded is not None else f"sample-seed{seed}"
    target = explicit or default_output(run_root(g.path), "samples", f"{stem}-n{count}.png")
    if not explicit:
        check_outputs((target, False), overwrite=True)

    gen = torch.Generator().manual_seed(seed)
    if per_class:
        latents = spec.traversal(lc.name, cols, torch.arange(lc.size), gen)
        # traversal is row-major over noise draws; transpose so each row is one class
        order = torch.arange(lc.size * cols).view(cols, lc.size).t().reshape(-1)
        latents = {k: v[order] for k, v in latents.items()}
    elif loaded is not None:
        latents = loaded
    else:
        latents = spec.sample(n, gen)
    # before --code, so a fixed noise dimension (z7=0) keeps the value given
    latents = truncate(latents, truncation)
    latents = fix_codes(spec, latents, code)
    if label is not None:   # after --code, so --label wins as it did
        value = spec.parse_value(lc.name, label, what=f"--label {label}")   # a number or a name
        latents = spec.fix(latents, lc.name, value)
    if save_to is not None:
        wrote(save_latents(save_to, latents), f"the latents of {count} images")
    if kind == "dir":  # streamed: one batch of images in memory at a time
        written = write_image_batches(generate_batches(g.generator, latents, dev), target)
        wrote(target, f"{written} PNG files")
        return
    images = generate(g.generator, latents, dev)
    if kind == "npz":
        wrote(save_npz(target, images, latents), f"{len(images)} images + latents")
    elif per_class and nrow is None and lc.value_names:
        # one row per class: each row's class name in a margin at its left
        wrote(save_grid(images, target, nrow=row, row_labels=list(lc.value_names)),
              f"grid of {len(images)}, one row per class: {name_list(lc.value_names)}")
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
    rows: Optional[int] = typer.Option(None, "--rows", help="Noise draws, one per row, held fixed across the row (default 8)."),
    fix: Optional[list[str]] = typer.Option(None, "--fix", help="Hold another code at a value: NAME=VALUE (repeatable)."),
    seed: int = typer.Option(0, "--seed"),
    truncation: float = typer.Option(1.0, "--truncation", help=TRUNCATION_HELP),
    latents_in: Optional[str] = typer.Option(None, "--latents", help="A .npz of latents (see sample --latents): one row of the sheet per row of the file, instead of --rows draws."),
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

    from gancli.generate import check_count, check_seed, generate, load_latents
    from gancli.latent import check_truncation, truncate
    from gancli.viz import (MAX_COLUMNS, MAX_PICTURE_IMAGES, check_picture, column_frames,
                            save_gif, save_grid)

    check_truncation(truncation)
    latents_file = _npz_option(latents_in, "--latents")
    if latents_file is not None and rows is not None:
        raise GancliError("--latents gives the rows, one per row of the file: drop --rows")
    if rows is not None:
        check_count(rows, "--rows", at_most=MAX_PICTURE_IMAGES)
    rows = 8 if rows is None else rows
    check_count(steps, "--steps", at_least=2, at_most=MAX_COLUMNS)
    check_seed(seed)
    explicit = Path(out_path) if out_path else None
    if explicit:
        if explicit.suffix.lower() != ".png":
            raise GancliError(f"--out {explicit}: traverse writes a .png")
        check_outputs((explicit, False), *([(explicit.with_suffix(".gif"), False)] if gif else []),
                      overwrite=overwrite)
    g, dev = load(run, ema, step, device)
    spec = g.spec
    spec.check_name(code)
    values = spec.traversal_values(code, steps, value_range)
    base = load_latents(latents_file, spec) if latents_file is not None else None
    if base is not None:
        rows = base["z"].shape[0]
        check_count(rows, "--latents (its rows)", at_most=MAX_PICTURE_IMAGES)
    fewer = "fewer --rows or --steps"
    check_picture(rows * len(values), len(values), g.config.data.image_size, fewer)
    tag = "latents" if base is not None else f"seed{seed}"
    target = explicit or default_output(run_root(g.path), "traversals", f"{code}-{tag}.png")
    if not explicit:
        check_outputs((target, False), *([(target.with_suffix(".gif"), False)] if gif else []),
                      overwrite=True)
    if base is not None:   # each row of the file held across one row of the sheet
        latents = {k: v.repeat_interleave(len(values), dim=0) for k, v in base.items()}
    else:
        latents = spec.traversal(code, rows, values, torch.Generator().manual_seed(seed))
    latents = truncate(latents, truncation)   # before --fix and the walk: their values stay
    latents = fix_codes(spec, latents, fix, "--fix")
    latents = spec.fix(latents, code, values.repeat(rows))  # --fix must not override the walk
    images = generate(g.generator, latents, dev)
    wrote(save_grid(images, target, nrow=len(values)),
          f"{rows} rows x {len(values)} values of {code}: "
          + ", ".join(f"{v:g}" for v in values.tolist()))
    if gif:
        wrote(save_gif(column_frames(images, rows, len(values)), target.with_suffix(".gif")), "animation")


# ---------------------------------------------------------------------------- info


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
    truncation: float = typer.Option(1.0, "--truncation", help=TRUNCATION_HELP),
    latents_in: Optional[list[str]] = typer.Option(None, "--latents", help="Walk between two .npz latents files instead of seeds: --latents A.npz --latents B.npz (row r of A to row r of B; e.g. two `gancli project` results)."),
    gif: bool = typer.Option(False, "--gif", help="Also write an animation beside the output, one frame per step."),
    out_path: Optional[str] = typer.Option(None, "--out", "-o", help="Output .png (one row per pair) or .npz (images + latents); default <run>/interpolations/seedA-seedB-METHOD.png."),
    overwrite: bool = typer.Option(False, "--overwrite", help=OVERWRITE_HELP),
    ema: bool = typer.Option(True, "--ema/--no-ema", help=EMA_HELP),
    step: Optional[int] = typer.Option(None, "--step", help=STEP_HELP),
    device: Optional[str] = typer.Option(None, "--device", help=DEVICE_HELP),
) -> None:
    """Walk the latent space from one seed's draw to another's: a strip per pair of seeds."""
    run = run_or_newest(run)
    import torch

    from gancli.generate import (check_count, check_memory, generate, image_bytes, latent_bytes,
                                 load_latents, save_npz)
    from gancli.latent import check_truncation, truncate
    from gancli.latent import interpolate as walk_between
    from gancli.viz import (MAX_COLUMNS, MAX_PICTURE_IMAGES, check_picture, column_frames,
                            save_gif, save_grid)

    if method not in ("slerp", "lerp"):
        raise GancliError(f"--method must be slerp or lerp, got '{method}'")
    check_count(steps, "--steps", at_least=2, at_most=MAX_COLUMNS)
    check_truncation(truncation)
    files = [_npz_option(f, "--latents") for f in latents_in or []]
    if files and len(files) != 2:
        raise GancliError(f"--latents takes two files, the start and the end (--latents A.npz "
                          f"--latents B.npz), got {len(files)}")
    if files and (seeds or rows is not None):
        raise GancliError("--latents A.npz --latents B.npz replace --seeds and --rows: drop them")
    pairs = _seed_pairs(seeds, rows)
    explicit = Path(out_path) if out_path else None
    if explicit:
        if explicit.suffix.lower() not in (".png", ".npz"):
            raise GancliError(f"--out {explicit}: interpolate writes a .png or a .npz")
        check_outputs((explicit, False), *([(explicit.with_suffix(".gif"), False)] if gif else []),
                      overwrite=overwrite)
    g, dev = load(run, ema, step, device)
    spec, data = g.spec, g.config.data
    ends = [load_latents(f, spec) for f in files]
    if ends:
        if ends[0]["z"].shape[0] != ends[1]["z"].shape[0]:
            raise GancliError(f"--latents: {files[0]} has {ends[0]['z'].shape[0]:,} rows and "
                              f"{files[1]} {ends[1]['z'].shape[0]:,}: row r walks to row r, so "
                              f"they must match")
        check_count(ends[0]["z"].shape[0], "--latents (rows)", at_most=MAX_PICTURE_IMAGES)
        pairs = [(0, 0)] * ends[0]["z"].shape[0]   # one row per pair; the seeds are unused
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
    name = (f"latents-{method}" if ends else f"seed{a}-seed{b}-{method}") + \
        (f"-{len(pairs)}rows" if len(pairs) > 1 else "")
    target = explicit or default_output(run_root(g.path), "interpolations", f"{name}.png")
    if not explicit:
        check_outputs((target, False), *([(target.with_suffix(".gif"), False)] if gif else []),
                      overwrite=True)

    def draws(which: int) -> dict:
        # The same draw as `sample --n 1 --seed S`, one row per pair.
        if ends:
            return fix_codes(spec, truncate(ends[which], truncation), fix, "--fix")
        rows_ = [spec.sample(1, torch.Generator().manual_seed(p[which])) for p in pairs]
        drawn = {k: torch.cat([r[k] for r in rows_]) for k in rows_[0]}
        return fix_codes(spec, truncate(drawn, truncation), fix, "--fix")

    latents = walk_between(spec, draws(0), draws(1), steps, method, walk)
    images = generate(g.generator, latents, dev)
    what = (f"{len(pairs)} row{'s' if len(pairs) > 1 else ''} x {steps} steps, {method}: "
            + (f"{files[0]} -> {files[1]}" if ends else
               "seeds " + ", ".join(f"{p}->{q}" for p, q in pairs)))
    if target.suffix.lower() == ".npz":
        wrote(save_npz(target, images, latents), what)
    else:
        wrote(save_grid(images, target, nrow=steps), what)
    if gif:
        wrote(save_gif(column_frames(images, len(pairs), steps), target.with_suffix(".gif")),
              "animation")


# ---------------------------------------------------------------------------- fid / score
