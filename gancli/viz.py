"""Pictures: sample grids, traversal sheets, single PNG files and GIFs, from uint8 images.

Limits (README "Limits"): one picture holds at most MAX_COLUMNS columns, MAX_PICTURE_IMAGES
images and MAX_PICTURE_PIXELS pixels; a request past them is refused before any image is made.
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Iterable, Sequence

import numpy as np
import torch
from PIL import Image

from gancli.errors import GancliError
from gancli.files import atomic_dir, atomic_path

MAX_COLUMNS = 1_000              # columns (steps, --nrow) in one picture; frames in one GIF
MAX_PICTURE_IMAGES = 10_000      # images in one grid, traversal or interpolation picture
MAX_PICTURE_PIXELS = 2 ** 28     # 256 megapixels: past this, viewers and PNG readers give up


def _auto_scale(h: int) -> int:
    # Small images (MNIST's 28 px) are enlarged with nearest-neighbour so a grid is legible.
    return max(1, 64 // h)


def picture_shape(n: int, nrow: int, height: int, width: int | None = None, padding: int = 2,
                  scale: int | None = None) -> tuple[int, int]:
    """(height, width) in pixels of the grid `grid` makes of n images of height x width."""
    width = height if width is None else width
    s = _auto_scale(height) if scale is None else scale
    if n == 1:
        return height * s, width * s
    cols = max(1, min(nrow, n))
    rows = math.ceil(n / cols)
    return (height * s + padding) * rows + padding, (width * s + padding) * cols + padding


def check_picture(n: int, nrow: int, image_size: int, fewer: str) -> None:
    """Refuse, before any image is made, a picture past the limits; `fewer` says what to ask
    for instead (e.g. "a smaller --n")."""
    if nrow > MAX_COLUMNS:
        raise GancliError(f"{nrow:,} columns is more than the {MAX_COLUMNS:,} one picture can "
                          f"hold: ask for {fewer}")
    if n > MAX_PICTURE_IMAGES:
        raise GancliError(f"{n:,} images is more than the {MAX_PICTURE_IMAGES:,} one picture can "
                          f"hold: ask for {fewer}")
    h, w = picture_shape(n, nrow, image_size)
    if h * w > MAX_PICTURE_PIXELS:
        raise GancliError(f"a {w:,} x {h:,} px picture is more than the "
                          f"{MAX_PICTURE_PIXELS // 2 ** 20} megapixels one picture may have: "
                          f"ask for {fewer}")


def to_pil(img: torch.Tensor) -> Image.Image:
    """uint8 C x H x W -> PIL image (L for one channel, RGB for three)."""
    arr = img.detach().cpu().numpy()
    if arr.shape[0] == 1:
        return Image.fromarray(arr[0], mode="L")
    return Image.fromarray(np.ascontiguousarray(arr.transpose(1, 2, 0)), mode="RGB")


def grid(images: torch.Tensor, nrow: int, padding: int = 2, scale: int | None = None,
         pad_value: int = 255) -> torch.Tensor:
    """uint8 N x C x H x W -> one uint8 C x H' x W' grid, row-major with `nrow` images per row
    (torchvision's make_grid layout; one image comes back alone, without padding). Built in
    uint8 throughout: no float copy of the images."""
    scale = _auto_scale(images.shape[-2]) if scale is None else scale
    x = images.to(torch.uint8)
    if scale > 1:
        x = x.repeat_interleave(scale, dim=-2).repeat_interleave(scale, dim=-1)
    n, c, h, w = x.shape
    if n == 1:
        return x[0].clone()
    cols = max(1, min(nrow, n))
    rows = math.ceil(n / cols)
    out = torch.full((c, (h + padding) * rows + padding, (w + padding) * cols + padding),
                     pad_value, dtype=torch.uint8)
    for i in range(n):
        r, k = divmod(i, cols)
        top, left = r * (h + padding) + padding, k * (w + padding) + padding
        out[:, top: top + h, left: left + w] = x[i]
    return out


MAX_LABEL_WIDTH = 160            # pixels of a row label; longer names are shortened with "..."


def label_rows(picture: Image.Image, labels: Sequence[str], row_height: int,
               padding: int = 2) -> Image.Image:
    """`picture` (a grid of rows `row_height` pixels high plus `padding`) with a white margin at
    its left holding each row's label, vertically centred on the row: a per-class grid says which
    class each row is without a legend beside it."""
    from PIL import ImageDraw, ImageFont

    font = ImageFont.load_default()
    probe = ImageDraw.Draw(Image.new("L", (1, 1)))

    def width(text: str) -> float:
        return probe.textlength(text, font=font)

    def fit(text: str) -> str:   # shorten until it fits the margin
        if width(text) <= MAX_LABEL_WIDTH:
            return text
        while text and width(text + "...") > MAX_LABEL_WIDTH:
            text = text[:-1]
        return text + "..."

    shown = [fit(t) for t in labels]
    margin = int(max((width(t) for t in shown), default=0)) + 3 * padding
    mode = picture.mode
    out = Image.new(mode, (picture.width + margin, picture.height), 255 if mode == "L" else
                    (255, 255, 255))
    out.paste(picture, (margin, 0))
    draw = ImageDraw.Draw(out)
    ink = 0 if mode == "L" else (0, 0, 0)
    for r, text in enumerate(shown):
        # centred by the text's own box (bitmap fonts take no anchor)
        box = draw.textbbox((0, 0), text, font=font)
        top = padding + r * (row_height + padding) + (row_height - (box[3] - box[1])) // 2
        draw.text((2 * padding, top - box[1]), text, fill=ink, font=font)
    return out


def save_grid(images: torch.Tensor, path: str | Path, nrow: int, scale: int | None = None,
              row_labels: Sequence[str] | None = None) -> Path:
    """Write the grid of `images` as a PNG; `row_labels`, one per row, go in a margin at the
    left (see :func:`label_rows`)."""
    path = Path(path)
    picture = to_pil(grid(images, nrow, scale=scale))
    if row_labels and images.shape[0] > 1:
        s = _auto_scale(images.shape[-2]) if scale is None else scale
        picture = label_rows(picture, row_labels, images.shape[-2] * s)
    with atomic_path(path) as tmp:
        picture.save(tmp, format="PNG")
    return path


def write_image_batches(batches: Iterable[torch.Tensor], directory: str | Path,
                        prefix: str = "") -> int:
    """One PNG per image, at the image's own size (000000.png, 000001.png, ...), from batches
    that arrive one at a time, so memory holds one batch. All go into a temporary directory that
    replaces `directory` as a whole: a failure leaves no partial directory. Returns the count."""
    count = 0
    with atomic_dir(directory) as tmp:
        for batch in batches:
            for img in batch:
                to_pil(img).save(tmp / f"{prefix}{count:06d}.png", format="PNG")
                count += 1
    return count


def save_images(images: torch.Tensor, directory: str | Path, prefix: str = "") -> list[Path]:
    """One PNG per image, at the image's own size: 000000.png, 000001.png, ... The directory is
    written as a whole (see write_image_batches)."""
    directory = Path(directory)
    n = write_image_batches([images], directory, prefix)
    return [directory / f"{prefix}{i:06d}.png" for i in range(n)]


def save_gif(frames: Sequence[torch.Tensor], path: str | Path, duration_ms: int = 120,
             boomerang: bool = True) -> Path:
    """An animation from uint8 C x H x W frames; `boomerang` plays it forward then back."""
    if not 1 <= len(frames) <= MAX_COLUMNS:
        raise GancliError(f"a GIF takes 1 to {MAX_COLUMNS:,} frames, got {len(frames):,}")
    pils = [to_pil(f).convert("RGB") if f.shape[0] == 3 else to_pil(f) for f in frames]
    if boomerang and len(pils) > 2:
        pils = pils + pils[-2:0:-1]
    path = Path(path)
    with atomic_path(path) as tmp:
        pils[0].save(tmp, format="GIF", save_all=True, append_images=pils[1:],
                     duration=duration_ms, loop=0)
    return path


def column_frames(images: torch.Tensor, rows: int, cols: int) -> list[torch.Tensor]:
    """For a rows x cols sheet (row-major), one frame per column: that column's images stacked
    as a vertical strip. The animation then plays what the walked value does to each row."""
    sheet = images.view(rows, cols, *images.shape[1:])
    return [grid(sheet[:, j], nrow=1) for j in range(cols)]
