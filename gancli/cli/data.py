"""gancli data: what training will see, before training (a grid of prepared images, the counts)."""

from __future__ import annotations

import math
import os
from pathlib import Path
from typing import TYPE_CHECKING, Optional

import typer

from gancli.cli.base import (BACKGROUND_HELP, DATA_HELP, IMAGE_SIZE_HELP, LIMIT_HELP,
                             OVERWRITE_HELP, VENDOR_HELP, app, check_outputs, friendly, out,
                             wrote)
from gancli.errors import GancliError

if TYPE_CHECKING:
    from gancli.data.preview import DataView
    from gancli.recipes import DataConfig

MAX_CLASS_ROWS = 24     # classes listed one per line; the rest are summed up (one screen)


@app.command("data")
@friendly
def data_command(
    recipe: Optional[str] = typer.Option(None, "--recipe", "-r", help="Recipe name or .toml path (default: digits)."),
    data: Optional[str] = typer.Option(None, "--data", help=DATA_HELP),
    split: str = typer.Option("train", "--split", help="train or test."),
    n: int = typer.Option(64, "--n", help="Images in the grid: the first ones training draws."),
    seed: int = typer.Option(0, "--seed", help="The run's --seed, which orders the images (default 0)."),
    limit: Optional[int] = typer.Option(None, "--limit", help=LIMIT_HELP),
    image_size: Optional[int] = typer.Option(None, "--image-size", help=IMAGE_SIZE_HELP),
    background: Optional[str] = typer.Option(None, "--background", help=BACKGROUND_HELP),
    vendor: Optional[str] = typer.Option(None, "--vendor", help=VENDOR_HELP),
    out_path: Optional[str] = typer.Option(None, "--out", "-o", help="The grid, a .png (default runs/data/<recipe>-<split>.png)."),
    overwrite: bool = typer.Option(False, "--overwrite", help=OVERWRITE_HELP),
) -> None:
    """Show what training will see: a grid of images as the loop gets them, and the counts."""
    from gancli.files import safe_name
    from gancli.generate import check_count, check_seed
    from gancli.recipes import resolve_data
    from gancli.viz import MAX_PICTURE_IMAGES, check_picture

    if split not in ("train", "test"):
        raise GancliError(f"--split must be train or test, got '{split}'")
    check_count(n, "--n", at_most=MAX_PICTURE_IMAGES)
    check_seed(seed)
    name, cfg = resolve_data(recipe, {"path": data, "limit": limit, "image_size": image_size,
                                      "background": background, "vendor": vendor})
    nrow = max(1, math.ceil(math.sqrt(n)))
    check_picture(n, nrow, cfg.image_size, "a smaller --n")
    if out_path:
        target = Path(out_path)
        if target.suffix.lower() != ".png":
            raise GancliError(f"--out {target}: data writes a .png grid")
        check_outputs((target, False), overwrite=overwrite)
    else:  # gancli's own preview, replaced each time, as a run's default outputs are
        target = Path("runs") / "data" / safe_name(f"{name}-{split}.png", "output name")
        check_outputs((target, False), overwrite=True)

    from gancli.data.preview import look
    from gancli.viz import save_grid

    view = look(cfg, split, n, seed)
    k = len(view.images)
    save_grid(view.images, target, nrow=max(1, math.ceil(math.sqrt(k))))
    _show(name, cfg, split, view, target, seed)


def _show(recipe: str, cfg: "DataConfig", split: str, view: "DataView", target: Path,
          seed: int) -> None:
    """One screen: what the data set is, how it is prepared and held, its classes and notes."""
    from rich.markup import escape
    from rich.table import Table

    from gancli.recipes import parse_background

    t = Table(box=None, show_header=False, pad_edge=False)
    t.add_column(style="bold")
    t.add_column(overflow="fold")
    src = cfg.source + (f" ({cfg.vendor})" if cfg.vendor else "")
    where = cfg.path or (os.environ.get(cfg.env) if cfg.env else None)
    t.add_row("recipe", escape(f"{recipe}: source {src}" + (f", from {where}" if where else "")))
    t.add_row("data set", escape(f"{view.name}, {split} split"))
    colours = "RGB" if cfg.channels == 3 else "grey"
    bg = cfg.background if parse_background(cfg.background) != (255, 255, 255) else "white"
    t.add_row("images", f"{view.count:,} at {cfg.image_size}x{cfg.image_size}, {colours}"
              + (f", center crop {cfg.crop}" if cfg.crop else "")
              + escape(f", transparency on {bg}"))
    t.add_row("classes", _classes(view.classes))
    t.add_row("skipped", escape("\n".join(view.notes)) if view.notes else "none")
    t.add_row("memory", escape(view.memory))
    out.print(t)
    wrote(target, f"grid of the first {len(view.images)} images of epoch 0 with --seed {seed}, "
                  f"as training draws them")


def _classes(classes: list[tuple[str, int]] | None) -> str:
    from rich.markup import escape

    if classes is None:
        return "none (no labels)"
    total = sum(c for _, c in classes) or 1
    lines = [f"{len(classes)}"]
    for name, c in classes[:MAX_CLASS_ROWS]:
        lines.append(escape(f"  {name}: {c:,} ({100 * c / total:.1f}%)"))
    rest = classes[MAX_CLASS_ROWS:]
    if rest:
        lines.append(f"  ... {len(rest):,} more classes, {sum(c for _, c in rest):,} images")
    return "\n".join(lines)
