"""Data source `fashion-mnist`: Zalando's Fashion-MNIST as IDX files from --data DIR, the
recipe's environment variable or Debian's dataset-fashion-mnist package, else a HuggingFace
download."""

from __future__ import annotations

from pathlib import Path

from gancli.data.base import ImageData
from gancli.data.common import IDX_FILES, find_idx, load_hf, load_idx_dir
from gancli.data.folders import local_dir
from gancli.data.registry import loader
from gancli.recipes import DataConfig


FASHION_CLASSES = ["T-shirt/top", "Trouser", "Pullover", "Dress", "Coat", "Sandal", "Shirt",
                   "Sneaker", "Bag", "Ankle boot"]
# Debian's dataset-fashion-mnist package installs the IDX files here.
DEBIAN_FASHION_MNIST = Path("/usr/share/datasets/fashion-mnist")


@loader("fashion-mnist")
def load_fashion_mnist(cfg: DataConfig, split: str) -> ImageData:
    """Zalando's Fashion-MNIST: IDX files from --data / the recipe's env variable, else Debian's
    package directory when installed, else a download."""
    import gancli.data as face      # read where it is patched (tests point it elsewhere)
    debian = face.DEBIAN_FASHION_MNIST
    d = local_dir(cfg)
    if d is None and find_idx(debian, IDX_FILES[split][0]) is not None:
        d = debian
    if d is not None:
        return load_idx_dir(d, split, "fashion-mnist", FASHION_CLASSES)
    env = f" or ${cfg.env}" if cfg.env else ""
    return load_hf(cfg.hf_id or "zalando-datasets/fashion_mnist", split, "fashion-mnist", cfg.env,
                   hint=f"supply the IDX files with --data DIR{env}, or apt-get install "
                        f"dataset-fashion-mnist")
