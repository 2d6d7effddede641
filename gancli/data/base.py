"""The types every data source yields: :class:`ImageData`, uint8 images N x C x H x W on the CPU
with optional int64 labels, a name that identifies source, split and resolution (cache keys), and
the notes worth telling the user; and :class:`LazySource`, the base of the data sets too large for
memory that are decoded image by image as batches are drawn. It depends on nothing else in
gancli.data, so every other module here can use it."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Callable, Iterable, Sequence

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


class LazySource(torch.utils.data.Dataset):
    """A data set too large for memory, decoded one image at a time in DataLoader workers: the
    interface :class:`~gancli.data.batches.StreamBatches`, ``choose_mode`` and ``make_batches``
    use for every lazy source (a folder of files, a ``datasets`` Arrow table).

    A subclass sets `labels` (int64 N or None), `num_classes`, `class_names`, `name`, `notes`,
    `size` and `channels` (the decoded images are uint8 channels x size x size), `stored` (what
    the images are read from, for the printed line), and implements `__len__`, :meth:`decode`,
    :meth:`describe` and :meth:`load`; it may override :meth:`decode_batch` to fetch a batch at
    once.
    """

    labels: torch.Tensor | None
    num_classes: int
    class_names: list[str] | None
    name: str
    notes: tuple[str, ...]
    size: int
    channels: int
    stored: str = "files"

    def __len__(self) -> int:
        raise NotImplementedError

    def decode(self, i: int) -> torch.Tensor:
        """Image `i` as uint8 channels x size x size (raises when it cannot be read)."""
        raise NotImplementedError

    def describe(self, i: int) -> str:
        """Image `i` named for a note about it (a path, a row)."""
        return f"{self.name}[{i}]"

    def load(self) -> ImageData:
        """Decode everything into memory (for the device-resident mode)."""
        raise NotImplementedError

    def __getitem__(self, i: int) -> torch.Tensor:
        return self.decode(i)

    def decode_batch(self, idx: Sequence[int]) -> list[torch.Tensor | None]:
        """The images of `idx`, None for each that cannot be read."""
        return self.tolerant(self.decode, idx)

    @staticmethod
    def tolerant(decode: Callable[[Any], torch.Tensor],
                 items: Iterable[Any]) -> list[torch.Tensor | None]:
        """decode(item) for each item, None where it fails."""
        out: list[torch.Tensor | None] = []
        for x in items:
            try:
                out.append(decode(x))
            except Exception:  # any decoder failure means the same: this image cannot be used
                out.append(None)
        return out

    def __getitems__(self, idx: Sequence[int]) -> tuple[torch.Tensor | None,
                                                        torch.Tensor | None, list[str]]:
        """A whole batch: (uint8 images, labels, the images that could not be read, described).
        An unreadable image is replaced by a readable one of the same batch (with its label), so
        batches keep their size; when none is readable the images are None."""
        imgs = self.decode_batch(idx)
        bad = [self.describe(i) for i, x in zip(idx, imgs) if x is None]
        good = [j for j, x in enumerate(imgs) if x is not None]
        if not good:
            return None, None, bad
        src = list(range(len(idx)))
        for k, j in enumerate(j for j, x in enumerate(imgs) if x is None):
            src[j] = good[k % len(good)]
        x = torch.stack([imgs[s] for s in src])
        y = None if self.labels is None else self.labels[torch.tensor([idx[s] for s in src])]
        return x, y, bad
