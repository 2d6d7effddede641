"""Data source `cifar10`: CIFAR-10's binary version or a folder of images in class subfolders
(from --data DIR), else a HuggingFace download (read lazily from its Arrow files when large). Its
python (pickle) version is refused."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch

from gancli.data.base import ImageData
from gancli.data.folders import FileIndex, decode_all, index_folder, local_dir
from gancli.data.hub import HubIndex, open_hub
from gancli.data.registry import folder_index, loader
from gancli.errors import GancliError
from gancli.recipes import DataConfig


CIFAR10_CLASSES = ["airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse",
                   "ship", "truck"]
CIFAR_BIN_FILES = {"train": [f"data_batch_{i}.bin" for i in range(1, 6)],
                   "test": ["test_batch.bin"]}


def _cifar_subdir(d: Path, marker: str, sub: str) -> Path | None:
    for p in (d, d / sub):
        if (p / marker).is_file():
            return p
    return None


def read_cifar_bin(d: Path, split: str) -> ImageData:
    """CIFAR-10's binary version: records of 1 label byte + 3,072 pixel bytes (R, G, B planes)."""
    chunks = []
    for f in CIFAR_BIN_FILES[split]:
        p = d / f
        if not p.is_file():
            raise GancliError(f"{d} has no {f} (expected CIFAR-10's binary version)")
        raw = np.fromfile(p, dtype=np.uint8)
        if raw.size == 0 or raw.size % 3073:
            raise GancliError(f"{p} is not a CIFAR-10 binary batch (size {raw.size} bytes)")
        chunks.append(raw.reshape(-1, 3073))
    rec = np.concatenate(chunks)
    imgs = torch.from_numpy(rec[:, 1:].reshape(-1, 3, 32, 32).copy())
    labels = torch.from_numpy(rec[:, 0].astype(np.int64))
    if int(labels.max()) >= 10:
        raise GancliError(f"{d}: labels above 9: not CIFAR-10's binary version")
    return ImageData(imgs, labels, 10, f"cifar10-{split}", CIFAR10_CLASSES)


@folder_index("cifar10")
def index_cifar10(cfg: DataConfig, split: str) -> FileIndex | HubIndex | None:
    d = local_dir(cfg)
    if d is None:
        return _hub(cfg, split)
    if _cifar_subdir(d, "test_batch.bin", "cifar-10-batches-bin"):
        return None
    if _cifar_subdir(d, "data_batch_1", "cifar-10-batches-py"):
        # Unpickling runs whatever code the file names; gancli reads no pickle.
        raise GancliError(f"{d} holds CIFAR-10's python (pickle) version, which gancli does not "
                          f"read: use the binary version (cifar-10-binary.tar.gz) or a folder of "
                          f"images in class subfolders")
    return index_folder(d, split, "cifar10", labelled=True, num_classes=cfg.num_classes)


@loader("cifar10")
def load_cifar10(cfg: DataConfig, split: str) -> ImageData:
    """CIFAR-10: --data DIR (the binary version, or images in class subfolders), else the hub."""
    d = local_dir(cfg)
    if d is None:
        return _hub(cfg, split).decode(cfg)
    b = _cifar_subdir(d, "test_batch.bin", "cifar-10-batches-bin")
    if b is not None:
        return read_cifar_bin(b, split)
    return decode_all(index_cifar10(cfg, split).first(cfg.limit), cfg)


def _hub(cfg: DataConfig, split: str) -> HubIndex:
    return open_hub(cfg.hf_id or "uoft-cs/cifar10", split, "cifar10", cfg.env,
                    image_key="img", label_key="label")
