"""What torch-fidelity's feature extractors are fed: fixed tensors, a recipe's images opened on
first use, image files, and a gancli generator wrapped as torch-fidelity's generative model."""

from __future__ import annotations

from pathlib import Path
from typing import Any, Callable, Sequence

import torch
from torch import nn
from torch.utils.data import Dataset

from gancli.data import to_uint8
from gancli.errors import GancliError
from gancli.latent import LatentSpec

def rgb(x: torch.Tensor) -> torch.Tensor:
    """uint8 [B,] C x H x W with C in (1, 3) -> 3 channels (grey repeated), as Inception wants."""
    if x.shape[-3] == 1:
        return x.expand(*x.shape[:-3], 3, *x.shape[-2:])
    if x.shape[-3] != 3:
        raise GancliError(f"images with {x.shape[-3]} channels cannot be scored (1 or 3)")
    return x


class TensorImages(Dataset):
    """A fixed set of uint8 images N x C x H x W served as 3 x H x W uint8 items."""

    def __init__(self, images: torch.Tensor) -> None:
        if images.dtype != torch.uint8 or images.dim() != 4:
            raise ValueError("TensorImages takes uint8 N x C x H x W")
        self.images = images

    def __len__(self) -> int:
        return int(self.images.shape[0])

    def __getitem__(self, i: int) -> torch.Tensor:
        return rgb(self.images[i]).contiguous()


class LazyImages(Dataset):
    """A recipe's images, opened on first use: with cached statistics torch-fidelity never
    touches the data, so a cache hit costs no loading. `open_` returns a uint8 tensor or a
    lazily decoded dataset (a folder too big for memory) plus the indices to serve."""

    def __init__(self, open_: Callable[[], tuple[Any, torch.Tensor | None]]) -> None:
        self._open, self._source, self._index = open_, None, None

    def _ready(self) -> Any:
        if self._source is None:
            self._source, self._index = self._open()
        return self._source

    def __len__(self) -> int:
        src = self._ready()
        return len(self._index) if self._index is not None else len(src)

    def __getitem__(self, i: int) -> torch.Tensor:
        src = self._ready()
        j = int(self._index[i]) if self._index is not None else i
        return rgb(src[j]).contiguous()


class FolderFiles(Dataset):
    """Image files decoded on demand to uint8 3 x H x W; files of another size than the first
    are resized to it (Inception resizes to 299 anyway; batches need one size)."""

    def __init__(self, files: Sequence[Path]) -> None:
        self.files = list(files)
        self.size = self._open(self.files[0]).size

    @staticmethod
    def _open(path: Path):
        from PIL import UnidentifiedImageError

        from gancli.data.pixels import load_rgb

        try:   # as training sees it: upright, depth scaled, transparency on white
            return load_rgb(path, "white")
        except (OSError, UnidentifiedImageError) as e:
            raise GancliError(f"cannot read image {path} ({e})") from None

    def __len__(self) -> int:
        return len(self.files)

    def __getitem__(self, i: int) -> torch.Tensor:
        import numpy as np
        from PIL import Image

        im = self._open(self.files[i])
        if im.size != self.size:
            im = im.resize(self.size, Image.BICUBIC)
        return torch.from_numpy(np.asarray(im).copy()).permute(2, 0, 1).contiguous()


class GeneratorInput(nn.Module):
    """A gancli generator as torch-fidelity's generative model (see module doc).

    All n latents are drawn up front from ``seed`` (batching never changes which images are
    scored); torch-fidelity's own noise only tells the wrapper how many images it wants next.
    """

    def __init__(self, generator: nn.Module, spec: LatentSpec, n: int, seed: int = 0,
                 label: int | None = None) -> None:
        super().__init__()
        self.module = generator
        self.n, self.seed, self.noise_dim = n, seed, spec.noise_dim
        # --label: the same draws with every image of that class (the rest of z unchanged)
        labels = torch.full((n,), label, dtype=torch.int64) if label is not None else None
        self.latents = spec.sample(n, torch.Generator().manual_seed(seed), labels=labels)
        self.position = 0

    def rewind(self) -> None:
        self.position = 0

    @torch.no_grad()
    def forward(self, noise: torch.Tensor, *unused: Any) -> torch.Tensor:
        b = noise.shape[0]
        if self.position + b > self.n:
            raise RuntimeError("torch-fidelity asked for more samples than were drawn")
        dev = next(self.module.parameters()).device
        chunk = {k: v[self.position: self.position + b].to(dev) for k, v in self.latents.items()}
        self.position += b
        return rgb(to_uint8(self.module(chunk))).contiguous()


def _fidelity_generator(wrapper: GeneratorInput):
    """Make GeneratorInput a torch-fidelity GenerativeModelBase (imported lazily: torch-fidelity
    pulls in torchvision and friends, which `gancli --help` should not pay for)."""
    from torch_fidelity import GenerativeModelBase

    class _Generator(GenerativeModelBase):
        def __init__(self, inner: GeneratorInput) -> None:
            super().__init__()
            self.inner = inner

        @property
        def z_size(self) -> int:
            return max(1, self.inner.noise_dim)

        @property
        def z_type(self) -> str:
            return "normal"  # ignored: the wrapper draws its own latents

        @property
        def num_classes(self) -> int:
            return 0  # > 0 crashes torch-fidelity (np.int); labels are drawn inside instead

        def forward(self, noise: torch.Tensor, *args: Any) -> torch.Tensor:
            return self.inner(noise)

    return _Generator(wrapper)

