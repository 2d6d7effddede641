"""InfoGAN's Q head read as an encoder: real images in, the codes Q believes made them out.

Q was trained to recover the codes from generated images, so on a real image it says which value
of each categorical code (as probabilities, a softmax over Q's logits) and which continuous code
values (Q's means: the std is fixed at 1 in training) would draw something like it. On MNIST, c1
read this way is an unsupervised digit classifier (benchmarks/encode_mnist.py).
"""

from __future__ import annotations

import csv
import io
import math
from pathlib import Path
from typing import Any, Sequence

import torch
from torch import nn

from gancli.errors import GancliError
from gancli.latent import Latents, LatentSpec

MAX_IMAGES = 100_000     # images one `encode` reads (each is decoded and kept, small)
BATCH = 256


def check_infogan(model: str, command: str) -> None:
    if model != "infogan":
        raise GancliError(f"{command} reads InfoGAN's Q head as an encoder; this run is a "
                          f"{model}, which has none (train infogan)")


def read_q(spec: LatentSpec, q: torch.Tensor) -> dict[str, torch.Tensor]:
    """Split Q's output [B, sum(sizes) + n_continuous] by code, in the spec's order: a
    categorical code's probabilities [B, K] (softmax of its logits), a continuous code's
    mean [B]."""
    out: dict[str, torch.Tensor] = {}
    i = 0
    for c in spec.codes:
        if c.categorical:
            out[c.name] = torch.softmax(q[:, i: i + c.size].float(), dim=1)
            i += c.size
        else:
            out[c.name] = q[:, i].float()
            i += 1
    return out


def to_network(images: torch.Tensor) -> torch.Tensor:
    """uint8 images -> the [-1, 1] floats the networks saw in training."""
    return images.float().div(127.5).sub(1.0)


@torch.no_grad()
def encode_images(D: nn.Module, spec: LatentSpec, images: torch.Tensor,
                  device: torch.device | str = "cpu", batch_size: int = BATCH
                  ) -> dict[str, torch.Tensor]:
    """Q's reading of uint8 images N x C x H x W (at the generator's size and channels), on the
    CPU: {code: probabilities [N, K] or means [N]}. D is in eval mode (BatchNorm's running
    statistics), so each image's reading depends on that image alone."""
    parts: list[dict[str, torch.Tensor]] = []
    for i in range(0, images.shape[0], batch_size):
        x = to_network(images[i: i + batch_size]).to(device)
        _, q = D(x)
        parts.append({k: v.cpu() for k, v in read_q(spec, q).items()})
    return {k: torch.cat([p[k] for p in parts]) for k in parts[0]} if parts else {}


def q_latents(spec: LatentSpec, reading: dict[str, torch.Tensor]) -> Latents:
    """Codes from a reading: each categorical code's most probable value, each continuous
    code's mean (z is not Q's to say)."""
    return {k: (v.argmax(1) if v.dim() == 2 else v) for k, v in reading.items()}


def image_paths(items: Sequence[str | Path], limit: int = MAX_IMAGES) -> list[Path]:
    """Files as given, and a directory's image files (recursive, sorted)."""
    from gancli.data.folders import image_files

    out: list[Path] = []
    for item in items:
        p = Path(item)
        if p.is_dir():
            files, _ = image_files(p)
            if not files:
                raise GancliError(f"{p}: no image files in it")
            out += [p / f for f in files]
        elif p.exists():
            out.append(p)
        else:
            raise GancliError(f"no such image or directory: {p}")
        if len(out) > limit:
            raise GancliError(f"more than {limit:,} images: encode a smaller folder at a time")
    if not out:
        raise GancliError("name at least one image or directory")
    return out


def read_images(paths: Sequence[Path], size: int, channels: int, crop: int | None = None,
                background: str = "white") -> torch.Tensor:
    """Decode each file as training decoded its images (gancli.data.pixels): transparency on
    `background`, the recipe's crop, channels, antialiased resize; uint8 N x C x size x size.
    An unreadable file is one error line naming it."""
    from gancli.data.pixels import decode_file

    out = []
    for p in paths:
        try:
            out.append(decode_file(p, size, channels, crop, background))
        except GancliError:
            raise
        except Exception as e:  # PIL's UnidentifiedImageError, truncated files, OSError
            first = (str(e).strip().splitlines() or [type(e).__name__])[0][:160]
            raise GancliError(f"{p}: not a readable image ({first})") from None
    return torch.stack(out)


def records(paths: Sequence[Path], spec: LatentSpec,
            reading: dict[str, torch.Tensor]) -> list[dict[str, Any]]:
    """One JSON-ready record per image: its path, and per code the probabilities and the most
    probable value, or the mean."""
    rows = []
    for i, p in enumerate(paths):
        r: dict[str, Any] = {"image": str(p)}
        for c in spec.codes:
            v = reading[c.name][i]
            if c.categorical:
                r[c.name] = int(v.argmax())
                r[f"{c.name}_probs"] = [round(float(x), 6) for x in v]
            else:
                r[c.name] = round(float(v), 6)
        rows.append(r)
    return rows


def as_csv(spec: LatentSpec, rows: list[dict[str, Any]]) -> str:
    """image, then per categorical code its value and one column per probability
    (c1_p0 ...), per continuous code its mean."""
    cols = ["image"]
    for c in spec.codes:
        cols += [c.name] + ([f"{c.name}_p{k}" for k in range(c.size)] if c.categorical else [])
    buf = io.StringIO()
    w = csv.writer(buf, lineterminator="\n")
    w.writerow(cols)
    for r in rows:
        line = [r["image"]]
        for c in spec.codes:
            line.append(r[c.name])
            if c.categorical:
                line += r[f"{c.name}_probs"]
        w.writerow(line)
    return buf.getvalue()


def finite(x: float) -> float | None:
    """A figure for JSON: None for inf/nan (JSON has no such numbers)."""
    return x if math.isfinite(x) else None
