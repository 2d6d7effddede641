"""Data: turn a recipe's data source into uint8 image tensors (+ labels), and draw batches.

Every source yields :class:`ImageData`: images uint8 N x C x H x W on the CPU, optional int64
labels. A local folder of image files may instead be opened lazily as :class:`FolderImages`, which
decodes image by image in DataLoader workers, for sets too large to hold in memory.

Batches come from :func:`make_batches`: a set that fits the device's budget is moved there once and
drawn by index (:class:`DeviceBatches`); a larger one streams through a DataLoader
(:class:`StreamBatches`). Both walk the same seeded permutation per epoch, so they give the same
batches in the same order, and both resume from (epoch, position).

Unreadable image files (a folder's files whose names say image but which PIL cannot decode) are
skipped and counted; a folder in which none can be read is an error.
"""

from __future__ import annotations

import dataclasses
import gzip
import hashlib
import logging
import math
import os
import socket
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Iterator, Sequence
from urllib.parse import urlparse

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
    skipped: int = 0                     # unreadable files left out
    notes: tuple[str, ...] = ()          # lines worth telling the user (skipped files, ...)

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
    _check_request(cfg, split)
    return _finish(LOADERS[cfg.source](cfg, split), cfg, split)


def _check_request(cfg: DataConfig, split: str) -> None:
    if split not in ("train", "test"):
        raise GancliError(f"unknown split '{split}' (train or test)")
    if cfg.source not in LOADERS:
        raise GancliError(f"unknown data source '{cfg.source}'; known: {', '.join(sorted(LOADERS))}")
    if cfg.channels not in (1, 3):
        raise GancliError(f"channels must be 1 (grey) or 3 (RGB), got {cfg.channels}")


def _finish(data: ImageData, cfg: DataConfig, split: str) -> ImageData:
    data = conform(data, cfg)
    if cfg.limit is not None and cfg.limit < len(data):
        data = dataclasses.replace(
            data, images=data.images[: cfg.limit],
            labels=None if data.labels is None else data.labels[: cfg.limit],
            name=f"{data.name}-first{cfg.limit}")
    if len(data) == 0:
        raise GancliError(f"data source '{cfg.source}' ({split}) holds no images")
    return data


def _size_tag(cfg: DataConfig, cropped: bool) -> str:
    return (f"crop{cfg.crop}-" if cropped else "") + f"{cfg.image_size}px{cfg.channels}c"


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
    tag = _size_tag(cfg, cropped)
    done = data.name.endswith(f"{cfg.image_size}px{cfg.channels}c")
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


