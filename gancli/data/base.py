"""The type every data source yields: :class:`ImageData`, uint8 images N x C x H x W on the CPU
with optional int64 labels, a name that identifies source, split and resolution (cache keys), and
the notes worth telling the user. It depends on nothing else in gancli.data, so every other module
here can use it."""

from __future__ import annotations

from dataclasses import dataclass

import torch


@dataclass
class ImageData:
    images: torch.Tensor                 # uint8, N x C x H x W, CPU
    labels: torch.Tensor | None          # int64, N, or None
    num_classes: int                     # 0 when unlabelled
    name: str                            # identifies source, split and resolution (cache keys)
    class_names: list[str] | None = None
    skipped: int = 0                     # unreadable files left out
    notes: tuple[str, ...] = ()          # lines worth telling the user (skipped files, ...)

    def __len__(self) -> int:
        return int(self.images.shape[0])
