"""Data source `imagefolder`: any folder of images from --data DIR; class subfolders become
labels, a flat folder is unlabelled."""

from __future__ import annotations

from gancli.data.base import ImageData
from gancli.data.folders import FileIndex, decode_all, index_folder, local_dir
from gancli.data.registry import folder_index, loader
from gancli.errors import GancliError
from gancli.recipes import DataConfig


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
