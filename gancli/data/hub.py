"""HuggingFace ``datasets`` data: a hub data set or a local copy (a directory written by
``save_to_disk``, or parquet files) opened as a :class:`HubIndex` without decoding anything, then
either decoded into memory (:meth:`HubIndex.decode`) or read lazily (:class:`HFImages`).

``datasets`` keeps a data set in Arrow files that it memory-maps, so a set larger than memory
costs no memory until its images are read: :class:`HFImages` decodes them one at a time, in
DataLoader workers, as batches are drawn (:class:`~gancli.data.batches.StreamBatches` gives each
rank its own slice of every epoch), just as :class:`~gancli.data.folders.FolderImages` does for a
folder of files. :func:`~gancli.data.registry.open_dataset` chooses between the two by the decoded
size, for every source whose indexer returns a :class:`HubIndex` (faces64's and cifar10's
downloads, mnist's and fashion-mnist's, and the source `hf` defined here).

Source `hf`: --data DIR (a ``save_to_disk`` directory of a Dataset or DatasetDict, or a directory of
``.parquet`` files, or one such file), or a hub id in --data or the recipe's hf_id.
"""

from __future__ import annotations

import dataclasses
import hashlib
import io
import logging
import os
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Sequence

import numpy as np
import torch

from gancli.data.base import ImageData, LazySource
from gancli.data.common import _hf_images
from gancli.data.folders import _first_line
from gancli.data.pixels import _size_tag, prepare_image
from gancli.data.registry import folder_index, loader
from gancli.errors import GancliError
from gancli.recipes import DataConfig


IMAGE_KEYS = ("image", "img", "pixel_values")     # looked for in this order, then any Image column
LABEL_KEYS = ("label", "labels", "fine_label")
HF_SPLITS = {"train": ("train",), "test": ("test", "validation", "valid", "val")}


@dataclass
class HubIndex:
    """One split of a ``datasets`` data set, opened (memory-mapped), nothing decoded."""
    ds: Any                              # datasets.Dataset
    image_key: str
    labels: torch.Tensor | None          # int64 N, or None
    num_classes: int
    class_names: list[str] | None
    name: str                            # source and split, e.g. cifar10-train
    notes: tuple[str, ...] = ()

    def __len__(self) -> int:
        return len(self.ds)

    def first(self, n: int | None) -> "HubIndex":
        if n is None or n >= len(self.ds):
            return self
        return dataclasses.replace(self, ds=self.ds.select(range(n)),
                                   labels=None if self.labels is None else self.labels[:n],
                                   name=f"{self.name}-first{n}")

    def decode(self, cfg: DataConfig | None) -> ImageData:
        """Every image decoded into memory, a chunk at a time; with `cfg`, cropped, converted and
        resized as it is decoded (:func:`prepare_image`)."""
        x = _hf_images(self.ds, self.image_key, cfg)
        tag = f"-{_size_tag(cfg, bool(cfg.crop))}" if cfg is not None else ""
        return ImageData(x, self.labels, self.num_classes, f"{self.name}{tag}", self.class_names,
                         notes=self.notes)

    def lazy(self, cfg: DataConfig) -> "HFImages":
        """The images read lazily from the Arrow files, decoded as batches are drawn."""
        return HFImages(self, cfg)


