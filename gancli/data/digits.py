"""Data source `digits`: scikit-learn's 8x8 digits, shipped inside its wheel (offline)."""

from __future__ import annotations

import numpy as np
import torch

from gancli.data.base import ImageData
from gancli.data.registry import loader
from gancli.recipes import DataConfig


@loader("digits")
def load_digits(cfg: DataConfig, split: str) -> ImageData:
    """scikit-learn's 1,797 8x8 digits (values 0..16), shipped inside its wheel. The last 297
    are the test split."""
    from sklearn.datasets import load_digits as sk_digits

    d = sk_digits()
    imgs = torch.from_numpy((d.images * (255.0 / 16.0)).round().astype(np.uint8)).unsqueeze(1)
    labels = torch.from_numpy(d.target.astype(np.int64))
    sl = slice(0, 1500) if split == "train" else slice(1500, None)
    return ImageData(imgs[sl], labels[sl], 10, f"digits-{split}", [str(i) for i in range(10)])
