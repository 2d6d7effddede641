"""Pixel work: conforming whole tensors of images to a recipe (center crop, channel count,
antialiased resize), preparing and decoding one image file with PIL the same way, turning network
output back into uint8, and the machine-size helpers (threads, cores, local processes) that the
decoders and loaders share."""

from __future__ import annotations

import dataclasses
import math
import os
import re
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F

from gancli.data.base import ImageData
from gancli.errors import GancliError
from gancli.recipes import DataConfig, parse_background

WHITE = (255, 255, 255)
ALPHA_MODES = ("RGBA", "LA", "PA", "RGBa", "La")   # PIL modes that carry an alpha channel


def _size_tag(cfg: DataConfig, cropped: bool, decoded: bool = True) -> str:
    """The part of a data set's name that says how its pixels were made: crop, size, channels
    and, for images decoded here (`decoded`: files, hub images, which may hold transparency),
    a background other than white. White adds nothing, so names from before the setting stay
    the same; tensors from IDX or CIFAR files have no alpha, so their names never carry it."""
    tag = (f"crop{cfg.crop}-" if cropped else "") + f"{cfg.image_size}px{cfg.channels}c"
    rgb = parse_background(cfg.background)
    if decoded and rgb != WHITE:
        tag += "-bg%02x%02x%02x" % rgb
    return tag


def conform(data: ImageData, cfg: DataConfig) -> ImageData:
    """Center-crop, resize and fix the channel count to what the recipe asks for."""
    x = data.images
    cropped = cfg.crop is not None and min(x.shape[-2:]) > cfg.crop
    if cropped:
        h, w = x.shape[-2:]
        top, left = (h - cfg.crop) // 2, (w - cfg.crop) // 2
        x = x[..., top: top + cfg.crop, left: left + cfg.crop]
    if x.shape[1] != cfg.channels:
        if x.shape[1] == 1 and cfg.channels == 3:
            x = x.expand(-1, 3, -1, -1)
        elif x.shape[1] == 3 and cfg.channels == 1:
            w = torch.tensor([0.299, 0.587, 0.114]).view(1, 3, 1, 1)
            x = (x.float() * w).sum(1, keepdim=True).round().clamp(0, 255).to(torch.uint8)
        else:
            raise GancliError(f"cannot turn {x.shape[1]}-channel images into {cfg.channels} channels")
    if tuple(x.shape[-2:]) != (cfg.image_size, cfg.image_size):
        x = resize_uint8(x, cfg.image_size)
    # Images decoded file by file were cropped already: their name carries the tag.
    tag = _size_tag(cfg, cropped, decoded=False)
    done = re.search(rf"{cfg.image_size}px{cfg.channels}c(-bg[0-9a-f]{{6}})?$", data.name)
    name = data.name if done else f"{data.name}-{tag}"
    return dataclasses.replace(data, images=x.contiguous(), name=name)


def resize_uint8(x: torch.Tensor, size: int, chunk: int = 4096) -> torch.Tensor:
    """Resize uint8 images with antialiasing, in chunks to bound memory."""
    out = []
    for i in range(0, x.shape[0], chunk):
        y = F.interpolate(x[i: i + chunk].float(), size=(size, size), mode="bilinear",
                          antialias=True, align_corners=False)
        out.append(y.round().clamp(0, 255).to(torch.uint8))
    return torch.cat(out)


# ----------------------------------------------------------------------------- one image


