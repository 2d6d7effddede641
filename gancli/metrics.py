"""FID, KID, IS and precision/recall through torch-fidelity; gancli only supplies the inputs.

Inputs torch-fidelity gets from here:

- a generator, wrapped as an *unconditional* model (``num_classes=0``: torch-fidelity's conditional
  path crashes); every latent, codes and labels included, is drawn inside the wrapper from
  gancli's own seeded generator, so ``fid --seed S --n N`` scores the images ``sample --seed S
  --n N`` draws;
- a reference set as a ``Dataset`` of uint8 3 x H x W tensors (grey repeated to 3 channels): the
  run's recipe data (a split, optionally a seeded subset) or a folder of images.

Reference statistics are cached by torch-fidelity under ``cache_dir()/fidelity`` keyed only by
``input2_cache_name``; the names built here encode everything that changes the reference (data
set, split, resolution, channels, crop, subset size, feature extractor, weights), so a different
reference never reuses stale statistics. Generated samples are never cached.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import sys
import urllib.error
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Iterable, Mapping, Sequence

import torch
from torch import nn
from torch.utils.data import Dataset

from gancli.data import to_uint8
from gancli.errors import GancliError
from gancli.files import cache_dir
from gancli.latent import LatentSpec
from gancli.recipes import DataConfig

METRICS = ("fid", "kid", "isc", "prc")
INCEPTION = "inception-v3-compat"
VGG16 = "vgg16"
INCEPTION_FILE = "weights-inception-2015-12-05-6726825d.pth"
INCEPTION_URL = ("https://github.com/toshas/torch-fidelity/releases/download/v0.2.0/"
                 + INCEPTION_FILE)
ENV_INCEPTION = "GANCLI_INCEPTION_WEIGHTS"
ENV_VGG16 = "GANCLI_VGG16_WEIGHTS"
ENV_EXTRACTOR = "GANCLI_FEATURE_EXTRACTOR"  # advanced/tests: a registered stand-in extractor
REF_MAX = 50_000       # reference images used when no --ref-n is given (a seeded subset beyond)
SUBSET_SEED = 0        # fixed: the subset is part of the cache name's meaning
IMAGE_EXTS = {".png", ".jpg", ".jpeg", ".bmp", ".webp"}

# torch-fidelity's result keys -> gancli's (short, stable in metrics.jsonl)
_KEYS = {
    "frechet_inception_distance": "fid",
    "kernel_inception_distance_mean": "kid",
    "kernel_inception_distance_std": "kid_std",
    "inception_score_mean": "isc",
    "inception_score_std": "isc_std",
    "precision": "precision",
    "recall": "recall",
    "f_score": "f_score",
}


# ----------------------------------------------------------------------------- inputs


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
        from PIL import Image, UnidentifiedImageError

        try:
            with Image.open(path) as im:
                return im.convert("RGB")
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

    def __init__(self, generator: nn.Module, spec: LatentSpec, n: int, seed: int = 0) -> None:
        super().__init__()
        self.module = generator
        self.n, self.seed, self.noise_dim = n, seed, spec.noise_dim
        self.latents = spec.sample(n, torch.Generator().manual_seed(seed))
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


# ----------------------------------------------------------------------------- references


@dataclass
class Reference:
    """The second input: a dataset plus the cache name that identifies its statistics."""
    dataset: Dataset
    key: str            # identifies the images; the feature extractor is added by cache_name()
    description: str
    n: int | None = None  # known without loading (folders); None for a lazily loaded recipe set


def _slug(text: str) -> str:
    return re.sub(r"[^A-Za-z0-9_.]+", "-", text).strip("-")[:60] or "x"


def _short_hash(obj: Any) -> str:
    return hashlib.sha256(json.dumps(obj, sort_keys=True, default=str).encode()).hexdigest()[:10]


def _subset(total: int, n: int | None) -> torch.Tensor | None:
    """Indices of at most n of `total` items (None: all): a seeded random subset, sorted, since
    data sets are often ordered by class and the first n would be biased."""
    if n is None or n >= total:
        return None
    idx = torch.randperm(total, generator=torch.Generator().manual_seed(SUBSET_SEED))
    return idx[:n].sort().values


def recipe_reference(data_cfg: DataConfig, split: str = "train", n: int | None = None) -> Reference:
    """The images of a recipe's data set (a split, at the recipe's size and channels)."""
    from gancli.data import open_dataset

    if split not in ("train", "test"):
        raise GancliError(f"--split must be train or test, got '{split}'")
    if n is not None and n <= 0:
        raise GancliError(f"--ref-n must be positive, got {n}")
    limit = n if n is not None else REF_MAX

    def open_() -> tuple[Any, torch.Tensor | None]:
        data = open_dataset(data_cfg, split)
        src = data.images if hasattr(data, "images") else data  # ImageData or a lazy folder
        return src, _subset(len(src), limit)

    d = data_cfg
    local = d.path or (os.environ.get(d.env) if d.env else None)
    # Readable part: data set, split, resolution, channels, size of the set. The hash covers
    # whatever else changes pixels (crop, limit, a local copy, a hub id).
    tag = (f"{d.source}-{split}-{d.image_size}px{d.channels}c"
           + (f"-crop{d.crop}" if d.crop else "") + (f"-first{d.limit}" if d.limit else "")
           + f"-n{n if n is not None else 'all'}")
    h = _short_hash({"source": d.source, "split": split, "size": d.image_size,
                     "channels": d.channels, "crop": d.crop, "limit": d.limit, "hf_id": d.hf_id,
                     "local": str(Path(local).expanduser().resolve()) if local else None,
                     "n": limit, "subset_seed": SUBSET_SEED, "v": 1})
    what = f"{d.source} {split} split at {d.image_size}px" + (f", {n} images" if n else "")
    return Reference(LazyImages(open_), f"gancli-{_slug(tag)}-{h}", what)


def image_files(folder: str | Path) -> list[Path]:
    root = Path(folder)
    if not root.is_dir():
        raise GancliError(f"no such folder of images: {folder}")
    files = sorted(p for p in root.rglob("*") if p.suffix.lower() in IMAGE_EXTS and p.is_file()
                   and not any(part.startswith(".") for part in p.relative_to(root).parts))
    if not files:
        raise GancliError(f"{folder} holds no images ({', '.join(sorted(IMAGE_EXTS))})")
    return files


def folder_reference(folder: str | Path, n: int | None = None) -> Reference:
    """Any folder of images (searched recursively). The cache name carries a fingerprint of the
    file list, sizes and modification times: change a file and the statistics are recomputed."""
    root = Path(folder)
    files = image_files(root)
    if n is not None:
        if n <= 0:
            raise GancliError(f"--ref-n must be positive, got {n}")
        idx = _subset(len(files), n)
        if idx is not None:
            files = [files[i] for i in idx.tolist()]
    stamp = []
    for f in files:
        st = f.stat()
        stamp.append([str(f.relative_to(root)), st.st_size, st.st_mtime_ns])
    h = _short_hash({"root": str(root.resolve()), "files": stamp, "v": 1})
    name = f"gancli-folder-{_slug(root.resolve().name)}-n{len(files)}-{h}"
    return Reference(FolderFiles(files), name, f"folder {folder} ({len(files)} images)", len(files))


def cache_name(ref: Reference, feature_extractor: str, weights: str | None = None) -> str:
    """input2_cache_name: the reference's key plus the extractor (and a non-standard weights
    file), so statistics from one extractor are never read for another."""
    name = f"{ref.key}-{feature_extractor}"
    if weights and Path(weights).name not in (INCEPTION_FILE, vgg16_file()):
        st = Path(weights).stat()
        name += "-w" + _short_hash([str(Path(weights).resolve()), st.st_size, st.st_mtime_ns])
    return name


# ----------------------------------------------------------------------------- weights


def hub_checkpoints() -> Path:
    """Where torch.hub (so torch-fidelity) keeps downloaded weights: $TORCH_HOME/hub/checkpoints."""
    return Path(torch.hub.get_dir()) / "checkpoints"


def vgg16_file() -> str:
    return "vgg16-397923af.pth"  # torchvision's VGG16_Weights.IMAGENET1K_V1 file name


def offline_message(extractor: str, reason: str = "") -> str:
    why = f" ({reason})" if reason else ""
    if extractor == VGG16:
        return (f"the VGG16 weights for prc are not on this machine and could not be downloaded"
                f"{why}: put torchvision's {vgg16_file()} (~530 MB) in {hub_checkpoints()}/, or "
                f"pass --vgg16-weights PATH (or set {ENV_VGG16})")
    if extractor == INCEPTION:
        return (f"the Inception weights are not on this machine and could not be downloaded{why}:"
                f" put {INCEPTION_FILE} (torch-fidelity's InceptionV3, ~95 MB, {INCEPTION_URL}) in"
                f" {hub_checkpoints()}/, or pass --inception-weights PATH (or set {ENV_INCEPTION})")
    return f"the weights of feature extractor '{extractor}' could not be downloaded{why}"


def _reason(e: BaseException) -> str:
    r = getattr(e, "reason", None) or e
    return str(r).strip().splitlines()[0][:120] if str(r).strip() else type(e).__name__


def inception_weights(path: str | Path | None = None) -> Path:
    """The Inception weights file: `path`, else $GANCLI_INCEPTION_WEIGHTS, else torch.hub's copy,
    downloaded there if missing. Offline with no file: a one-line GancliError saying where to
    put it."""
    given = path or os.environ.get(ENV_INCEPTION)
    if given:
        p = Path(given).expanduser()
        if not p.is_file():
            raise GancliError(f"Inception weights file not found: {given} (expected "
                              f"{INCEPTION_FILE})")
        return p
    target = hub_checkpoints() / INCEPTION_FILE
    if target.is_file():
        return target
    target.parent.mkdir(parents=True, exist_ok=True)
    print(f"downloading {INCEPTION_FILE} (~95 MB) to {target.parent}", file=sys.stderr)
    try:
        # torch.hub writes to a temporary name and renames: no half file is left behind.
        torch.hub.download_url_to_file(INCEPTION_URL, str(target), progress=False)
    except OSError as e:  # URLError (no network, DNS, HTTP error), timeouts, refused connections
        raise GancliError(offline_message(INCEPTION, _reason(e))) from None
    return target


def vgg16_weights(path: str | Path | None = None) -> Path | None:
    """An explicit VGG16 file (option or $GANCLI_VGG16_WEIGHTS), else None: torchvision finds or
    downloads its own."""
    given = path or os.environ.get(ENV_VGG16)
    if not given:
        return None
    p = Path(given).expanduser()
    if not p.is_file():
        raise GancliError(f"VGG16 weights file not found: {given} (expected {vgg16_file()})")
    return p


def check_extractor(name: str) -> None:
    from torch_fidelity.registry import FEATURE_EXTRACTORS_REGISTRY

    if name not in FEATURE_EXTRACTORS_REGISTRY:
        raise GancliError(f"unknown feature extractor '{name}'; registered: "
                          f"{', '.join(sorted(FEATURE_EXTRACTORS_REGISTRY))}")


# ----------------------------------------------------------------------------- computing


def parse_metrics(text: str | Iterable[str]) -> list[str]:
    items = text.split(",") if isinstance(text, str) else list(text)
    names = [m.strip().lower() for m in items if m.strip()]
    bad = [m for m in names if m not in METRICS]
    if bad or not names:
        raise GancliError(f"--metrics takes a comma list of {', '.join(METRICS)}; got "
                          f"'{','.join(items)}'")
    return list(dict.fromkeys(names))


def fidelity_roots() -> dict[str, str]:
    """torch-fidelity's cache and data set roots, under gancli's cache (not $TORCH_HOME)."""
    return {"cache_root": str(cache_dir() / "fidelity"),
            "datasets_root": str(cache_dir() / "fidelity_datasets")}


def _length(x: Dataset | GeneratorInput) -> int:
    return x.n if isinstance(x, GeneratorInput) else len(x)


def compute_metrics(input1: Dataset | GeneratorInput, reference: Reference,
                    metrics: Sequence[str] = ("fid", "kid"), *,
                    device: torch.device | str = "cpu", batch_size: int = 128, seed: int = 0,
                    feature_extractor: str | None = None,
                    inception_weights_path: str | Path | None = None,
                    vgg16_weights_path: str | Path | None = None, cache: bool = True,
                    verbose: bool = False) -> dict[str, Any]:
    """Run torch-fidelity on (input1, reference); returns gancli's metric names -> floats plus
    "feature_extractor" and "reference_cache" (the cache names used).

    fid/kid/isc use Inception (or `feature_extractor`); prc uses VGG16 in a separate call, since
    one call would hand Inception's weights path to VGG16 too. Only the reference is cached.
    """
    import torch_fidelity

    metrics = parse_metrics(metrics)
    device = torch.device(device)
    fe = feature_extractor or os.environ.get(ENV_EXTRACTOR) or None
    calls: list[tuple[str, list[str], Path | None]] = []
    if fe and fe != INCEPTION:
        check_extractor(fe)
        weights = vgg16_weights(vgg16_weights_path) if fe == VGG16 else None
        calls.append((fe, metrics, weights))  # a chosen extractor serves every metric, one call
    else:
        main = [m for m in metrics if m != "prc"]
        if main:
            calls.append((INCEPTION, main, inception_weights(inception_weights_path)))
        if "prc" in metrics:
            calls.append((VGG16, ["prc"], vgg16_weights(vgg16_weights_path)))

    results: dict[str, Any] = {}
    names: dict[str, str] = {}
    for extractor, wanted, weights in calls:
        name = cache_name(reference, extractor, str(weights) if weights else None)
        names[extractor] = name
        kwargs: dict[str, Any] = dict(
            input2=reference.dataset, input2_cache_name=name, cache=cache,
            feature_extractor=extractor, cuda=device.type == "cuda", batch_size=batch_size,
            # save_cpu_ram: prc without N x N matrices, and no DataLoader worker processes
            # (in-memory sets gain nothing from them; files decode in this process)
            rng_seed=seed, verbose=verbose, save_cpu_ram=True,
            samples_shuffle=True, **fidelity_roots(), **{m: True for m in wanted})
        if weights is not None:
            kwargs["feature_extractor_weights_path"] = str(weights)
        if isinstance(input1, GeneratorInput):
            input1.rewind()
            kwargs.update(input1=_fidelity_generator(input1), input1_model_num_samples=input1.n)
        else:
            kwargs["input1"] = input1
        if "kid" in wanted:  # KID draws subsets of this size from each side
            kwargs["kid_subset_size"] = min(1000, _length(input1),
                                            reference.n or len(reference.dataset))
        if "isc" in wanted:
            kwargs["isc_splits"] = max(1, min(10, _length(input1) // 2))
        results.update(_run(torch_fidelity.calculate_metrics, kwargs, extractor, device))
    results["feature_extractor"] = ",".join(names)
    results["reference_cache"] = ",".join(names.values())
    return results


def _run(fn: Callable[..., Mapping[str, float]], kwargs: dict[str, Any], extractor: str,
         device: torch.device) -> dict[str, float]:
    import contextlib

    # torch-fidelity's .cuda() means "the current GPU": make the chosen one current.
    ctx = torch.cuda.device(device) if device.type == "cuda" else contextlib.nullcontext()
    try:
        with ctx:
            raw = fn(**kwargs)
    except (urllib.error.URLError, ConnectionError, TimeoutError) as e:
        # torch.hub prints "Downloading ..." and then fails like this with no network
        raise GancliError(offline_message(extractor, _reason(e))) from None
    except RuntimeError as e:
        if "state_dict" in str(e) and "feature_extractor_weights_path" in kwargs:
            raise GancliError(f"{kwargs['feature_extractor_weights_path']} is not the weights "
                              f"file {extractor} expects ({str(e).splitlines()[0]})") from None
        raise
    return {_KEYS.get(k, k): float(v) for k, v in raw.items()}
