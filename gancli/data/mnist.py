"""Data source `mnist`: IDX files from --data DIR or the recipe's environment variable, else a
HuggingFace download (read lazily from its Arrow files when forced to stream)."""

from __future__ import annotations

from gancli.data.base import ImageData
from gancli.data.common import load_hf, load_idx_dir
from gancli.data.folders import local_dir
from gancli.data.hub import HubIndex, open_hub
from gancli.data.registry import folder_index, loader
from gancli.recipes import DataConfig


@folder_index("mnist")
def index_mnist(cfg: DataConfig, split: str) -> HubIndex | None:
    """The download, opened undecoded (None: local IDX files, always read into memory)."""
    if local_dir(cfg) is not None:
        return None
    return open_hub(cfg.hf_id or "ylecun/mnist", split, "mnist", cfg.env)


@loader("mnist")
def load_mnist(cfg: DataConfig, split: str) -> ImageData:
    d = local_dir(cfg)
    names = [str(i) for i in range(10)]
    if d is not None:
        return load_idx_dir(d, split, "mnist", names)
    return load_hf(cfg.hf_id or "ylecun/mnist", split, "mnist", cfg.env)
