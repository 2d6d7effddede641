"""Pixel work: conforming whole tensors of images to a recipe (center crop, channel count,
antialiased resize), preparing and decoding one image file with PIL the same way, turning network
output back into uint8, and the machine-size helpers (threads, cores, local processes) that the
decoders and loaders share."""

from __future__ import annotations

import dataclasses
import math
import os
import re
import stat
import warnings
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F

from gancli.data.base import ImageData
from gancli.errors import GancliError
from gancli.recipes import DataConfig, parse_background

# PIL warns on images over its own limit; open_image checks every image against MAX_PIXELS
# instead, with the path in the message. A filter set once: catch_warnings is not thread-safe.
warnings.filterwarnings("ignore", message="Image size .* could be decompression bomb DOS attack")

WHITE = (255, 255, 255)
ALPHA_MODES = ("RGBA", "LA", "PA", "RGBa", "La")   # PIL modes that carry an alpha channel
# Refused from the header, before decoding: 2**27 pixels (a 134-megapixel image, larger than any
# camera's) is about 400 MB as RGB. Far beyond it lie files crafted to eat memory.
MAX_PIXELS = 2 ** 27


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
    im = upright(to_8bit(im))
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


def to_8bit(im: Any) -> Any:
    """16-bit, 32-bit integer and float images (PIL modes I;16*, I, F) as 8-bit grey, scaled
    from their true range: PIL's own conversion clips them to 0..255, so a 16-bit scan trains
    as white and a 0..1 float map as black. 16-bit (and I images whose values fit 16 bits, as
    PIL may open 16-bit PNGs) maps 0..65535 to 0..255; wider integers and floats outside 0..1
    are stretched from their minimum to their maximum; floats within 0..1 map to 0..255."""
    if not (im.mode.startswith("I;16") or im.mode in ("I", "F")):
        return im
    a = np.asarray(im).astype(np.float64)
    a = np.where(np.isfinite(a), a, 0.0)       # NaN / inf: no meaningful pixel
    lo, hi = (float(a.min()), float(a.max())) if a.size else (0.0, 0.0)
    if im.mode.startswith("I;16") or (im.mode == "I" and lo >= 0 and hi <= 65535):
        lo, hi = 0.0, 65535.0
    elif im.mode == "F" and lo >= 0 and hi <= 1:
        lo, hi = 0.0, 1.0
    scaled = (a - lo) * (255.0 / (hi - lo)) if hi > lo else np.zeros_like(a)
    out = _from_array(np.clip(np.rint(scaled), 0, 255))
    out.info = dict(im.info)    # keeps the EXIF orientation for upright()
    return out


def upright(im: Any) -> Any:
    """The image turned as its EXIF orientation tag says (camera JPEGs store the sensor's
    rows and a tag); a broken EXIF block leaves the pixels as stored."""
    from PIL import ImageOps
    try:
        return ImageOps.exif_transpose(im)
    except Exception:  # a malformed tag is no reason to lose the picture
        return im


def check_pixels(im: Any, path: str | Path = "") -> None:
    """Refuse an image whose header claims more than :data:`MAX_PIXELS`, before decoding."""
    w, h = im.size
    if w * h > MAX_PIXELS:
        raise GancliError(f"{path or 'image'}: {w}x{h} is {w * h:,} pixels, more than "
                          f"{MAX_PIXELS:,} (refused before decoding)")


def open_image(path: str | Path) -> Any:
    """PIL's lazy open of a regular file (FIFOs and devices would block or stream forever),
    with the pixel count checked from the header. PIL's own bomb check is replaced by
    :func:`check_pixels`: its warning would reach the terminal, its error has no path."""
    from PIL import Image
    if not stat.S_ISREG(os.stat(path).st_mode):
        raise GancliError(f"{path}: not a regular file")
    try:
        im = Image.open(path)
    except Image.DecompressionBombError:
        raise GancliError(f"{path}: more than {MAX_PIXELS:,} pixels (refused before "
                          f"decoding)") from None
    try:
        check_pixels(im, path)
    except GancliError:
        im.close()
        raise
    return im


def decode_file(path: str | Path, size: int, channels: int, crop: int | None = None,
                background: str | tuple[int, int, int] = "white") -> torch.Tensor:
    """Decode one image file with PIL and :func:`prepare_image` it (raises on unreadable files,
    special files and images over :data:`MAX_PIXELS`)."""
    with open_image(path) as im:
        return prepare_image(im, size, channels, crop, background)


def load_rgb(path: str | Path, background: str | tuple[int, int, int] = "white") -> Any:
    """One image file as a full-size RGB PIL image, prepared as training sees it (upright,
    high bit depths scaled, transparency on `background`): the FID reference's decoder."""
    with open_image(path) as im:
        im = upright(to_8bit(im))
        return flatten(im, background) if has_alpha(im) else im.convert("RGB")


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
