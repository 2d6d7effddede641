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

This package's face: everything gancli imports from ``gancli.data`` is re-exported here. The code
lives in base (ImageData), registry (loader/folder_index registration, load_images, open_dataset),
pixels (resizing, decoding one image, to_uint8), folders (FileIndex, index_folder, decode_all,
FolderImages), batches (DeviceBatches, StreamBatches, make_batches, budgets), common (IDX and
HuggingFace helpers) and one module per data source, which registers itself by name: adding a
source is one new file, named in :data:`gancli.data.registry.BUILTIN`.
"""

from __future__ import annotations

from gancli.data.base import ImageData
from gancli.data.batches import (DeviceBatches, StreamBatches, choose_mode, data_bytes,
                                 default_workers, device_budget, epoch_permutation, host_budget,
                                 make_batches)
from gancli.data.common import (IDX_FILES, find_idx, hub_offline_reason, load_hf, load_idx_dir,
                                read_idx)
from gancli.data.folders import (IMAGE_EXTS, SPLIT_DIRS, FileIndex, FolderImages, decode_all,
                                 image_files, index_folder, local_dir, split_dir)
from gancli.data.pixels import conform, decode_file, prepare_image, resize_uint8, to_uint8
from gancli.data.registry import (INDEXERS, LOADERS, Indexer, Loader, folder_index, load_images,
                                  loader, open_dataset)
# The built-in sources (importing them registers them) and the names they always exported here.
from gancli.data.cifar10 import (CIFAR10_CLASSES, CIFAR_BIN_FILES, index_cifar10, load_cifar10,
                                 read_cifar_bin)
from gancli.data.digits import load_digits
from gancli.data.faces import index_faces, load_faces
from gancli.data.fashion_mnist import DEBIAN_FASHION_MNIST, FASHION_CLASSES, load_fashion_mnist
from gancli.data.imagefolder import index_imagefolder, load_imagefolder
from gancli.data.mnist import load_mnist

__all__ = [
    "ImageData",
    "DeviceBatches", "StreamBatches", "choose_mode", "data_bytes", "default_workers",
    "device_budget", "epoch_permutation", "host_budget", "make_batches",
    "IDX_FILES", "find_idx", "hub_offline_reason", "load_hf", "load_idx_dir", "read_idx",
    "IMAGE_EXTS", "SPLIT_DIRS", "FileIndex", "FolderImages", "decode_all", "image_files",
    "index_folder", "local_dir", "split_dir",
    "conform", "decode_file", "prepare_image", "resize_uint8", "to_uint8",
    "INDEXERS", "LOADERS", "Indexer", "Loader", "folder_index", "load_images", "loader",
    "open_dataset",
    "CIFAR10_CLASSES", "CIFAR_BIN_FILES", "index_cifar10", "load_cifar10", "read_cifar_bin",
    "load_digits", "index_faces", "load_faces", "DEBIAN_FASHION_MNIST", "FASHION_CLASSES",
    "load_fashion_mnist", "index_imagefolder", "load_imagefolder", "load_mnist",
]
