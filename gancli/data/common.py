"""Helpers several data sources share: the IDX format MNIST and Fashion-MNIST ship in
(:func:`read_idx`, :func:`find_idx`, :func:`load_idx_dir`) and the HuggingFace hub loader
(:func:`load_hf`, which decodes a :mod:`gancli.data.hub` index into memory, with
:func:`hub_offline_reason` to fail fast without a network)."""

from __future__ import annotations

import gzip
import socket
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any
from urllib.parse import urlparse

import numpy as np
import torch

from gancli.data.base import ImageData
from gancli.data.pixels import _threads, flatten, has_alpha, prepare_image, to_8bit, upright
from gancli.errors import GancliError
from gancli.recipes import DataConfig


IDX_FILES = {
    "train": ("train-images-idx3-ubyte", "train-labels-idx1-ubyte"),
    "test": ("t10k-images-idx3-ubyte", "t10k-labels-idx1-ubyte"),
}


def read_idx(path: Path) -> np.ndarray:
    """Read an IDX file (gzip or raw): the format MNIST and Fashion-MNIST ship in."""
    opener = gzip.open if path.suffix == ".gz" else open
    try:
        with opener(path, "rb") as f:
            raw = f.read()
    except (OSError, EOFError) as e:
        raise GancliError(f"cannot read IDX file {path}: {e}") from None
    if len(raw) < 4 or raw[0] != 0 or raw[1] != 0 or raw[2] != 0x08:
        raise GancliError(f"{path} is not an IDX file of unsigned bytes")
    ndim = raw[3]
    dims = [int.from_bytes(raw[4 + 4 * i: 8 + 4 * i], "big") for i in range(ndim)]
    body = np.frombuffer(raw, dtype=np.uint8, offset=4 + 4 * ndim)
    if body.size != int(np.prod(dims)):
        raise GancliError(f"{path} is truncated: expected {int(np.prod(dims))} values, "
                          f"found {body.size}")
    return body.reshape(dims)


def find_idx(directory: Path, stem: str) -> Path | None:
    for sub in (directory, directory / "raw"):
        for name in (stem + ".gz", stem):
            if (sub / name).is_file():
                return sub / name
    return None


def load_idx_dir(directory: Path, split: str, name: str, class_names: list[str]) -> ImageData:
    img_stem, lbl_stem = IDX_FILES[split]
    img_path, lbl_path = find_idx(directory, img_stem), find_idx(directory, lbl_stem)
    if img_path is None or lbl_path is None:
        missing = img_stem if img_path is None else lbl_stem
        raise GancliError(f"{directory} has no {missing}[.gz] (expected MNIST-style IDX files)")
    imgs, labels = read_idx(img_path), read_idx(lbl_path)
    if imgs.ndim != 3 or labels.ndim != 1 or len(imgs) != len(labels):
        raise GancliError(f"{directory}: image and label files do not match")
    return ImageData(torch.from_numpy(imgs.copy()).unsqueeze(1),
                     torch.from_numpy(labels.astype(np.int64)), len(class_names),
                     f"{name}-{split}", class_names)


def load_hf(hf_id: str, split: str, name: str, env: str | None,
            image_key: str | None = None, label_key: str | None = None, *,
            cfg: DataConfig | None = None, hint: str | None = None) -> ImageData:
    """Download (or reuse the HuggingFace cache of) a hub data set with an image column, and
    decode it into memory (:func:`gancli.data.hub.open_hub`, then :meth:`HubIndex.decode`).

    With `cfg`, each image is cropped, converted and resized as it is decoded
    (:func:`prepare_image`), so a set of large images never sits in memory at full size.
    `hint` replaces the default advice on supplying a local copy when the download fails.
    """
    from gancli.data.hub import open_hub   # hub builds on this module

    return open_hub(hf_id, split, name, env, image_key, label_key, hint=hint).decode(cfg)


def hub_offline_reason(hf_id: str) -> str | None:
    """Why downloading `hf_id` cannot work, when that is certain: no cached copy, and the hub's
    host name does not resolve. Spares the user a minute of retries. None: just try."""
    try:
        import datasets.config as dc
        import huggingface_hub.constants as hc

        if (Path(hc.HF_HUB_CACHE) / f"datasets--{hf_id.replace('/', '--')}").exists() or \
                (Path(dc.HF_DATASETS_CACHE) / hf_id.replace("/", "___")).exists():
            return None
        host = urlparse(hc.ENDPOINT).hostname or "huggingface.co"
    except Exception:  # another layout of these packages: let load_dataset decide
        return None
    try:
        socket.getaddrinfo(host, 443)
    except OSError:
        return f"no network: cannot resolve {host}"
    return None


def _hf_images(ds: Any, image_key: str, cfg: DataConfig | None, chunk: int = 2048) -> torch.Tensor:
    """The image column as uint8 N x C x H x W, decoded a chunk at a time."""
    if cfg is not None:
        out = torch.empty((len(ds), cfg.channels, cfg.image_size, cfg.image_size),
                          dtype=torch.uint8)
        with ThreadPoolExecutor(max_workers=_threads()) as pool:
            for start in range(0, len(ds), chunk):
                ims = ds[start: start + chunk][image_key]
                prep = pool.map(lambda im: prepare_image(im, cfg.image_size, cfg.channels,
                                                         cfg.crop, cfg.background), ims)
                for k, t in enumerate(prep):
                    out[start + k] = t
        return out
    # No recipe to conform to (MNIST's grey digits, conformed later): transparency still goes
    # on white, the default background, rather than being dropped.
    # High bit depths scaled, not clipped; EXIF orientation applied, as for files.
    ims = [upright(to_8bit(im)) for im in ds[image_key]]
    arrays = [np.asarray(flatten(im) if has_alpha(im) else
                         im.convert("RGB") if im.mode not in ("L", "RGB") else im)
              for im in ims]
    sizes = {a.shape[:2] for a in arrays}
    if len(sizes) > 1:
        side = min(min(s) for s in sizes)
        from PIL import Image
        arrays = [np.asarray(Image.fromarray(a).resize((side, side), Image.BICUBIC)) for a in arrays]
    x = np.stack(arrays)
    x = x[:, None] if x.ndim == 3 else x.transpose(0, 3, 1, 2)
    return torch.from_numpy(np.ascontiguousarray(x))
