"""Data source `faces64`: unlabelled face photos from --data DIR (any folder of images, read
lazily when large), else the recipe's HuggingFace id."""

from __future__ import annotations

import dataclasses

from gancli.data.base import ImageData
from gancli.data.common import load_hf
from gancli.data.folders import FileIndex, decode_all, index_folder, local_dir
from gancli.data.registry import folder_index, loader
from gancli.errors import GancliError
from gancli.recipes import DataConfig


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
