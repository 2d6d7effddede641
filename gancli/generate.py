"""Running a loaded generator: batches of latents in, uint8 images out, the same on every call."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch
from torch import nn

from gancli.data import to_uint8
from gancli.errors import GancliError
from gancli.files import atomic_path
from gancli.latent import Latents


def pick_device(name: str | None) -> torch.device:
    if name in (None, "", "auto"):
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        dev = torch.device(name)
    except RuntimeError:
        raise GancliError(f"--device: '{name}' is not a device (cpu, cuda, cuda:1, ...)") from None
    if dev.type == "cuda" and not torch.cuda.is_available():
        raise GancliError(f"--device {name}: no CUDA GPU is available here")
    return dev


@torch.no_grad()
def generate(G: nn.Module, latents: Latents, device: torch.device | str = "cpu",
             batch_size: int = 256) -> torch.Tensor:
    """uint8 N x C x H x W images on the CPU. The generator is in eval mode, so each image depends
    only on its own latents: batching never changes a result."""
    n = latents["z"].shape[0]
    out = []
    for i in range(0, n, batch_size):
        chunk = {k: v[i: i + batch_size].to(device) for k, v in latents.items()}
        out.append(to_uint8(G(chunk)).cpu())
    return torch.cat(out) if out else torch.empty(0, dtype=torch.uint8)


def save_npz(path: str | Path, images: torch.Tensor, latents: Latents) -> Path:
    """images (uint8 N x C x H x W) and every latent array used, named by code."""
    arrays = {"images": images.numpy()}
    for k, v in latents.items():
        arrays[k] = v.cpu().numpy()
    path = Path(path)
    with atomic_path(path) as tmp:
        with open(tmp, "wb") as f:
            np.savez_compressed(f, **arrays)
    return path


def parse_assignments(items: list[str] | None, option: str = "--code") -> list[tuple[str, str]]:
    """'c1=3' -> ('c1', '3'), with one clear line for a malformed item."""
    out = []
    for item in items or []:
        name, sep, value = item.partition("=")
        if not sep or not name.strip() or not value.strip():
            raise GancliError(f"{option} expects NAME=VALUE (e.g. c1=3), got '{item}'")
        out.append((name.strip(), value.strip()))
    return out
