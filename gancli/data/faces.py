"""Data source `faces64`: unlabelled face photos from --data DIR (any folder of images, read
lazily when large), else the recipe's HuggingFace id (its Arrow files read lazily when large)."""

from __future__ import annotations

from gancli.data.base import ImageData
from gancli.data.folders import FileIndex, decode_all, index_folder, local_dir
from gancli.data.hub import HubIndex, open_hub
from gancli.data.registry import folder_index, loader
from gancli.errors import GancliError
from gancli.recipes import DataConfig


@folder_index("faces64")
def index_faces(cfg: DataConfig, split: str) -> FileIndex | HubIndex:
    d = local_dir(cfg)
    if d is not None:
        # FFHQ's own thumbnails come in numbered subfolders of 1,000: those are not classes.
        return index_folder(d, split, "faces", labelled=False)
    if not cfg.hf_id:
        raise GancliError("faces64 needs --data DIR (a folder of face images) or hf_id in the "
                          "recipe's [data]")
    return open_hub(cfg.hf_id, split, f"faces-{cfg.hf_id.replace('/', '_')}", cfg.env,
                    hint="supply a folder of face images with --data DIR", labelled=False)


@loader("faces64")
def load_faces(cfg: DataConfig, split: str) -> ImageData:
    """Unlabelled face photos: --data DIR (any folder of images), else the recipe's hub id."""
    index = index_faces(cfg, split)
    if isinstance(index, FileIndex):
        return decode_all(index.first(cfg.limit), cfg)
    return index.decode(cfg)