def prepare_image(im: Any, size: int, channels: int, crop: int | None = None,
                  background: str | tuple[int, int, int] = "white") -> torch.Tensor:
    """A PIL image -> uint8 channels x size x size.

    Transparency composited onto `background` (:func:`flatten`), the recipe's center crop (when
    the image is larger than it), a center square crop, the channel count (PIL's L conversion
    uses the same ITU-R 601 weights as :func:`conform`), then the antialiased resize of
    :func:`resize_uint8`, so files and tensors end up alike.
    """
    w, h = im.size
    side = crop if crop and min(w, h) > crop else min(w, h)
    if side >= 4 * size:
        # JPEG can decode at 1/2, 1/4 or 1/8 scale for a fraction of the work. Keep the square at
        # least twice the output size, so the antialiased resize below still does the filtering.
        target = 2 * size
        box = im.draft(None, (math.ceil(w * target / side), math.ceil(h * target / side)))
        if box is not None and im.size != (w, h):
            side = max(target, int(side * im.size[0] / w))
    mode = "L" if channels == 1 else "RGB"
    if im.mode.startswith("I;16"):                      # 16-bit grey: keep the top 8 bits
        im = _from_array(np.asarray(im, dtype=np.uint16) >> 8)
    if has_alpha(im):
        im = flatten(im, background)
    if im.mode != mode:
        im = im.convert(mode)
    a = np.asarray(im)
    x = torch.from_numpy(a.copy())
    x = x.unsqueeze(0) if x.ndim == 2 else x.permute(2, 0, 1)
    h, w = x.shape[-2:]
    s = min(side, h, w)
    top, left = (h - s) // 2, (w - s) // 2
    x = x[:, top: top + s, left: left + s]
    if s != size:
        x = resize_uint8(x.unsqueeze(0), size)[0]
    return x.contiguous()


def has_alpha(im: Any) -> bool:
    """Whether a PIL image has transparent pixels to composite: an alpha channel, or a
    transparent palette entry or colour key (PNG's tRNS, GIF's transparent index), or a palette
    of RGBA colours (a P image built in memory)."""
    if im.mode in ALPHA_MODES or "transparency" in im.info:
        return True
    palette = getattr(im, "palette", None) if im.mode == "P" else None
    return palette is not None and palette.mode == "RGBA"


def flatten(im: Any, background: str | tuple[int, int, int] = "white") -> Any:
    """An RGB PIL image: `im` composited over an opaque `background` (a name or #rrggbb, or an
    RGB tuple). Without this, converting to RGB or L drops alpha, and every transparent pixel
    trains as whatever colour it happens to store (black in most emoji files).

    Each pixel becomes round((c * a + bg * (255 - a)) / 255) per channel: opaque pixels keep
    their colour exactly, fully transparent ones take the background's. Premultiplied modes
    (RGBa, La) are un-premultiplied first, by PIL's conversion to RGBA.
    """
    rgb = parse_background(background) if isinstance(background, str) else tuple(background)
    if im.mode == "La":                  # PIL converts La only to LA
        im = im.convert("LA")
    # uint16 holds c * a + bg * (255 - a) + 127 <= 65,152: half the memory of int32.
    a = np.asarray(im.convert("RGBA"), dtype=np.uint16)
    alpha = a[..., 3:]
    bg = np.asarray(rgb, dtype=np.uint16).reshape(1, 1, 3)
    out = (a[..., :3] * alpha + bg * (255 - alpha) + 127) // 255
    from PIL import Image
    return Image.fromarray(out.astype(np.uint8), mode="RGB")


def _from_array(a: np.ndarray) -> Any:
    from PIL import Image
    return Image.fromarray(a.astype(np.uint8))


def decode_file(path: str | Path, size: int, channels: int, crop: int | None = None,
                background: str | tuple[int, int, int] = "white") -> torch.Tensor:
    """Decode one image file with PIL and :func:`prepare_image` it (raises on unreadable files)."""
    from PIL import Image
    with Image.open(path) as im:
        return prepare_image(im, size, channels, crop, background)


def _threads() -> int:
    return max(1, min(32, 2 * _cpus()))


def _cpus() -> int:
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # pragma: no cover - not Linux
        return os.cpu_count() or 1


def _local_processes() -> int:
    # Launchers (torchrun, accelerate) say how many processes share this machine.
    try:
        return max(1, int(os.environ.get("LOCAL_WORLD_SIZE", "1")))
    except ValueError:
        return 1


def to_uint8(x: torch.Tensor) -> torch.Tensor:
    """Network output in [-1, 1] -> uint8 0..255 (same rounding everywhere)."""
    return ((x.float().clamp(-1, 1) + 1.0) * 127.5).round().to(torch.uint8)
