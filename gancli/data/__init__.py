"""Data: turn a recipe's data source into uint8 image tensors (+ labels), and draw batches.

Every source yields :class:`ImageData`: images uint8 N x C x H x W on the CPU, optional int64
labels. A set too large to hold in memory may instead be opened lazily (a :class:`LazySource`,
decoded image by image in DataLoader workers): a local folder of image files as
:class:`FolderImages`, a HuggingFace data set (downloaded, saved with ``save_to_disk``, or parquet
files) as :class:`HFImages` over its memory-mapped Arrow files.

Batches come from :func:`make_batches`: a set that fits the device's budget is moved there once and
drawn by index (:class:`DeviceBatches`); a larger one streams through a DataLoader
(:class:`StreamBatches`). Both walk the same seeded permutation per epoch, so they give the same
batches in the same order, and both resume from (epoch, position).

Unreadable image files (a folder's files whose names say image but which PIL cannot decode) are
skipped and counted; a folder in which none can be read is an error.

This package's face: everything gancli imports from ``gancli.data`` is re-exported here. The code
lives in base (ImageData, LazySource), registry (loader/folder_index registration, load_images,
open_dataset), pixels (resizing, compositing transparency onto a background, decoding one image,
to_uint8), folders (FileIndex, index_folder, decode_all, FolderImages), batches (DeviceBatches,
StreamBatches, make_batches, budgets), preview (what training will see: `gancli data`), common
(IDX and HuggingFace helpers), hub (HubIndex, HFImages, open_hub, and the source `hf`) and one
module per data source, which registers itself by name: adding a source is one new file, named
in :data:`gancli.data.registry.BUILTIN`.
"""

from __future__ import annotations

from gancli.data.base import ImageData, LazySource
from gancli.data.batches import (DeviceBatches, StreamBatches, choose_mode, data_bytes,
                                 default_workers, device_budget, epoch_permutation, host_budget,
                                 make_batches)
from gancli.data.common import (IDX_FILES, find_idx, hub_offline_reason, load_hf, load_idx_dir,
                                read_idx)
from gancli.data.folders import (IMAGE_EXTS, SPLIT_DIRS, FileIndex, FolderImages, decode_all,
                                 image_files, index_folder, local_dir, split_dir)
from gancli.data.pixels import (conform, decode_file, flatten, has_alpha, prepare_image,
                                resize_uint8, to_uint8)
from gancli.data.registry import (INDEXERS, LOADERS, Indexer, Loader, folder_index, load_images,
                                  loader, open_dataset)
from gancli.data.preview import DataView, look, training_device
# The built-in sources (importing them registers them) and the names they always exported here.
from gancli.data.cifar10 import (CIFAR10_CLASSES, CIFAR_BIN_FILES, index_cifar10, load_cifar10,
                                 read_cifar_bin)
from gancli.data.digits import load_digits
from gancli.data.emoji import EMOJI_CATEGORIES, index_emoji, load_emoji
from gancli.data.faces import index_faces, load_faces
from gancli.data.fashion_mnist import (DEBIAN_FASHION_MNIST, FASHION_CLASSES, index_fashion_mnist,
                                       load_fashion_mnist)
from gancli.data.hub import (HFImages, HubIndex, index_hf, load_hf_source, open_hub, open_local,
                             table_index)
from gancli.data.imagefolder import index_imagefolder, load_imagefolder
from gancli.data.mnist import index_mnist, load_mnist

__all__ = [
    "ImageData", "LazySource",
    "DeviceBatches", "StreamBatches", "choose_mode", "data_bytes", "default_workers",
    "device_budget", "epoch_permutation", "host_budget", "make_batches",
    "IDX_FILES", "find_idx", "hub_offline_reason", "load_hf", "load_idx_dir", "read_idx",
    "IMAGE_EXTS", "SPLIT_DIRS", "FileIndex", "FolderImages", "decode_all", "image_files",
    "index_folder", "local_dir", "split_dir",
    "conform", "decode_file", "flatten", "has_alpha", "prepare_image", "resize_uint8",
    "to_uint8",
    "INDEXERS", "LOADERS", "Indexer", "Loader", "folder_index", "load_images", "loader",
    "open_dataset", "DataView", "look", "training_device",
    "CIFAR10_CLASSES", "CIFAR_BIN_FILES", "index_cifar10", "load_cifar10", "read_cifar_bin",
    "load_digits", "EMOJI_CATEGORIES", "index_emoji", "load_emoji", "index_faces", "load_faces", "DEBIAN_FASHION_MNIST", "FASHION_CLASSES",
    "load_fashion_mnist", "index_fashion_mnist", "index_imagefolder", "load_imagefolder",
    "index_mnist", "load_mnist",
    "HFImages", "HubIndex", "index_hf", "load_hf_source", "open_hub", "open_local", "table_index",
    "fixed_class_names",
]

_DIGIT_NAMES = [str(i) for i in range(10)]
# The sources whose classes never change, whatever copy is read: a checkpoint written before
# generator files recorded their class names still takes a label by name.
_FIXED_CLASS_NAMES = {"emoji": EMOJI_CATEGORIES, "cifar10": CIFAR10_CLASSES,
                      "fashion-mnist": FASHION_CLASSES, "mnist": _DIGIT_NAMES,
                      "digits": _DIGIT_NAMES}


def fixed_class_names(source: str) -> list[str] | None:
    """The class names of a source whose classes are fixed (emoji's 9 groups, CIFAR-10's ten
    names, ...), read without opening any data; None for sources whose classes depend on the
    data (image folders, HuggingFace sets)."""
    names = _FIXED_CLASS_NAMES.get(source)
    return list(names) if names is not None else None
