"""Data: turn a recipe's data source into uint8 image tensors (+ labels), and draw batches.

Every source yields :class:`ImageData`: images uint8 N x C x H x W on the CPU, optional int64
labels. The training loop never touches PIL: a small set is moved to the device once and batches
are drawn by index (:class:`DeviceBatches`).
"""

from __future__ import annotations

import gzip
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Iterator

import numpy as np
import torch
import torch.nn.functional as F

from gancli.errors import GancliError
from gancli.recipes import DataConfig


@dataclass
class ImageData:
    images: torch.Tensor                 # uint8, N x C x H x W, CPU
    labels: torch.Tensor | None          # int64, N, or None
    num_classes: int                     # 0 when unlabelled
    name: str                            # identifies source, split and resolution (cache keys)
    class_names: list[str] | None = None

    def __len__(self) -> int:
        return int(self.images.shape[0])


Loader = Callable[[DataConfig, str], ImageData]
LOADERS: dict[str, Loader] = {}


def loader(name: str) -> Callable[[Loader], Loader]:
    def deco(fn: Loader) -> Loader:
        LOADERS[name] = fn
        return fn
    return deco


def load_images(cfg: DataConfig, split: str = "train") -> ImageData:
    """Load the data set a recipe names, as uint8 images at the recipe's size and channels."""
    if split not in ("train", "test"):
        raise GancliError(f"unknown split '{split}' (train or test)")
    if cfg.source not in LOADERS:
        raise GancliError(f"unknown data source '{cfg.source}'; known: {', '.join(sorted(LOADERS))}")
    data = LOADERS[cfg.source](cfg, split)
    data = conform(data, cfg)
    if cfg.limit is not None and cfg.limit < len(data):
        data = ImageData(data.images[: cfg.limit],
                         None if data.labels is None else data.labels[: cfg.limit],
                         data.num_classes, f"{data.name}-first{cfg.limit}", data.class_names)
    if len(data) == 0:
        raise GancliError(f"data source '{cfg.source}' ({split}) holds no images")
    return data


def conform(data: ImageData, cfg: DataConfig) -> ImageData:
    """Center-crop, resize and fix the channel count to what the recipe asks for."""
    x = data.images
    if cfg.crop is not None and min(x.shape[-2:]) > cfg.crop:
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
    size_tag = f"{cfg.image_size}px{cfg.channels}c"
    name = data.name if data.name.endswith(size_tag) else f"{data.name}-{size_tag}"
    return ImageData(x.contiguous(), data.labels, data.num_classes, name, data.class_names)


def resize_uint8(x: torch.Tensor, size: int, chunk: int = 4096) -> torch.Tensor:
    """Resize uint8 images with antialiasing, in chunks to bound memory."""
    out = []
    for i in range(0, x.shape[0], chunk):
        y = F.interpolate(x[i: i + chunk].float(), size=(size, size), mode="bilinear",
                          antialias=True, align_corners=False)
        out.append(y.round().clamp(0, 255).to(torch.uint8))
    return torch.cat(out)


# ----------------------------------------------------------------------------- sources


@loader("digits")
def load_digits(cfg: DataConfig, split: str) -> ImageData:
    """scikit-learn's 1,797 8x8 digits (values 0..16), shipped inside its wheel. The last 297
    are the test split."""
    from sklearn.datasets import load_digits as sk_digits

    d = sk_digits()
    imgs = torch.from_numpy((d.images * (255.0 / 16.0)).round().astype(np.uint8)).unsqueeze(1)
    labels = torch.from_numpy(d.target.astype(np.int64))
    sl = slice(0, 1500) if split == "train" else slice(1500, None)
    return ImageData(imgs[sl], labels[sl], 10, f"digits-{split}", [str(i) for i in range(10)])


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


