"""What training will see, before it starts (`gancli data`): the data set opened as the training
loop opens it (:func:`~gancli.data.registry.open_dataset`), its first images drawn as the loop
draws them (:func:`~gancli.data.batches.make_batches`, the run's seed, epoch 0), turned back into
uint8, and the figures worth a look: classes and their sizes, notes, in memory or streamed."""

from __future__ import annotations

from dataclasses import dataclass

import torch

from gancli.data.base import ImageData, LazySource
from gancli.data.batches import choose_mode, data_bytes, device_budget, host_budget, make_batches
from gancli.data.pixels import to_uint8
from gancli.data.registry import open_dataset
from gancli.recipes import DataConfig


@dataclass
class DataView:
    name: str                              # the data set's name (its cache key)
    count: int                             # images in the split (after --limit)
    images: torch.Tensor                   # uint8 N x C x H x W: the first images training draws
    classes: list[tuple[str, int]] | None  # (class name, images) in label order; None: no labels
    memory: str                            # one line: decoded into memory or streamed, and where
    notes: tuple[str, ...]                 # what was left out or skipped, and why


def training_device() -> torch.device:
    """The device a plain `gancli train` would use (Accelerate's pick on one process)."""
    return torch.device("cuda" if torch.cuda.is_available() else "cpu")


def _size(nbytes: int) -> str:
    for unit, scale in (("GiB", 2 ** 30), ("MiB", 2 ** 20), ("KiB", 2 ** 10)):
        if nbytes >= scale:
            return f"{nbytes / scale:.1f} {unit}"
    return f"{nbytes} bytes"


def _memory(source: ImageData | LazySource, cfg: DataConfig, device: torch.device) -> str:
    """How the loop will hold the set, as :func:`open_dataset` and :func:`choose_mode` decide."""
    size = _size(data_bytes(source))
    if isinstance(source, LazySource):
        why = ("data.stream is \"stream\"" if cfg.stream == "stream" else
               f"more than the host memory budget, {_size(host_budget())}")
        return (f"streamed: decoded image by image from {source.stored} in loader workers "
                f"({size} decoded, {why})")
    mode = choose_mode(source, device, cfg.stream)
    if mode == "device":
        return f"in memory: decoded once ({size}), held on {device}"
    why = ("data.stream is \"stream\"" if cfg.stream == "stream" else
           f"more than {device}'s budget, {_size(device_budget(device))}")
    return f"in host memory ({size}), streamed to {device} batch by batch ({why})"


def _classes(source: ImageData | LazySource) -> list[tuple[str, int]] | None:
    labels = source.labels
    if labels is None or len(labels) == 0:
        return None
    k = max(int(source.num_classes or 0), int(labels.max()) + 1)
    counts = torch.bincount(labels, minlength=k).tolist()
    names = list(source.class_names or [])
    return [(names[i] if i < len(names) else str(i), c) for i, c in enumerate(counts)]


def look(cfg: DataConfig, split: str = "train", n: int = 64, seed: int = 0,
         device: torch.device | None = None) -> DataView:
    """Open the data set of `cfg` as training does and draw its first min(n, size) images: the
    first batch of epoch 0 of a one-process run with `seed` when n is its batch size."""
    source = open_dataset(cfg, split)
    k = min(n, len(source))
    # The loop's own batcher, on the CPU: an in-memory set drawn by index, a lazy one decoded
    # in this process (k images do not need worker processes).
    batches = make_batches(source, k, torch.device("cpu"), seed=seed,
                           mode="stream" if isinstance(source, LazySource) else "device",
                           num_workers=0)
    x, _ = next(batches)
    notes = list(source.notes)
    if getattr(batches, "skipped", 0):
        notes.append(f"{batches.skipped} of the {k} images drawn could not be read (streaming "
                     f"puts another image of the batch in their place)")
    return DataView(source.name, len(source), to_uint8(x), _classes(source),
                    _memory(source, cfg, device or training_device()), tuple(notes))