class HFImages(LazySource):
    """A ``datasets`` data set decoded lazily, one image at a time, in DataLoader workers.

    The Arrow table stays memory-mapped (workers share its pages; pickled, it names its files, not
    its contents). The image column is read undecoded (bytes), a batch's rows in one fetch, and each
    image is decoded with PIL and :func:`prepare_image`, so an unreadable one can be replaced by
    another of its batch, as for files.
    """

    stored = "Arrow files"

    def __init__(self, index: HubIndex, cfg: DataConfig) -> None:
        import datasets

        ds = index.ds.select_columns([index.image_key])
        if isinstance(ds.features[index.image_key], datasets.Image):
            ds = ds.cast_column(index.image_key, datasets.Image(decode=False))  # no rewrite
        self.ds, self.key = ds, index.image_key
        self.labels = index.labels
        self.num_classes, self.class_names = index.num_classes, index.class_names
        self.name = f"{index.name}-{_size_tag(cfg, bool(cfg.crop))}"
        self.notes = index.notes
        self.size, self.channels, self.crop = cfg.image_size, cfg.channels, cfg.crop
        self.background = cfg.background
        self.index, self.cfg = index, cfg

    def __len__(self) -> int:
        return len(self.ds)

    def _prepare(self, value: Any) -> torch.Tensor:
        im = _pil(value)
        try:
            return prepare_image(im, self.size, self.channels, self.crop, self.background)
        finally:
            im.close()

    def decode(self, i: int) -> torch.Tensor:
        return self._prepare(self.ds[int(i)][self.key])

    def decode_batch(self, idx: Sequence[int]) -> list[torch.Tensor | None]:
        try:
            values = self.ds[[int(i) for i in idx]][self.key]     # one fetch for the batch
        except Exception:
            return super().decode_batch(idx)                      # then row by row
        return self.tolerant(self._prepare, values)

    def describe(self, i: int) -> str:
        return f"row {i} of {self.index.name}"

    def load(self) -> ImageData:
        """Decode everything into memory (for the device-resident mode)."""
        return self.index.decode(self.cfg)


def _pil(value: Any) -> Any:
    """A value of an image column as a PIL image: undecoded {bytes, path}, a PIL image, or an
    array of pixels (H x W, H x W x C or C x H x W)."""
    from PIL import Image

    if isinstance(value, dict):
        if value.get("bytes"):
            return Image.open(io.BytesIO(value["bytes"]))
        if value.get("path"):
            return Image.open(value["path"])
        raise ValueError("empty image")
    if isinstance(value, Image.Image):
        return value
    a = np.asarray(value)
    if a.ndim == 3 and a.shape[0] in (1, 3) and a.shape[-1] not in (1, 3):
        a = a.transpose(1, 2, 0)
    if a.ndim == 3 and a.shape[-1] == 1:
        a = a[..., 0]
    if a.dtype != np.uint8:
        a = (a * 255 if a.dtype.kind == "f" and a.max() <= 1 else a).clip(0, 255).astype(np.uint8)
    return Image.fromarray(a)


# ----------------------------------------------------------------------------- opening


def open_hub(hf_id: str, split: str, name: str, env: str | None,
             image_key: str | None = None, label_key: str | None = None, *,
             hint: str | None = None, labelled: bool = True) -> HubIndex:
    """Download (or reuse the HuggingFace cache of) a hub data set with an image column, and open
    its split `split` without decoding it. `hint` replaces the default advice on supplying a local
    copy when the download fails; without `labelled`, its labels are left out."""
    import datasets

    hint = hint or ("supply a local copy with --data DIR" + (f" or ${env}" if env else ""))
    import gancli.data as face      # read where it is patched (tests fake being online)
    offline = face.hub_offline_reason(hf_id)
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
    return table_index(ds, f"{name}-{split}", f"'{hf_id}'", image_key, label_key,
                       labelled=labelled)


def table_index(ds: Any, name: str, what: str, image_key: str | None = None,
                label_key: str | None = None, *, labelled: bool = True,
                strict: bool = False) -> HubIndex:
    """A :class:`HubIndex` over a ``datasets.Dataset``: its image column (`image_key`, else the
    first of :data:`IMAGE_KEYS`, else the first Image column) and its labels (`label_key`, else
    the first of :data:`LABEL_KEYS`), read once. With `strict`, a label column that is not
    integers from 0 is left out with a note rather than refused by the decoder."""
    import datasets

    cols = ds.column_names
    if image_key is None:
        image_key = next((c for c in IMAGE_KEYS if c in cols), None) or next(
            (c for c in cols if isinstance(ds.features.get(c), datasets.Image)), None)
    if image_key is None or image_key not in cols:
        raise GancliError(f"{what} has no image column (columns: {', '.join(cols)})")
    label_key = label_key or next((c for c in LABEL_KEYS if c in cols), None)
    labels, num_classes, names, notes = None, 0, None, []
    if labelled and label_key is not None and label_key in cols:
        raw = ds.select_columns([label_key]).with_format("numpy")[:][label_key]
        raw = np.asarray(raw)
        if strict and (raw.dtype.kind not in "iu" or (raw.size and raw.min() < 0)):
            notes.append(f"column '{label_key}' of {what} holds no class numbers "
                         f"(0, 1, ...): the images are used without labels")
        else:
            labels = torch.as_tensor(raw.astype(np.int64))
            feat = ds.features.get(label_key)
            names = list(getattr(feat, "names", []) or []) or None
            num_classes = len(names) if names else (int(labels.max()) + 1 if len(labels) else 0)
    return HubIndex(ds, image_key, labels, num_classes, names, name, tuple(notes))


