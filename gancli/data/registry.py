"""The source registry: a data source registers its loader by name with :func:`loader` (and, when
it can open its images lazily, its indexer with :func:`folder_index`: a local folder's
:class:`FileIndex` or a ``datasets`` table's :class:`~gancli.data.hub.HubIndex`);
:func:`load_images` and :func:`open_dataset` look sources up here, check the request, and conform
what a source returns to the recipe's size, channels and limit. The built-in sources are imported
on first use (:data:`BUILTIN`), as model families are, so the registry is complete whenever it is
used."""

from __future__ import annotations

import dataclasses
from typing import TYPE_CHECKING, Callable, Protocol

from gancli.data.base import ImageData, LazySource
from gancli.data.batches import host_budget
from gancli.data.folders import FileIndex
from gancli.data.pixels import conform
from gancli.errors import GancliError
from gancli.recipes import DataConfig


Loader = Callable[[DataConfig, str], ImageData]
LOADERS: dict[str, Loader] = {}


def loader(name: str) -> Callable[[Loader], Loader]:
    def deco(fn: Loader) -> Loader:
        LOADERS[name] = fn
        return fn
    return deco


if TYPE_CHECKING:
    from gancli.data.hub import HubIndex


class Index(Protocol):
    """What an indexer returns (:class:`FileIndex`, :class:`~gancli.data.hub.HubIndex`): the
    images of one split, listed but not decoded."""

    def __len__(self) -> int: ...
    def first(self, n: int | None) -> "Index": ...
    def decode(self, cfg: DataConfig) -> ImageData: ...
    def lazy(self, cfg: DataConfig) -> LazySource: ...


Indexer = Callable[[DataConfig, str], "FileIndex | HubIndex | None"]
INDEXERS: dict[str, Indexer] = {}


def folder_index(name: str) -> Callable[[Indexer], Indexer]:
    """Register how source `name` lists its images without decoding them: a local folder
    (:class:`FileIndex`) or a ``datasets`` table (:class:`~gancli.data.hub.HubIndex`); None: this
    config has nothing to open lazily. :func:`open_dataset` then decides between decoding it
    into memory and opening it lazily."""
    def deco(fn: Indexer) -> Indexer:
        INDEXERS[name] = fn
        return fn
    return deco


def load_images(cfg: DataConfig, split: str = "train") -> ImageData:
    """Load the data set a recipe names, as uint8 images at the recipe's size and channels."""
    _check_request(cfg, split)
    return _finish(LOADERS[cfg.source](cfg, split), cfg, split)


def _check_request(cfg: DataConfig, split: str) -> None:
    _load_builtin()
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


def open_dataset(cfg: DataConfig, split: str = "train", *,
                 ram_budget: int | None = None) -> ImageData | LazySource:
    """The data set a recipe names: in memory (:class:`ImageData`) or, when too big for memory,
    a lazy :class:`LazySource` (a local folder's :class:`FolderImages`, a HuggingFace data set's
    :class:`~gancli.data.hub.HFImages` over its memory-mapped Arrow files).

    A source with an indexer (a folder, a ``datasets`` table) is opened lazily when `cfg.stream`
    is "stream", or when it is "auto" and its decoded size (N x C x H x W bytes) exceeds
    `ram_budget` (default: half the available memory, shared by this machine's processes).
    Otherwise it is decoded once, up front: later epochs then cost no decoding. IDX and CIFAR
    binary files are always held in memory.
    """
    _check_request(cfg, split)
    index: Index | None = INDEXERS[cfg.source](cfg, split) if cfg.source in INDEXERS else None
    if index is None:
        return load_images(cfg, split)
    index = index.first(cfg.limit)
    nbytes = len(index) * cfg.channels * cfg.image_size ** 2
    budget = host_budget() if ram_budget is None else ram_budget
    if cfg.stream == "stream" or (cfg.stream == "auto" and nbytes > budget):
        return index.lazy(cfg)
    return _finish(index.decode(cfg), cfg, split)


def _load_builtin() -> None:
    # Imported lazily, as model families are: each source module registers itself on import.
    import importlib

    for mod in BUILTIN:
        importlib.import_module(f"gancli.data.{mod}")


BUILTIN = ("digits", "mnist", "fashion_mnist", "cifar10", "faces", "imagefolder", "hub", "emoji")