def prepare_image(im: Any, size: int, channels: int, crop: int | None = None) -> torch.Tensor:
    """A PIL image -> uint8 channels x size x size.

    The recipe's center crop first (when the image is larger than it), then a center square crop,
    then the channel count (PIL's L conversion uses the same ITU-R 601 weights as :func:`conform`),
    then the antialiased resize of :func:`resize_uint8`, so files and tensors end up alike.
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
    if im.mode == "P" and "transparency" in im.info:    # as PIL advises; alpha is then dropped
        im = im.convert("RGBA")
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


def _from_array(a: np.ndarray) -> Any:
    from PIL import Image
    return Image.fromarray(a.astype(np.uint8))


def decode_file(path: str | Path, size: int, channels: int, crop: int | None = None) -> torch.Tensor:
    """Decode one image file with PIL and :func:`prepare_image` it (raises on unreadable files)."""
    from PIL import Image
    with Image.open(path) as im:
        return prepare_image(im, size, channels, crop)


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


# ----------------------------------------------------------------------------- image folders


IMAGE_EXTS = (".png", ".jpg", ".jpeg", ".bmp", ".gif", ".webp", ".tif", ".tiff", ".ppm",
              ".pgm", ".pbm")
SPLIT_DIRS = {"train": ("train",), "test": ("test", "val", "valid", "validation")}


@dataclass
class FileIndex:
    """The image files of one split of a local folder, in a fixed (sorted) order."""
    root: Path                           # the split's folder; `files` are relative to it
    files: list[str]
    labels: list[int] | None
    class_names: list[str] | None
    name: str
    notes: tuple[str, ...] = ()

    def __len__(self) -> int:
        return len(self.files)

    def first(self, n: int | None) -> "FileIndex":
        if n is None or n >= len(self.files):
            return self
        return dataclasses.replace(self, files=self.files[:n],
                                   labels=None if self.labels is None else self.labels[:n],
                                   name=f"{self.name}-first{n}")


Indexer = Callable[[DataConfig, str], "FileIndex | None"]
INDEXERS: dict[str, Indexer] = {}


def folder_index(name: str) -> Callable[[Indexer], Indexer]:
    """Register how source `name` lists a local folder (None: this config reads no folder), so
    that :func:`open_dataset` can open it lazily."""
    def deco(fn: Indexer) -> Indexer:
        INDEXERS[name] = fn
        return fn
    return deco


def split_dir(root: Path, split: str) -> Path:
    """A folder with train/ (and test/ or val/) subfolders holds splits; any other folder is
    all training images and has no test split."""
    if (root / "train").is_dir():
        for sub in SPLIT_DIRS[split]:
            if (root / sub).is_dir():
                return root / sub
        raise GancliError(f"{root} has train/ but no {' or '.join(SPLIT_DIRS[split])}/ folder "
                          f"for the {split} split")
    if split == "train":
        return root
    raise GancliError(f"{root} has no test split: put the images in {root}/train and {root}/test")


def image_files(folder: Path) -> tuple[list[str], int]:
    """Image files under `folder` (recursive, hidden ones skipped), relative and sorted; and how
    many other files were passed over."""
    found, other = [], 0
    for dirpath, dirnames, filenames in os.walk(folder, followlinks=True):
        dirnames[:] = [d for d in dirnames if not d.startswith(".")]
        rel = os.path.relpath(dirpath, folder)
        for f in filenames:
            if f.startswith("."):
                continue
            if f.lower().endswith(IMAGE_EXTS):
                found.append(f if rel == "." else os.path.join(rel, f))
            else:
                other += 1
    return sorted(found), other


def index_folder(root: Path, split: str, source: str, *, labelled: bool,
                 num_classes: int = 0) -> FileIndex:
    """List a folder's images. With `labelled`, each subfolder is a class (sorted names are the
    class names; loose files beside them are left out); a folder with no subfolders is
    unlabelled. Without `labelled`, every image under the folder counts, unlabelled."""
    d = split_dir(root, split)
    files, other = image_files(d)
    if not files:
        raise GancliError(f"no image files ({', '.join(e[1:] for e in IMAGE_EXTS[:5])}, ...) "
                          f"in {d}")
    notes = [f"{other} non-image files in {d} passed over"] if other else []
    labels, class_names = None, None
    nested = [f for f in files if os.sep in f]
    if labelled and nested:
        if len(nested) < len(files):
            notes.append(f"{len(files) - len(nested)} images directly in {d} left out "
                         f"(images go in class subfolders)")
        files = nested
        class_names = sorted({f.split(os.sep, 1)[0] for f in files})
        lookup = {c: i for i, c in enumerate(class_names)}
        labels = [lookup[f.split(os.sep, 1)[0]] for f in files]
    if num_classes:
        found = len(class_names or [])
        if found != num_classes:
            where = f"{found} class subfolders" if found else "no class subfolders"
            raise GancliError(f"the recipe expects {num_classes} classes but {d} has {where}")
    digest = hashlib.sha1(str(d.resolve()).encode())
    digest.update("\n".join(files).encode("utf-8", "surrogateescape"))
    name = f"{source}-{root.resolve().name or 'root'}-{digest.hexdigest()[:8]}-{split}"
    return FileIndex(d, files, labels, class_names, name, tuple(notes))


def decode_all(index: FileIndex, cfg: DataConfig, threads: int | None = None) -> ImageData:
    """Decode every file of `index` at the recipe's size, in a thread pool (PIL and torch let go
    of the GIL while they work). Unreadable files are left out and counted."""
    n, size, ch = len(index), cfg.image_size, cfg.channels
    out = torch.empty((n, ch, size, size), dtype=torch.uint8)
    ok = [False] * n
    first_error: list[str] = []

    def one(i: int) -> None:
        try:
            out[i] = decode_file(index.root / index.files[i], size, ch, cfg.crop)
            ok[i] = True
        except Exception as e:  # any decoder failure means the same: this file cannot be used
            if not first_error:
                first_error.append(f"{index.files[i]}: {_first_line(e)}")

    with ThreadPoolExecutor(max_workers=threads or _threads()) as pool:
        for start in range(0, n, 8192):          # bounded: no million futures at once
            list(pool.map(one, range(start, min(n, start + 8192))))
    good = sum(ok)
    if good == 0:
        raise GancliError(f"none of the {n} image files in {index.root} could be read "
                          f"(e.g. {first_error[0] if first_error else '?'})")
    labels = None if index.labels is None else torch.tensor(index.labels, dtype=torch.int64)
    notes = list(index.notes)
    if good < n:
        keep = torch.tensor(ok)
        out = out[keep]
        labels = None if labels is None else labels[keep]
        notes.append(f"skipped {n - good} unreadable image files of {n} in {index.root} "
                     f"(e.g. {first_error[0]})")
    return ImageData(out, labels, len(index.class_names or []),
                     f"{index.name}-{_size_tag(cfg, bool(cfg.crop))}", index.class_names,
                     skipped=n - good, notes=tuple(notes))


def _first_line(e: BaseException) -> str:
    s = str(e).strip()
    return (s.splitlines()[0] if s else type(e).__name__)[:160]


class FolderImages(torch.utils.data.Dataset):
    """A folder of image files decoded lazily, one file at a time, in DataLoader workers.

    Paths are kept in one numpy byte array rather than a list of str, so forked workers do not
    copy the list page by page as reference counts change.
    """

    def __init__(self, index: FileIndex, cfg: DataConfig) -> None:
        self.root = str(index.root)
        self.files = np.array([os.fsencode(f) for f in index.files])
        self.labels = None if index.labels is None else torch.tensor(index.labels,
                                                                     dtype=torch.int64)
        self.num_classes = len(index.class_names or [])
        self.class_names = index.class_names
        self.name = f"{index.name}-{_size_tag(cfg, bool(cfg.crop))}"
        self.notes = index.notes
        self.size, self.channels, self.crop = cfg.image_size, cfg.channels, cfg.crop
        self.cfg, self.index_name = cfg, index.name

    def __len__(self) -> int:
        return len(self.files)

    def path(self, i: int) -> str:
        return os.path.join(self.root, os.fsdecode(self.files[i]))

    def __getitem__(self, i: int) -> torch.Tensor:
        return decode_file(self.path(i), self.size, self.channels, self.crop)

    def __getitems__(self, idx: Sequence[int]) -> tuple[torch.Tensor | None,
                                                        torch.Tensor | None, list[str]]:
        """A whole batch: (uint8 images, labels, paths that could not be read). An unreadable
        file is replaced by a readable image of the same batch (with its label), so batches keep
        their size; when none is readable the images are None."""
        imgs: list[torch.Tensor | None] = []
        bad: list[str] = []
        for i in idx:
            try:
                imgs.append(self[i])
            except Exception:
                imgs.append(None)
                bad.append(self.path(i))
        good = [j for j, x in enumerate(imgs) if x is not None]
        if not good:
            return None, None, bad
        src = list(range(len(idx)))
        for k, j in enumerate(j for j, x in enumerate(imgs) if x is None):
            src[j] = good[k % len(good)]
        x = torch.stack([imgs[s] for s in src])
        y = None if self.labels is None else self.labels[torch.tensor([idx[s] for s in src])]
        return x, y, bad

    def load(self) -> ImageData:
        """Decode everything into memory (for the device-resident mode)."""
        labels = None if self.labels is None else self.labels.tolist()
        index = FileIndex(Path(self.root), [os.fsdecode(f) for f in self.files], labels,
                          self.class_names, self.index_name, self.notes)
        return decode_all(index, self.cfg)


class _TensorImages(torch.utils.data.Dataset):
    """An in-memory ImageData as a Dataset with whole-batch fetches, for streaming it."""

    def __init__(self, data: ImageData) -> None:
        self.images, self.labels = data.images, data.labels

    def __len__(self) -> int:
        return int(self.images.shape[0])

    def __getitem__(self, i: int) -> torch.Tensor:
        return self.images[i]

    def __getitems__(self, idx: Sequence[int]) -> tuple[torch.Tensor, torch.Tensor | None, list]:
        t = torch.as_tensor(idx, dtype=torch.int64)
        return self.images[t], None if self.labels is None else self.labels[t], []


def open_dataset(cfg: DataConfig, split: str = "train", *,
                 ram_budget: int | None = None) -> ImageData | FolderImages:
    """The data set a recipe names: in memory (:class:`ImageData`) or, for a local folder too big
    for memory, a lazy :class:`FolderImages`.

    A folder is opened lazily when `cfg.stream` is "stream", or when it is "auto" and its
    decoded size (N x C x H x W bytes) exceeds `ram_budget` (default: half the available memory,
    shared by this machine's processes). Otherwise it is decoded once, up front: later epochs
    then cost no decoding. Downloads and IDX files are always held in memory.
    """
    _check_request(cfg, split)
    index = INDEXERS[cfg.source](cfg, split) if cfg.source in INDEXERS else None
    if index is None:
        return load_images(cfg, split)
    index = index.first(cfg.limit)
    nbytes = len(index) * cfg.channels * cfg.image_size ** 2
    budget = host_budget() if ram_budget is None else ram_budget
    if cfg.stream == "stream" or (cfg.stream == "auto" and nbytes > budget):
        return FolderImages(index, cfg)
    return _finish(decode_all(index, cfg), cfg, split)


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
            image_key: str | None = None, label_key: str | None = None, *,
            cfg: DataConfig | None = None, hint: str | None = None) -> ImageData:
    """Download (or reuse the HuggingFace cache of) a hub data set with an image column.

    With `cfg`, each image is cropped, converted and resized as it is decoded
    (:func:`prepare_image`), so a set of large images never sits in memory at full size.
    `hint` replaces the default advice on supplying a local copy when the download fails.
    """
    try:
        import datasets
    except ImportError:  # pragma: no cover - a declared dependency
        raise GancliError("the 'datasets' package is needed to download data") from None
    hint = hint or ("supply a local copy with --data DIR" + (f" or ${env}" if env else ""))
    offline = hub_offline_reason(hf_id)
    if offline:
        raise GancliError(f"could not download '{hf_id}' ({offline}); {hint}")
    hub_log = logging.getLogger("huggingface_hub")
    level = hub_log.level
    hub_log.setLevel(logging.ERROR)       # its retry warnings would bury the one line below
    try:
        ds = datasets.load_dataset(hf_id, split=split)
    except Exception as e:  # network, auth, missing split: all end the same way for a user
        raise GancliError(f"could not download '{hf_id}' ({_first_line(e)}); {hint}") from None
    finally:
        hub_log.setLevel(level)
    cols = ds.column_names
    image_key = image_key or next((c for c in ("image", "img", "pixel_values") if c in cols), None)
    if image_key is None or image_key not in cols:
        raise GancliError(f"'{hf_id}' has no image column (columns: {', '.join(cols)})")
    label_key = label_key or next((c for c in ("label", "labels", "fine_label") if c in cols), None)
    x = _hf_images(ds, image_key, cfg)
    labels, num_classes, names = None, 0, None
    if label_key is not None and label_key in cols:
        labels = torch.as_tensor(np.asarray(list(ds[label_key]), dtype=np.int64))
        feat = ds.features.get(label_key)
        names = list(getattr(feat, "names", []) or []) or None
        num_classes = len(names) if names else int(labels.max()) + 1
    tag = f"-{_size_tag(cfg, bool(cfg.crop))}" if cfg is not None else ""
    return ImageData(x, labels, num_classes, f"{name}-{split}{tag}", names)


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
                                                         cfg.crop), ims)
                for k, t in enumerate(prep):
                    out[start + k] = t
        return out
    arrays = [np.asarray(im.convert("RGB") if im.mode not in ("L", "RGB") else im)
              for im in ds[image_key]]
    sizes = {a.shape[:2] for a in arrays}
    if len(sizes) > 1:
        side = min(min(s) for s in sizes)
        from PIL import Image
        arrays = [np.asarray(Image.fromarray(a).resize((side, side), Image.BICUBIC)) for a in arrays]
    x = np.stack(arrays)
    x = x[:, None] if x.ndim == 3 else x.transpose(0, 3, 1, 2)
    return torch.from_numpy(np.ascontiguousarray(x))


@loader("mnist")
def load_mnist(cfg: DataConfig, split: str) -> ImageData:
    d = local_dir(cfg)
    names = [str(i) for i in range(10)]
    if d is not None:
        return load_idx_dir(d, split, "mnist", names)
    return load_hf(cfg.hf_id or "ylecun/mnist", split, "mnist", cfg.env)


FASHION_CLASSES = ["T-shirt/top", "Trouser", "Pullover", "Dress", "Coat", "Sandal", "Shirt",
                   "Sneaker", "Bag", "Ankle boot"]
# Debian's dataset-fashion-mnist package installs the IDX files here.
DEBIAN_FASHION_MNIST = Path("/usr/share/datasets/fashion-mnist")


@loader("fashion-mnist")
def load_fashion_mnist(cfg: DataConfig, split: str) -> ImageData:
    """Zalando's Fashion-MNIST: IDX files from --data / the recipe's env variable, else Debian's
    package directory when installed, else a download."""
    d = local_dir(cfg)
    if d is None and find_idx(DEBIAN_FASHION_MNIST, IDX_FILES[split][0]) is not None:
        d = DEBIAN_FASHION_MNIST
    if d is not None:
        return load_idx_dir(d, split, "fashion-mnist", FASHION_CLASSES)
    env = f" or ${cfg.env}" if cfg.env else ""
    return load_hf(cfg.hf_id or "zalando-datasets/fashion_mnist", split, "fashion-mnist", cfg.env,
                   hint=f"supply the IDX files with --data DIR{env}, or apt-get install "
                        f"dataset-fashion-mnist")


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
def index_cifar10(cfg: DataConfig, split: str) -> FileIndex | None:
    d = local_dir(cfg)
    if d is None or _cifar_subdir(d, "test_batch.bin", "cifar-10-batches-bin"):
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
        return load_hf(cfg.hf_id or "uoft-cs/cifar10", split, "cifar10", cfg.env,
                       image_key="img", label_key="label", cfg=cfg)
    b = _cifar_subdir(d, "test_batch.bin", "cifar-10-batches-bin")
    if b is not None:
        return read_cifar_bin(b, split)
    return decode_all(index_cifar10(cfg, split).first(cfg.limit), cfg)


@folder_index("faces64")
def index_faces(cfg: DataConfig, split: str) -> FileIndex | None:
    d = local_dir(cfg)
    # FFHQ's own thumbnails come in numbered subfolders of 1,000: those are not classes.
    return None if d is None else index_folder(d, split, "faces", labelled=False)


@loader("faces64")
def load_faces(cfg: DataConfig, split: str) -> ImageData:
    """Unlabelled face photos: --data DIR (any folder of images), else the recipe's hub id."""
    index = index_faces(cfg, split)
    if index is not None:
        return decode_all(index.first(cfg.limit), cfg)
    if not cfg.hf_id:
        raise GancliError("faces64 needs --data DIR (a folder of face images) or hf_id in the "
                          "recipe's [data]")
    data = load_hf(cfg.hf_id, split, f"faces-{cfg.hf_id.replace('/', '_')}", cfg.env, cfg=cfg,
                   hint="supply a folder of face images with --data DIR")
    return dataclasses.replace(data, labels=None, num_classes=0, class_names=None)


@folder_index("imagefolder")
def index_imagefolder(cfg: DataConfig, split: str) -> FileIndex:
    d = local_dir(cfg)
    if d is None:
        raise GancliError("the imagefolder source needs --data DIR: a folder of images "
                          "(one subfolder per class for labels)")
    return index_folder(d, split, "imagefolder", labelled=True, num_classes=cfg.num_classes)


@loader("imagefolder")
def load_imagefolder(cfg: DataConfig, split: str) -> ImageData:
    """Any folder of images: class subfolders become labels, a flat folder is unlabelled."""
    return decode_all(index_imagefolder(cfg, split).first(cfg.limit), cfg)


# ----------------------------------------------------------------------------- batches


def epoch_permutation(seed: int, epoch: int, n: int) -> torch.Tensor:
    """The order of epoch `epoch`: a function of (seed, epoch) only, so runs resume exactly."""
    g = torch.Generator().manual_seed(seed * 1_000_003 + epoch)
    return torch.randperm(n, generator=g)


def _check_batch(n: int, batch_size: int, world_size: int) -> int:
    if n < batch_size * world_size:
        raise GancliError(f"the data set has {n} images, fewer than one batch "
                          f"({batch_size} x {world_size} processes): lower --batch-size")
    return n // (batch_size * world_size)


class DeviceBatches:
    """Batches drawn by index from one uint8 tensor that lives on the training device.

    Each epoch is a fresh permutation from (seed, epoch), so a run is reproducible and resumable
    from (epoch, position); each process takes its own slice of every permutation, so ranks see
    different images.
    """

    mode = "device"

    def __init__(self, data: ImageData, batch_size: int, device: torch.device, *, seed: int = 0,
                 rank: int = 0, world_size: int = 1) -> None:
        self.steps_per_epoch = _check_batch(len(data), batch_size, world_size)
        self.images = data.images.to(device)
        self.labels = None if data.labels is None else data.labels.to(device)
        self.batch_size, self.device = batch_size, torch.device(device)
        self.seed, self.rank, self.world_size = seed, rank, world_size
        self.epoch, self.position = 0, 0
        self._perm: torch.Tensor | None = None

    @property
    def where(self) -> str:
        return f"held on {self.device}"

    def _permutation(self) -> torch.Tensor:
        return epoch_permutation(self.seed, self.epoch, self.images.shape[0]).to(self.device)

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


class _RankBatches:
    """An endless batch sampler: this rank's slice of each epoch's permutation, from (epoch,
    position) on, exactly the indices :class:`DeviceBatches` would draw."""

    def __init__(self, n: int, batch_size: int, seed: int, rank: int, world_size: int,
                 epoch: int, position: int) -> None:
        self.n, self.batch_size, self.seed = n, batch_size, seed
        self.rank, self.world_size = rank, world_size
        self.epoch, self.position = epoch, position
        self.steps = n // (batch_size * world_size)

    def __iter__(self) -> Iterator[list[int]]:
        epoch, pos, perm = self.epoch, self.position, None
        while True:
            if pos >= self.steps:
                epoch, pos, perm = epoch + 1, 0, None
            if perm is None:
                perm = epoch_permutation(self.seed, epoch, self.n)
            start = pos * self.batch_size * self.world_size + self.rank * self.batch_size
            yield perm[start: start + self.batch_size].tolist()
            pos += 1


def _as_is(batch: Any) -> Any:
    # Datasets here return whole batches from __getitems__: nothing to collate.
    return batch


def default_workers(world_size: int = 1) -> int:
    """DataLoader workers per process: the machine's cores shared by its processes, at most 8,
    leaving one core for the training process itself."""
    per = _cpus() // min(max(1, world_size), _local_processes())
    return max(1, min(8, per - 1))


class StreamBatches:
    """Batches streamed through a DataLoader: from a lazy :class:`FolderImages` (decoded in worker
    processes) or from an :class:`ImageData` in host memory, pinned and copied to the device per
    batch. Same interface, order and state as :class:`DeviceBatches`.

    Exact on resume: the batch sequence is a function of (seed, epoch, position, batch size,
    world size) alone, so a resumed run sees what an uninterrupted one would have seen (an
    unreadable file's stand-in aside). Prefetched batches are not counted as consumed.
    """

    mode = "stream"

    def __init__(self, source: ImageData | FolderImages, batch_size: int, device: torch.device,
                 *, seed: int = 0, rank: int = 0, world_size: int = 1,
                 num_workers: int | None = None, say: Callable[[str], None] | None = None) -> None:
        self.steps_per_epoch = _check_batch(len(source), batch_size, world_size)
        self.lazy = isinstance(source, FolderImages)
        self.dataset = source if self.lazy else _TensorImages(source)
        self.n = len(source)
        self.device = torch.device(device)
        if num_workers is None:
            # In memory, a batch is one index_select: workers would only add copies.
            num_workers = default_workers(world_size) if self.lazy else 0
        self.num_workers = num_workers
        self.batch_size, self.seed, self.rank, self.world_size = batch_size, seed, rank, world_size
        self.epoch, self.position = 0, 0
        self.unreadable: set[str] = set()   # files that failed to decode, each counted once
        self._say = say
        self._it: Iterator[Any] | None = None

    @property
    def where(self) -> str:
        w = self.num_workers
        how = f"{w} loader worker{'s' if w > 1 else ''}" if w else "host memory"
        return f"streamed to {self.device} from {'files' if self.lazy else 'memory'} ({how})"

    def _start(self) -> Iterator[Any]:
        sampler = _RankBatches(self.n, self.batch_size, self.seed, self.rank, self.world_size,
                               self.epoch, self.position)
        kw: dict[str, Any] = {}
        if self.num_workers:
            kw = {"prefetch_factor": 4, "persistent_workers": False}
        # Its own generator: a DataLoader otherwise draws its workers' base seed from torch's
        # global stream each time it starts, and a resumed run starts it at another step.
        dl = torch.utils.data.DataLoader(self.dataset, batch_sampler=sampler, collate_fn=_as_is,
                                         num_workers=self.num_workers,
                                         generator=torch.Generator().manual_seed(self.seed),
                                         pin_memory=self.device.type == "cuda", **kw)
        return iter(dl)

    def __iter__(self) -> Iterator[tuple[torch.Tensor, torch.Tensor | None]]:
        return self

    def __next__(self) -> tuple[torch.Tensor, torch.Tensor | None]:
        if self._it is None:
            self._it = self._start()
        x, y, bad = next(self._it)
        # Mirror the sampler's walk, so state_dict names the next batch to be drawn.
        if self.position >= self.steps_per_epoch:
            self.epoch, self.position = self.epoch + 1, 0
        self.position += 1
        if bad:
            self._report(bad, x is None)
        x = x.to(self.device, non_blocking=True).float().div_(127.5).sub_(1.0)
        y = None if y is None else y.to(self.device, non_blocking=True)
        return x, y

    def _report(self, bad: list[str], fatal: bool) -> None:
        if fatal:
            raise GancliError(f"none of the {self.batch_size} images of a batch could be read "
                              f"(e.g. {bad[0]})")
        new = [p for p in bad if p not in self.unreadable]
        self.unreadable.update(new)
        for p in new:
            n = len(self.unreadable)
            if self._say is not None and n <= 3:
                more = "; further ones are counted, not shown" if n == 3 else ""
                self._say(f"note: unreadable image file {p} skipped (another image of its "
                          f"batch stands in){more}")

    @property
    def skipped(self) -> int:
        """How many distinct unreadable files streaming has met so far."""
        return len(self.unreadable)

    def state_dict(self) -> dict[str, int]:
        return {"epoch": self.epoch, "position": self.position}

    def load_state_dict(self, state: dict[str, int]) -> None:
        self.epoch, self.position = int(state["epoch"]), int(state["position"])
        self.close()

    def close(self) -> None:
        """Stop the loader's workers (they also stop when this object is dropped)."""
        self._it = None


def host_budget() -> int:
    """Bytes of host memory a data set may take: half of what is available, shared by the
    processes on this machine."""
    avail = None
    try:
        with open("/proc/meminfo") as f:
            for line in f:
                if line.startswith("MemAvailable:"):
                    avail = int(line.split()[1]) * 1024
                    break
    except OSError:
        pass
    if avail is None:
        try:
            avail = os.sysconf("SC_AVPHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")
        except (ValueError, OSError, AttributeError):  # pragma: no cover
            avail = 4 << 30
    return avail // 2 // _local_processes()


def device_budget(device: torch.device | str) -> int:
    """Bytes a device-resident data set may take: a quarter of the GPU's free memory (the
    networks, activations and optimiser state need the rest); on the CPU, the host budget."""
    device = torch.device(device)
    if device.type == "cuda":
        free, _total = torch.cuda.mem_get_info(device)
        return free // 4
    return host_budget()


def data_bytes(source: ImageData | FolderImages) -> int:
    """The uint8 size of a data set once decoded: N x C x H x W."""
    if isinstance(source, FolderImages):
        return len(source) * source.channels * source.size ** 2
    return source.images.numel()


def choose_mode(source: ImageData | FolderImages, device: torch.device | str, mode: str = "auto",
                budget: int | None = None) -> str:
    """"device" or "stream". A forced mode wins; "auto" keeps an in-memory set on the device
    when its decoded size fits `budget` (default :func:`device_budget`) and streams otherwise.
    A lazily opened folder streams: it was left lazy because it does not fit in memory."""
    if mode not in ("auto", "device", "stream"):
        raise GancliError(f"data.stream must be auto, device or stream, got '{mode}'")
    if mode != "auto":
        return mode
    if isinstance(source, FolderImages):
        return "stream"
    limit = device_budget(device) if budget is None else budget
    return "device" if data_bytes(source) <= limit else "stream"


def make_batches(source: ImageData | FolderImages, batch_size: int, device: torch.device | str,
                 *, seed: int = 0, rank: int = 0, world_size: int = 1, mode: str = "auto",
                 budget: int | None = None, num_workers: int | None = None,
                 say: Callable[[str], None] | None = None) -> DeviceBatches | StreamBatches:
    """Batches for training: :class:`DeviceBatches` or :class:`StreamBatches` as
    :func:`choose_mode` decides. Both give (float images in [-1, 1], int64 labels or None) on
    `device` and share steps_per_epoch, mode, where, state_dict() and load_state_dict().
    `say` hears the loader's notes (skipped files and the like)."""
    device = torch.device(device)
    chosen = choose_mode(source, device, mode, budget)
    if say is not None:
        for note in source.notes:
            say(f"note: {note}")
    if chosen == "device":
        data = source.load() if isinstance(source, FolderImages) else source
        if say is not None and data is not source:
            for note in data.notes[len(source.notes):]:
                say(f"note: {note}")
        return DeviceBatches(data, batch_size, device, seed=seed, rank=rank,
                             world_size=world_size)
    return StreamBatches(source, batch_size, device, seed=seed, rank=rank, world_size=world_size,
                         num_workers=num_workers, say=say)


def to_uint8(x: torch.Tensor) -> torch.Tensor:
    """Network output in [-1, 1] -> uint8 0..255 (same rounding everywhere)."""
    return ((x.float().clamp(-1, 1) + 1.0) * 127.5).round().to(torch.uint8)
