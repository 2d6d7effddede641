"""Reference sets (the second input of FID, KID and precision/recall) and the names that
identify their cached features: everything that changes the reference's pixels is in the name."""

from __future__ import annotations

import dataclasses
import hashlib
import json
import os
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch.utils.data import Dataset

from gancli.errors import GancliError
from gancli.metrics.inputs import FolderFiles, LazyImages
from gancli.recipes import DataConfig

REF_MAX = 50_000       # reference images used when no --ref-n is given (a seeded subset beyond)
SUBSET_SEED = 0        # fixed: the subset is part of the cache name's meaning
IMAGE_EXTS = {".png", ".jpg", ".jpeg", ".bmp", ".webp"}


@dataclass
class Reference:
    """The second input: a dataset plus the cache name that identifies its statistics."""
    dataset: Dataset
    key: str            # identifies the images; the feature extractor is added by cache_name()
    description: str
    n: int | None = None  # known without loading (folders); None for a lazily loaded recipe set


def _slug(text: str) -> str:
    return re.sub(r"[^A-Za-z0-9_.]+", "-", text).strip("-")[:60] or "x"


def _short_hash(obj: Any) -> str:
    return hashlib.sha256(json.dumps(obj, sort_keys=True, default=str).encode()).hexdigest()[:10]


def _subset(total: int, n: int | None) -> torch.Tensor | None:
    """Indices of at most n of `total` items (None: all): a seeded random subset, sorted, since
    data sets are often ordered by class and the first n would be biased."""
    if n is None or n >= total:
        return None
    idx = torch.randperm(total, generator=torch.Generator().manual_seed(SUBSET_SEED))
    return idx[:n].sort().values


def recipe_reference(data_cfg: DataConfig, split: str = "train", n: int | None = None,
                     label: int | None = None, label_name: str | None = None) -> Reference:
    """The images of a recipe's data set (a split, at the recipe's size and channels); with
    `label`, only that class's (the reference of a class-conditional FID)."""
    from gancli.data import open_dataset

    if split not in ("train", "test"):
        raise GancliError(f"--split must be train or test, got '{split}'")
    if n is not None and n <= 0:
        raise GancliError(f"--ref-n must be positive, got {n}")
    limit = n if n is not None else REF_MAX

    def open_() -> tuple[Any, torch.Tensor | None]:
        data = open_dataset(data_cfg, split)
        src = data.images if hasattr(data, "images") else data  # ImageData or a lazy folder
        if label is None:
            return src, _subset(len(src), limit)
        if data.labels is None:
            raise GancliError(f"--label: the {d.source} {split} split has no labels")
        of_class = (data.labels == label).nonzero().flatten()
        if len(of_class) < 2:
            raise GancliError(f"--label: the {d.source} {split} split holds {len(of_class)} "
                              f"image(s) of class {label_name or label}; FID needs at least 2")
        pick = _subset(len(of_class), limit)
        return src, of_class if pick is None else of_class[pick]

    d = data_cfg
    local = d.path or (os.environ.get(d.env) if d.env else None)
    # Readable part: data set, split, resolution, channels, size of the set. The hash covers
    # whatever else changes pixels (crop, limit, a local copy, a hub id).
    tag = (f"{d.source}-{split}-{d.image_size}px{d.channels}c"
           + (f"-crop{d.crop}" if d.crop else "") + (f"-first{d.limit}" if d.limit else "")
           + (f"-class{label}" if label is not None else "")
           + f"-n{n if n is not None else 'all'}")
    # Every data setting is hashed (background, vendor and any added later change pixels too),
    # bar those that only decide where the images live: the local copy is hashed as a resolved
    # path instead.
    fields = {k: v for k, v in dataclasses.asdict(d).items() if k not in ("path", "env", "stream")}
    # Class folders under --limit became a spread of every class, not the first n files: a
    # new key for those alone, so no other cached statistics are recomputed.
    spread = {"limit_pick": "spread"} if d.limit and d.source in ("imagefolder", "cifar10") else {}
    h = _short_hash({**fields, "split": split,
                     "local": str(Path(local).expanduser().resolve()) if local else None,
                     "n": limit, "subset_seed": SUBSET_SEED, "v": 2, **spread,
                     **({"label": label} if label is not None else {})})
    what = (f"{d.source} {split} split at {d.image_size}px"
            + (f", its first {d.limit}" if d.limit else "") + (f", {n} images" if n else "")
            + (f", class {label_name or label}" if label is not None else ""))
    return Reference(LazyImages(open_), f"gancli-{_slug(tag)}-{h}", what)


def image_files(folder: str | Path, passed_over: list[str] | None = None) -> list[Path]:
    """The image files under `folder`, sorted, by the training data's walk
    (:func:`gancli.data.folders.scan_folder`: each real folder read once, FIFOs and devices
    never opened); what it passed over is appended to `passed_over` as notes."""
    from gancli.data.folders import scan_folder

    root = Path(folder)
    if not root.is_dir():
        raise GancliError(f"no such folder of images: {folder}")
    scan = scan_folder(root, tuple(sorted(IMAGE_EXTS)))
    if passed_over is not None:
        passed_over.extend(scan.notes(root))
    files = [root / f for f in scan.files]
    if not files:
        raise GancliError(f"{folder} holds no images ({', '.join(sorted(IMAGE_EXTS))})")
    return files


def folder_reference(folder: str | Path, n: int | None = None) -> Reference:
    """Any folder of images (searched recursively). The cache name carries a fingerprint of the
    file list, sizes and modification times: change a file and the statistics are recomputed."""
    root = Path(folder)
    notes: list[str] = []
    files = image_files(root, notes)
    if n is not None:
        if n <= 0:
            raise GancliError(f"--ref-n must be positive, got {n}")
        idx = _subset(len(files), n)
        if idx is not None:
            files = [files[i] for i in idx.tolist()]
    stamp = []
    for f in files:
        st = f.stat()
        stamp.append([str(f.relative_to(root)), st.st_size, st.st_mtime_ns])
    h = _short_hash({"root": str(root.resolve()), "files": stamp, "v": 1})
    name = f"gancli-folder-{_slug(root.resolve().name)}-n{len(files)}-{h}"
    extra = "".join(f"; {n}" for n in notes)
    return Reference(FolderFiles(files), name, f"folder {folder} ({len(files)} images{extra})",
                     len(files))



def cache_name(ref: Reference, feature_extractor: str, weights_tag: str = "",
               precision: str = "fp32") -> str:
    """The name of a reference's cached features: the reference's key plus the extractor, the
    weights it ran with and its precision, so features from one are never read for another."""
    name = f"{ref.key}-{feature_extractor}"
    if weights_tag:
        name += f"-{_slug(weights_tag)}"
    if precision != "fp32":
        name += f"-{precision}"
    return name