def _pick_split(splits: Any, split: str, where: str) -> Any:
    for key in HF_SPLITS[split]:
        if key in splits:
            return splits[key]
    raise GancliError(f"{where} has no {' or '.join(HF_SPLITS[split])} split "
                      f"(splits: {', '.join(splits) or 'none'})")


def open_local(path: Path, split: str) -> Any:
    """A ``datasets.Dataset`` from a local copy: a ``save_to_disk`` directory (memory-mapped where
    it lies), or parquet files (converted once into Arrow files in the datasets cache)."""
    import datasets

    if (path / "dataset_dict.json").is_file() or (path / "state.json").is_file():
        try:
            saved = datasets.load_from_disk(str(path))
        except Exception as e:
            raise GancliError(f"cannot read the data set saved in {path} "
                              f"({_first_line(e)})") from None
        if isinstance(saved, datasets.DatasetDict):
            return _pick_split(saved, split, str(path))
        if split != "train":
            raise GancliError(f"{path} holds one data set, the train split: for a test split "
                              f"save a DatasetDict with train and test")
        return saved
    if path.is_file() and path.suffix == ".parquet":
        kw: dict[str, Any] = {"data_files": {"train": str(path)}}
    elif path.is_dir() and any(p.suffix == ".parquet" for p in path.rglob("*.parquet")):
        kw = {"data_dir": str(path)}       # train/test told apart by file and folder names
    else:
        raise GancliError(f"{path} holds neither a data set written by save_to_disk (state.json "
                          f"or dataset_dict.json) nor .parquet files (a folder of image files: "
                          f"--recipe imagefolder)")
    try:
        splits = datasets.load_dataset("parquet", **kw)
    except Exception as e:
        raise GancliError(f"cannot read the parquet files in {path} ({_first_line(e)})") from None
    return _pick_split(splits, split, str(path))


_HUB_ID = re.compile(r"^[A-Za-z0-9][\w.-]*(/[\w.-]+)?$")


@folder_index("hf")
def index_hf(cfg: DataConfig, split: str) -> HubIndex:
    """Source `hf`: --data (or the recipe's env variable) naming a local copy or a hub id, else
    the recipe's hf_id."""
    where = cfg.path or (os.environ.get(cfg.env) if cfg.env else None) or cfg.hf_id
    if not where:
        raise GancliError("the hf source needs --data: a directory written by datasets' "
                          "save_to_disk, a directory of parquet files, or a HuggingFace hub id "
                          "(or hf_id in the recipe's [data])")
    p = Path(where).expanduser()
    if p.exists():
        ds = open_local(p, split)
        digest = hashlib.sha1(str(p.resolve()).encode()).hexdigest()[:8]
        index = table_index(ds, f"hf-{p.resolve().name or 'root'}-{digest}-{split}", str(p),
                            strict=True)
    elif _HUB_ID.match(where):
        index = open_hub(where, split, f"hf-{where.replace('/', '_')}", cfg.env,
                         hint="give --data a directory written by save_to_disk, a directory of "
                              "parquet files, or a hub id")
    else:
        raise GancliError(f"data directory not found: {where}")
    if cfg.num_classes and index.num_classes != cfg.num_classes:
        found = f"{index.num_classes} classes" if index.labels is not None else "no labels"
        raise GancliError(f"the recipe expects {cfg.num_classes} classes but {where} has {found}")
    return index


@loader("hf")
def load_hf_source(cfg: DataConfig, split: str) -> ImageData:
    """A HuggingFace data set, local or from the hub, decoded into memory."""
    return index_hf(cfg, split).first(cfg.limit).decode(cfg)