def local_dir(cfg: DataConfig) -> Path | None:
    """The local copy a user named: --data first, then the recipe's environment variable."""
    if cfg.path:
        p = Path(cfg.path).expanduser()
        if not p.is_dir():
            raise GancliError(f"data directory not found: {cfg.path}")
        return p
    if cfg.env and os.environ.get(cfg.env):
        p = Path(os.environ[cfg.env]).expanduser()
        if not p.is_dir():
            raise GancliError(f"data directory not found: {p} (from ${cfg.env})")
        return p
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
            image_key: str | None = None, label_key: str | None = None) -> ImageData:
    """Download (or reuse the HuggingFace cache of) a hub data set with an image column."""
    try:
        import datasets
    except ImportError:  # pragma: no cover - a declared dependency
        raise GancliError("the 'datasets' package is needed to download data") from None
    hint = (f"; supply a local copy with --data DIR" + (f" or ${env}" if env else ""))
    try:
        ds = datasets.load_dataset(hf_id, split=split)
    except Exception as e:  # network, auth, missing split: all end the same way for a user
        first = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
        raise GancliError(f"could not download '{hf_id}' ({first[:160]}){hint}") from None
    cols = ds.column_names
    image_key = image_key or next((c for c in ("image", "img", "pixel_values") if c in cols), None)
    if image_key is None:
        raise GancliError(f"'{hf_id}' has no image column (columns: {', '.join(cols)})")
    label_key = label_key or next((c for c in ("label", "labels", "fine_label") if c in cols), None)
    arrays = [np.asarray(im.convert("RGB") if im.mode not in ("L", "RGB") else im)
              for im in ds[image_key]]
    sizes = {a.shape[:2] for a in arrays}
    if len(sizes) > 1:
        side = min(min(s) for s in sizes)
        from PIL import Image
        arrays = [np.asarray(Image.fromarray(a).resize((side, side), Image.BICUBIC)) for a in arrays]
    x = np.stack(arrays)
    x = x[:, None] if x.ndim == 3 else x.transpose(0, 3, 1, 2)
    labels, num_classes, names = None, 0, None
    if label_key is not None:
        labels = torch.tensor(ds[label_key], dtype=torch.int64)
        feat = ds.features.get(label_key)
        names = list(getattr(feat, "names", []) or []) or None
        num_classes = len(names) if names else int(labels.max()) + 1
    return ImageData(torch.from_numpy(np.ascontiguousarray(x)), labels, num_classes,
                     f"{name}-{split}", names)


@loader("mnist")
def load_mnist(cfg: DataConfig, split: str) -> ImageData:
    d = local_dir(cfg)
    names = [str(i) for i in range(10)]
    if d is not None:
        return load_idx_dir(d, split, "mnist", names)
    return load_hf(cfg.hf_id or "ylecun/mnist", split, "mnist", cfg.env)


# ----------------------------------------------------------------------------- batches


class DeviceBatches:
    """Batches drawn by index from one uint8 tensor that lives on the training device.

    Each epoch is a fresh permutation from (seed, epoch), so a run is reproducible and resumable
    from (epoch, position); each process takes its own slice of every permutation, so ranks see
    different images.
    """

    mode = "device"

    def __init__(self, data: ImageData, batch_size: int, device: torch.device, *, seed: int = 0,
                 rank: int = 0, world_size: int = 1) -> None:
        if len(data) < batch_size * world_size:
            raise GancliError(f"the data set has {len(data)} images, fewer than one batch "
                              f"({batch_size} x {world_size} processes): lower --batch-size")
        self.images = data.images.to(device)
        self.labels = None if data.labels is None else data.labels.to(device)
        self.batch_size, self.device = batch_size, device
        self.seed, self.rank, self.world_size = seed, rank, world_size
        self.steps_per_epoch = len(data) // (batch_size * world_size)
        self.epoch, self.position = 0, 0
        self._perm: torch.Tensor | None = None

    def _permutation(self) -> torch.Tensor:
        g = torch.Generator().manual_seed(self.seed * 1_000_003 + self.epoch)
        perm = torch.randperm(self.images.shape[0], generator=g)
        return perm.to(self.device)

    def __iter__(self) -> Iterator[tuple[torch.Tensor, torch.Tensor | None]]:
        return self

    def __next__(self) -> tuple[torch.Tensor, torch.Tensor | None]:
        if self.position >= self.steps_per_epoch:
            self.epoch, self.position, self._perm = self.epoch + 1, 0, None
        if self._perm is None:
            self._perm = self._permutation()
        per_step = self.batch_size * self.world_size
        start = self.position * per_step + self.rank * self.batch_size
        idx = self._perm[start: start + self.batch_size]
        self.position += 1
        x = self.images.index_select(0, idx).float().div_(127.5).sub_(1.0)
        y = None if self.labels is None else self.labels.index_select(0, idx)
        return x, y

    def state_dict(self) -> dict[str, int]:
        return {"epoch": self.epoch, "position": self.position}

    def load_state_dict(self, state: dict[str, int]) -> None:
        self.epoch, self.position, self._perm = int(state["epoch"]), int(state["position"]), None


def to_uint8(x: torch.Tensor) -> torch.Tensor:
    """Network output in [-1, 1] -> uint8 0..255 (same rounding everywhere)."""
    return ((x.float().clamp(-1, 1) + 1.0) * 127.5).round().to(torch.uint8)
