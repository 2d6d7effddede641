"""The recipe classifier: a small CNN trained on a recipe's labelled real images.

Later commands reuse it as a fixed judge: `gancli score` (do generated digits look like digits of
the asked class?), the InfoGAN/cGAN quality checks, and a Fréchet distance in its feature space.
It is trained once per data set and cached as safetensors under ``cache_dir()/classifiers``.
"""

from __future__ import annotations

import hashlib
import json
import math
import time
from pathlib import Path
from typing import Any, Callable, Mapping

import torch
import torch.nn.functional as F
from torch import nn

import gancli
from gancli.data import ImageData, load_images
from gancli.errors import GancliError
from gancli.files import cache_dir, write_safetensors
from gancli.recipes import DataConfig

# Bump when the network or its training changes, so older cache files are not reused.
ARCH = "cnn-v1"
SHIFT = 2  # augmentation: random translations of up to +-SHIFT pixels
IMBALANCE = 2.0  # largest/smallest class count past which the loss is class-weighted


def to_input(images_uint8: torch.Tensor) -> torch.Tensor:
    """uint8 0..255 -> float in [-1, 1], the range generators emit (see gancli.data.to_uint8)."""
    return images_uint8.float().div(127.5).sub(1.0)


def _conv_block(cin: int, cout: int) -> list[nn.Module]:
    return [nn.Conv2d(cin, cout, 3, padding=1, bias=False), nn.BatchNorm2d(cout),
            nn.ReLU(inplace=True)]


class Classifier(nn.Module):
    """VGG-style CNN: stages of two 3x3 conv/BN/ReLU blocks then a 2x2 max-pool, until the maps
    are about 4-8 pixels wide; then a dense layer of ``feature_dim`` units (the features) and the
    logits.

    Everything needed to rebuild it is in :meth:`arch`, so a cache file's metadata suffices.
    """

    def __init__(self, channels: int, image_size: int, num_classes: int, width: int = 16,
                 feature_dim: int = 128, dropout: float = 0.3) -> None:
        super().__init__()
        if channels not in (1, 3):
            raise GancliError(f"the classifier takes 1 or 3 channels, not {channels}")
        if not 8 <= image_size <= 64:
            raise GancliError(f"the classifier takes images 8 to 64 pixels wide, not {image_size}")
        if num_classes < 2:
            raise GancliError(f"the classifier needs at least 2 classes, not {num_classes}")
        self.channels, self.image_size, self.num_classes = channels, image_size, num_classes
        self.width, self.feature_dim, self.dropout = width, feature_dim, dropout
        # floor(log2(S/4)) pools: 8->4, 16->4, 28->7, 32->4, 64->4.
        n_stages = max(1, int(math.floor(math.log2(image_size / 4))))
        layers: list[nn.Module] = []
        cin, side = channels, image_size
        for i in range(n_stages):
            cout = width * min(2 ** i, 4)
            layers += _conv_block(cin, cout) + _conv_block(cout, cout) + [nn.MaxPool2d(2)]
            cin, side = cout, side // 2
        self.body = nn.Sequential(*layers)
        self.head = nn.Sequential(nn.Flatten(), nn.Dropout(dropout),
                                  nn.Linear(cin * side * side, feature_dim, bias=False),
                                  nn.BatchNorm1d(feature_dim), nn.ReLU(inplace=True))
        self.out = nn.Sequential(nn.Dropout(dropout), nn.Linear(feature_dim, num_classes))

    def arch(self) -> dict[str, Any]:
        """Constructor arguments (plus the ARCH tag): enough to rebuild this network."""
        return {"arch": ARCH, "channels": self.channels, "image_size": self.image_size,
                "num_classes": self.num_classes, "width": self.width,
                "feature_dim": self.feature_dim, "dropout": self.dropout}

    @classmethod
    def from_arch(cls, arch: Mapping[str, Any]) -> "Classifier":
        if arch.get("arch") != ARCH:
            raise ValueError(f"classifier architecture {arch.get('arch')!r}, expected {ARCH!r}")
        return cls(int(arch["channels"]), int(arch["image_size"]), int(arch["num_classes"]),
                   int(arch["width"]), int(arch["feature_dim"]), float(arch["dropout"]))

    def features(self, x: torch.Tensor) -> torch.Tensor:
        """Penultimate features [B, feature_dim] of images in [-1, 1] (for Fréchet distances)."""
        return self.head(self.body(x))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Class logits [B, num_classes] of images in [-1, 1]."""
        return self.out(self.features(x))


# ----------------------------------------------------------------------------- training


def random_shift(x: torch.Tensor, gen: torch.Generator, shift: int = SHIFT) -> torch.Tensor:
    """Translate each image by its own random (dy, dx) in [-shift, shift], replicating edges
    (background for digits; less of an artefact than black bars on photos)."""
    b, c, h, w = x.shape
    padded = F.pad(x, (shift, shift, shift, shift), mode="replicate")
    off = torch.randint(0, 2 * shift + 1, (2, b), generator=gen).to(x.device)
    rows = (off[0, :, None] + torch.arange(h, device=x.device))[:, None, :, None]
    cols = (off[1, :, None] + torch.arange(w, device=x.device))[:, None, None, :]
    bi = torch.arange(b, device=x.device)[:, None, None, None]
    ci = torch.arange(c, device=x.device)[None, :, None, None]
    return padded[bi, ci, rows, cols]


def _check_labels(data: ImageData, num_classes: int | None = None) -> int:
    """Return the class count, or raise the one-line error a user should see."""
    if data.labels is None:
        raise GancliError(f"data set '{data.name}' has no labels: the classifier needs "
                          "labelled images")
    n = num_classes or data.num_classes or (int(data.labels.max()) + 1 if len(data) else 0)
    if len(data) and (int(data.labels.min()) < 0 or int(data.labels.max()) >= n):
        raise GancliError(f"data set '{data.name}' has labels outside 0..{n - 1}")
    return n


def class_weights(labels: torch.Tensor, num_classes: int) -> torch.Tensor | None:
    """Loss weights that give every class the same total weight (n / (k * count)), for a
    training set whose largest class has more than IMBALANCE times the images of its smallest;
    None for a roughly balanced one (MNIST, CIFAR-10, digits), which trains exactly as before.

    Why: an unweighted classifier on the emoji (People & Body 60%) learns to say People & Body
    and recalls small groups poorly, and then undercounts generated images of those groups, whose
    labels a cGAN's score draws uniformly."""
    counts = torch.bincount(labels, minlength=num_classes).double()
    present = counts[counts > 0]
    if len(present) < 2 or float(present.max() / present.min()) <= IMBALANCE:
        return None
    w = torch.where(counts > 0, counts.sum() / (len(present) * counts.clamp_min(1)),
                    torch.zeros_like(counts))
    return w.float()


