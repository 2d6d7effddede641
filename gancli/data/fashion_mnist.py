"""Data source `fashion-mnist`: Zalando's Fashion-MNIST as IDX files from --data DIR, the
recipe's environment variable or Debian's dataset-fashion-mnist package, else a HuggingFace
download (read lazily from its Arrow files when forced to stream)."""

from __future__ import annotations

from pathlib import Path

from gancli.data.base import ImageData
from gancli.data.common import IDX_FILES, find_idx, load_hf, load_idx_dir
from gancli.data.folders import local_dir
from gancli.data.hub import HubIndex, open_hub
from gancli.data.registry import folder_index, loader
from gancli.recipes import DataConfig


FASHION_CLASSES = ["T-shirt/top", "Trouser", "Pullover", "Dress", "Coat", "Sandal", "Shirt",
                   "Sneaker", "Bag", "Ankle boot"]
# Debian's dataset-fashion-mnist package installs the IDX files here.
DEBIAN_FASHION_MNIST = Path("/usr/share/datasets/fashion-mnist")


def _local(cfg: DataConfig, split: str) -> Path | None:
    """--data / the recipe's env variable, else Debian's package directory when installed."""
    import gancli.data as face      # read where it is patched (tests point it elsewhere)
    debian = face.DEBIAN_FASHION_MNIST
    d = local_dir(cfg)
    if d is None and find_idx(debian, IDX_FILES[split][0]) is not None:
        d = debian
    return d


def _hub_args(cfg: DataConfig) -> tuple[tuple[str, str, str | None], str]:
    env = f" or ${cfg.env}" if cfg.env else ""
    return ((cfg.hf_id or "zalando-datasets/fashion_mnist", "fashion-mnist", cfg.env),
            f"supply the IDX files with --data DIR{env}, or apt-get install dataset-fashion-mnist")


@folder_index("fashion-mnist")
def index_fashion_mnist(cfg: DataConfig, split: str) -> HubIndex | None:
    """The download, opened undecoded (None: local IDX files, always read into memory)."""
    if _local(cfg, split) is not None:
        return None
    (hf_id, name, env), hint = _hub_args(cfg)
    return open_hub(hf_id, split, name, env, hint=hint)


@loader("fashion-mnist")
def load_fashion_mnist(cfg: DataConfig, split: str) -> ImageData:
    """Zalando's Fashion-MNIST: IDX files from --data / the recipe's env variable, else Debian's
    package directory when installed, else a download."""
    d = _local(cfg, split)
    if d is not None:
        return load_idx_dir(d, split, "fashion-mnist", FASHION_CLASSES)
    (hf_id, name, env), hint = _hub_args(cfg)
    return load_hf(hf_id, split, name, env, hint=hint)
