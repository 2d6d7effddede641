"""Pictures: sample grids, traversal sheets, single PNG files and GIFs, from uint8 images."""

from __future__ import annotations

from pathlib import Path
from typing import Sequence

import numpy as np
import torch
from PIL import Image
from torchvision.utils import make_grid

from gancli.files import atomic_path


def _auto_scale(h: int) -> int:
    # Small images (MNIST's 28 px) are enlarged with nearest-neighbour so a grid is legible.
    return max(1, 64 // h)


def to_pil(img: torch.Tensor) -> Image.Image:
    """uint8 C x H x W -> PIL image (L for one channel, RGB for three)."""
    arr = img.detach().cpu().numpy()
    if arr.shape[0] == 1:
        return Image.fromarray(arr[0], mode="L")
    return Image.fromarray(np.ascontiguousarray(arr.transpose(1, 2, 0)), mode="RGB")


def grid(images: torch.Tensor, nrow: int, padding: int = 2, scale: int | None = None,
         pad_value: int = 255) -> torch.Tensor:
    """uint8 N x C x H x W -> one uint8 C x H' x W' grid, row-major with `nrow` images per row."""
    scale = _auto_scale(images.shape[-2]) if scale is None else scale
    x = images.float() / 255.0
    if scale > 1:
        x = torch.nn.functional.interpolate(x, scale_factor=scale, mode="nearest")
    g = make_grid(x, nrow=max(1, nrow), padding=padding, pad_value=pad_value / 255.0)
    g = (g * 255.0).round().clamp(0, 255).to(torch.uint8)
    return g[:1] if images.shape[1] == 1 else g


def save_grid(images: torch.Tensor, path: str | Path, nrow: int, scale: int | None = None) -> Path:
    path = Path(path)
    with atomic_path(path) as tmp:
        to_pil(grid(images, nrow, scale=scale)).save(tmp, format="PNG")
    return path


def save_images(images: torch.Tensor, directory: str | Path, prefix: str = "") -> list[Path]:
    """One PNG per image, at the image's own size: 000000.png, 000001.png, ..."""
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    paths = []
    for i, img in enumerate(images):
        p = directory / f"{prefix}{i:06d}.png"
        with atomic_path(p) as tmp:
            to_pil(img).save(tmp, format="PNG")
        paths.append(p)
    return paths


def save_gif(frames: Sequence[torch.Tensor], path: str | Path, duration_ms: int = 120,
             boomerang: bool = True) -> Path:
    """An animation from uint8 C x H x W frames; `boomerang` plays it forward then back."""
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