def train_classifier(train: ImageData, *, epochs: float, batch_size: int = 128, lr: float = 2e-3,
                     seed: int = 0, device: str | torch.device = "cpu", width: int = 16,
                     progress: Callable[[str], None] | None = None,
                     weights: torch.Tensor | None = None) -> Classifier:
    """Train a fresh :class:`Classifier` on labelled uint8 images.

    AdamW with a one-cycle schedule: it reaches high accuracy in one or two epochs, which is all
    a CPU can afford. `weights` (one per class, see :func:`class_weights`) weight the loss.
    Deterministic for a seed on the CPU; the caller's global RNG is untouched.
    """
    num_classes = _check_labels(train)
    if epochs <= 0:
        raise GancliError(f"classifier epochs must be positive, got {epochs}")
    n = len(train)
    batch_size = min(batch_size, n)
    if batch_size < 2:
        raise GancliError(f"data set '{train.name}' has too few images to train a classifier")
    device = torch.device(device)
    steps_per_epoch = max(1, n // batch_size)  # full batches only: BatchNorm dislikes tiny ones
    total = max(1, round(epochs * steps_per_epoch))
    _, c, h, w = train.images.shape
    if h != w:
        raise GancliError(f"the classifier takes square images, not {h}x{w}")

    devices = [device] if device.type == "cuda" else []
    with torch.random.fork_rng(devices=devices):  # dropout draws from the global RNG
        torch.manual_seed(seed)
        model = Classifier(c, h, num_classes, width).to(device)
        gen = torch.Generator().manual_seed(seed)
        images, labels = train.images.to(device), train.labels.to(device)
        weights = None if weights is None else weights.to(device)
        opt = torch.optim.AdamW(model.parameters(), lr=lr, weight_decay=5e-4)
        sched = torch.optim.lr_scheduler.OneCycleLR(opt, max_lr=lr, total_steps=total,
                                                    pct_start=0.2)
        model.train()
        perm, pos, t0 = torch.randperm(n, generator=gen), 0, time.time()
        for step in range(total):
            if pos + batch_size > n:
                perm, pos = torch.randperm(n, generator=gen), 0
            idx = perm[pos: pos + batch_size].to(device)
            pos += batch_size
            x = random_shift(to_input(images.index_select(0, idx)), gen)
            loss = F.cross_entropy(model(x), labels.index_select(0, idx), weight=weights,
                                   label_smoothing=0.05)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            sched.step()
            if progress and ((step + 1) % max(1, total // 10) == 0 or step + 1 == total):
                progress(f"classifier step {step + 1}/{total}  loss {loss.item():.3f}  "
                         f"{time.time() - t0:.0f}s")
    model.eval()
    return model


# ----------------------------------------------------------------------------- inference


@torch.no_grad()
def _batched(model: Classifier, images_uint8: torch.Tensor, device: str | torch.device,
             batch_size: int, fn: Callable[[torch.Tensor], torch.Tensor]) -> torch.Tensor:
    was_training = model.training
    model.eval()
    model.to(device)
    out = [fn(to_input(images_uint8[i: i + batch_size].to(device))).cpu()
           for i in range(0, images_uint8.shape[0], batch_size)]
    model.train(was_training)
    if not out:
        return torch.empty(0)
    return torch.cat(out)


def predict(model: Classifier, images_uint8: torch.Tensor, device: str | torch.device = "cpu",
            batch_size: int = 512) -> torch.Tensor:
    """Predicted labels (int64, CPU) for uint8 images N x C x S x S."""
    out = _batched(model, images_uint8, device, batch_size, lambda x: model(x).argmax(1))
    return out.to(torch.int64)


def extract_features(model: Classifier, images_uint8: torch.Tensor,
                     device: str | torch.device = "cpu", batch_size: int = 512) -> torch.Tensor:
    """Penultimate features (float32, CPU) N x feature_dim for uint8 images."""
    out = _batched(model, images_uint8, device, batch_size, model.features)
    return out.reshape(-1, model.feature_dim).float()


def evaluate(model: Classifier, data: ImageData, device: str | torch.device = "cpu") -> float:
    """Accuracy on a labelled set."""
    return float(evaluate_classes(model, data, device)["accuracy"])


def class_recalls(pred: torch.Tensor, labels: torch.Tensor, num_classes: int
                  ) -> list[float | None]:
    """Per class, the share of its images predicted as it (None for a class with no images)."""
    out: list[float | None] = []
    for c in range(num_classes):
        mine = labels == c
        out.append(float((pred[mine] == c).double().mean()) if bool(mine.any()) else None)
    return out


def balanced_accuracy(recalls: list[float | None]) -> float:
    """Mean per-class recall over the classes present. On a skewed set (emoji: People & Body is
    60% of the images) plain accuracy rewards guessing the big class; this does not, and it is
    the ceiling for label agreement, whose labels are drawn uniformly over the classes."""
    present = [r for r in recalls if r is not None]
    return sum(present) / len(present) if present else 0.0


def evaluate_classes(model: Classifier, data: ImageData, device: str | torch.device = "cpu"
                     ) -> dict[str, Any]:
    """Accuracy, balanced accuracy (mean per-class recall), the per-class recalls and the class
    counts of a labelled set."""
    k = _check_labels(data, model.num_classes)
    if len(data) == 0:
        return {"accuracy": 0.0, "balanced_accuracy": 0.0, "recall_per_class": [None] * k,
                "class_counts": [0] * k}
    pred = predict(model, data.images, device)
    recalls = class_recalls(pred, data.labels, k)
    return {"accuracy": float((pred == data.labels).double().mean()),
            "balanced_accuracy": balanced_accuracy(recalls),
            "recall_per_class": [None if r is None else round(r, 4) for r in recalls],
            "class_counts": torch.bincount(data.labels, minlength=k).tolist()}


# ----------------------------------------------------------------------------- cache


def default_epochs(n_images: int, batch_size: int = 128, min_steps: int = 600) -> float:
    """Two epochs for MNIST-size sets; small sets get enough epochs for ~min_steps updates."""
    return float(max(2, math.ceil(min_steps * batch_size / max(n_images, 1))))


def cache_path(train: ImageData, test: ImageData, arch: Mapping[str, Any],
               loss: str | None = None) -> Path:
    """Where the classifier for these splits is cached. `loss` ("class-weighted") only enters
    the key when set, so balanced sets keep the files they always had."""
    key = json.dumps({"train": train.name, "test": test.name, "arch": dict(arch),
                      "n": len(train), **({"loss": loss} if loss else {})}, sort_keys=True)
    short = hashlib.sha256(key.encode()).hexdigest()[:12]
    return cache_dir() / "classifiers" / f"{train.name}-{short}.safetensors"


def load_classifier(path: str | Path, device: str | torch.device = "cpu"
                    ) -> tuple[Classifier, dict[str, Any]]:
    """Rebuild a classifier from a safetensors file written by :func:`load_or_train`.

    Returns (model in eval mode, metadata with JSON values decoded). Raises on any defect; callers
    that can retrain catch it.
    """
    from safetensors import safe_open

    from gancli.files import stored_digest, tensor_digest

    with safe_open(str(path), framework="pt") as f:
        raw = f.metadata() or {}
        tensors = {k: f.get_tensor(k) for k in f.keys()}
    want = stored_digest(raw)
    if want is not None and tensor_digest(tensors, raw) != want:
        raise ValueError(f"{path} does not match its checksum")   # the caller retrains
    meta = {k: json.loads(v) for k, v in raw.items()}
    model = Classifier.from_arch(meta["arch"])
    model.load_state_dict(tensors, strict=True)
    return model.to(device).eval(), meta


def load_or_train(data_cfg: DataConfig, device: str | torch.device = "cpu", *,
                  epochs: float | None = None, progress: Callable[[str], None] | None = None
                  ) -> tuple[Classifier, dict[str, Any]]:
    """The recipe classifier for a data set: from the cache if a sound file is there, else
    trained on the train split, scored on the test split and cached.

    Returns (model in eval mode, info) where info holds accuracy and balanced_accuracy (mean
    per-class recall) on the test split, recall_per_class, test_class_counts, class_names (when
    the data set has them), class_weighted (see :func:`class_weights`), path, cached,
    train_name, test_name, n_train, n_test and train_seconds.
    """
    train = load_images(data_cfg, "train")
    test = load_images(data_cfg, "test")
    for d in (train, test):
        if d.labels is None:
            raise GancliError(f"data source '{data_cfg.source}' has no labels ({d.name}): "
                              "the classifier needs a labelled data set")
    num_classes = _check_labels(train, data_cfg.num_classes or None)
    _check_labels(test, num_classes)
    arch = Classifier(data_cfg.channels, data_cfg.image_size, num_classes).arch()
    weights = class_weights(train.labels, num_classes)
    loss = "class-weighted" if weights is not None else None
    path = cache_path(train, test, arch, loss)
    info = {"path": str(path), "train_name": train.name, "test_name": test.name,
            "n_train": len(train), "n_test": len(test), "class_weighted": loss is not None,
            **({"class_names": list(train.class_names)}
               if train.class_names and len(train.class_names) == num_classes else {})}

    if path.is_file():
        try:
            model, meta = load_classifier(path, device)
            if (meta.get("arch") == arch and meta.get("train_name") == train.name
                    and meta.get("test_name") == test.name and meta.get("n_train") == len(train)
                    and meta.get("loss") == loss):
                # files cached before balanced accuracy was recorded: the test split is in
                # memory already, and scoring it is a second or two
                figures = (_figures(meta) if "balanced_accuracy" in meta
                           else _figures(evaluate_classes(model, test, device)))
                return model, {**info, **figures, "cached": True,
                               "train_seconds": meta.get("train_seconds")}
            if progress:
                progress(f"classifier cache {path.name} does not match this data; retraining")
        except Exception as e:  # truncated, corrupt or foreign file: it can be rebuilt, so do
            if progress:
                progress(f"classifier cache {path.name} unreadable ({type(e).__name__}); "
                         "retraining")

    ep = epochs if epochs is not None else default_epochs(len(train))
    t0 = time.time()
    model = train_classifier(train, epochs=ep, device=device, progress=progress,
                             weights=weights)
    seconds = round(time.time() - t0, 1)
    figures = _figures(evaluate_classes(model, test, device))
    meta = {"arch": arch, **({"loss": loss} if loss else {}), **figures, "train_name": train.name,
            "test_name": test.name, "n_train": len(train), "n_test": len(test), "epochs": ep,
            "train_seconds": seconds, "gancli_version": gancli.__version__}
    write_safetensors(path, model.state_dict(), {k: json.dumps(v) for k, v in meta.items()})
    if progress:
        progress(f"classifier test accuracy {figures['accuracy']:.4f}, balanced "
                 f"{figures['balanced_accuracy']:.4f} (mean per-class recall), trained in "
                 f"{seconds:.0f}s; cached at {path}")
    return model, {**info, **figures, "cached": False, "train_seconds": seconds}


def _figures(d: Mapping[str, Any]) -> dict[str, Any]:
    """The test-split figures kept in a cache file's metadata and in the info."""
    return {"accuracy": float(d["accuracy"]), "balanced_accuracy": float(d["balanced_accuracy"]),
            "recall_per_class": list(d["recall_per_class"]),
            "test_class_counts": list(d.get("test_class_counts", d.get("class_counts", [])))}
