"""The classifier-based score: the recipe classifier judges a generator's samples.

- InfoGAN (a categorical code with one value per class, no label code): how well the code picks
  the class, after matching code values to classes one-to-one (Hungarian; the honest figure) and
  many-to-one (purity; an upper bound), with the code -> class table.
- cGAN (a code with role "label"): how often the classifier agrees with the requested label,
  overall and per class. Read it against the classifier's own balanced accuracy on held-out real
  images (mean per-class recall, reported beside it): the labels are drawn uniformly over the
  classes, so that, not plain accuracy on a skewed test split, is the agreement's ceiling.
- Every model: the share of samples per predicted class (mode coverage) and the Fréchet distance
  between generated and real test images in the classifier's feature space. That distance is
  computed by torch-fidelity with the classifier registered as a feature extractor, so the test
  set's statistics are cached like any FID reference.

The key figure per family (used to keep checkpoints/best while training): code_accuracy for
InfoGAN, label_agreement for cGAN (higher is better), classifier_fd for the rest (lower).
"""

from __future__ import annotations

import copy
import hashlib
from typing import Any, Callable, Mapping

import numpy as np
import torch

from gancli.checkpoint import LoadedGenerator
from gancli.classifier import Classifier, load_or_train, predict, to_input
from gancli.errors import GancliError
from gancli.generate import generate_shared
from gancli.latent import Code, LatentSpec
from gancli.matching import confusion, hungarian_accuracy, purity
from gancli.metrics import TensorImages, compute_metrics, recipe_reference

RARE_SHARE = 0.05  # a class with fewer samples than this share counts as (nearly) dropped


def check_labelled(data_cfg: Any, what: str = "score") -> None:
    if not data_cfg.num_classes:
        raise GancliError(f"{what} needs a recipe with labels (mnist, fashion-mnist, cifar10, "
                          f"digits, emoji); data source '{data_cfg.source}' has none: use "
                          f"gancli fid")


def info_code(spec: LatentSpec, num_classes: int) -> Code | None:
    """The InfoGAN code to match against classes: categorical, one value per class; none for a
    conditional model (its label is given, not discovered)."""
    if spec.label_code is not None:
        return None
    return next((c for c in spec.codes
                 if c.categorical and c.role == "code" and c.size == num_classes), None)


def key_metric(spec: LatentSpec, num_classes: int) -> tuple[str, bool]:
    """(the figure that ranks checkpoints of this family, whether higher is better)."""
    if spec.label_code is not None:
        return "label_agreement", True
    if info_code(spec, num_classes) is not None:
        return "code_accuracy", True
    return "classifier_fd", False


# ----------------------------------------------------------------------------- extractor


def _digest(model: Classifier) -> str:
    h = hashlib.sha256(repr(sorted(model.arch().items())).encode())
    for k, v in sorted(model.state_dict().items()):
        h.update(k.encode())
        h.update(v.detach().cpu().contiguous().numpy().tobytes())
    return h.hexdigest()[:12]


def register_classifier(model: Classifier) -> str:
    """Register `model` with torch-fidelity as a feature extractor; returns its name.

    The name carries a digest of the weights, so equal weights share one registration (names
    must be unique) and statistics cached for one classifier are never read for another.
    """
    from torch_fidelity import FeatureExtractorBase, register_feature_extractor
    from torch_fidelity.registry import FEATURE_EXTRACTORS_REGISTRY

    name = f"gancli-classifier-{_digest(model)}"
    if name in FEATURE_EXTRACTORS_REGISTRY:
        return name
    frozen = copy.deepcopy(model).cpu().eval()

    class ClassifierFeatures(FeatureExtractorBase):
        def __init__(self, name: str, features_list: list[str], **kwargs: Any) -> None:
            super().__init__(name, features_list)
            # a copy: torch-fidelity moves its extractor to the GPU, the registered one stays put
            self.model = copy.deepcopy(frozen)

        @staticmethod
        def get_provided_features_list() -> tuple[str, ...]:
            return ("features", "logits")

        @staticmethod
        def get_default_feature_layer_for_metric(metric: str) -> str:
            return "logits" if metric == "isc" else "features"

        @staticmethod
        def can_be_compiled() -> bool:
            return False

        @staticmethod
        def get_dummy_input_for_compile() -> torch.Tensor:
            return torch.zeros(1, 3, frozen.image_size, frozen.image_size, dtype=torch.uint8)

        def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, ...]:
            # inputs arrive as uint8 RGB (grey repeated): a grey classifier takes one channel back
            if self.model.channels == 1:
                x = x[:, :1]
            feats = self.model.features(to_input(x))
            out = {"features": feats, "logits": self.model.out(feats)}
            return tuple(out[k].float() for k in self.features_list)

    register_feature_extractor(name, ClassifierFeatures)
    return name


# ----------------------------------------------------------------------------- scoring


def _code_table(conf: np.ndarray, one_to_one: Mapping[int, int],
                many_to_one: Mapping[int, int]) -> list[dict[str, Any]]:
    """Per code value: its share of samples, its Hungarian class, its majority class and the
    share of its samples the classifier puts in the matched class."""
    total = max(int(conf.sum()), 1)
    rows = []
    for code in range(conf.shape[0]):
        count = int(conf[code].sum())
        cls = one_to_one.get(code)
        rows.append({"code": code, "share": round(count / total, 4), "class": cls,
                     "majority_class": many_to_one.get(code),
                     "agreement": round(float(conf[code, cls]) / count, 4)
                     if count and cls is not None else 0.0})
    return rows


def score_generator(loaded: LoadedGenerator, n: int = 10000, seed: int = 0,
                    device: torch.device | str = "cpu", classifier: Classifier | None = None, *,
                    classifier_info: Mapping[str, Any] | None = None, batch_size: int = 256,
                    progress: Callable[[str], None] | None = None,
                    images: torch.Tensor | None = None) -> dict[str, Any]:
    """Score a generator with the recipe classifier (trained and cached on first use).

    `loaded.generator` must be in eval mode. Returns a JSON-ready dict: the classifier's test
    accuracy, class shares, classifier_fd, and per family code_accuracy/code_purity/code_table
    or label_agreement, plus key_metric and higher_is_better. `images`, when given, are the n
    images of the latents drawn from `seed` (made already, e.g. across processes).
    """
    cfg = loaded.config
    check_labelled(cfg.data)
    if n < 2:
        raise GancliError(f"--n must be at least 2, got {n}")
    device = torch.device(device)
    info: dict[str, Any] = dict(classifier_info or {})
    if classifier is None:
        classifier, info = load_or_train(cfg.data, device, progress=progress)
    k = classifier.num_classes
    spec = loaded.spec

    latents = spec.sample(n, torch.Generator().manual_seed(seed))
    if images is None:   # split across processes when launched as several (else generate())
        images = generate_shared(loaded.generator, latents, device, batch_size)
    if images.shape[1] != classifier.channels or images.shape[-1] != classifier.image_size:
        raise GancliError(f"the generator makes {images.shape[1]}x{images.shape[-1]}px images, "
                          f"the classifier takes {classifier.channels}x{classifier.image_size}px")
    preds = predict(classifier, images, device, batch_size)

    shares = torch.bincount(preds, minlength=k).double().div(n).tolist()
    key, higher = key_metric(spec, k)
    out: dict[str, Any] = {
        "kind": "score", "model": cfg.model, "step": loaded.step, "ema": loaded.ema, "n": n,
        "seed": seed, "key_metric": key, "higher_is_better": higher,
        "classifier_accuracy": info.get("accuracy"),
        "classifier_balanced_accuracy": info.get("balanced_accuracy"),
        "classifier_recall_per_class": info.get("recall_per_class"),
        "classifier": info.get("path"),
        "class_shares": [round(s, 4) for s in shares],
        "min_share": round(min(shares), 4), "max_share": round(max(shares), 4),
        "classes_under_5pct": sum(s < RARE_SHARE for s in shares),
    }

    code = info_code(spec, k)
    if code is not None:
        conf = confusion(latents[code.name], preds, code.size, k)
        acc, one = hungarian_accuracy(conf)
        pur, many = purity(conf)
        out.update(code=code.name, code_accuracy=round(acc, 4), code_purity=round(pur, 4),
                   code_to_class={str(c): v for c, v in sorted(one.items())},
                   code_table=_code_table(conf, one, many), confusion=conf.tolist())
    names = loaded.class_names or info.get("class_names")
    if names and len(names) == k:
        out["class_names"] = list(names)
    label = spec.label_code
    if label is not None:
        asked = latents[label.name]
        hits = (preds == asked)
        out["label_agreement"] = round(float(hits.double().mean()), 4)
        out["label_agreement_per_class"] = [
            round(float(hits[asked == c].double().mean()), 4) if bool((asked == c).any()) else None
            for c in range(label.size)]

    fe = register_classifier(classifier)
    ref = recipe_reference(cfg.data, "test")
    fd = compute_metrics(TensorImages(images), ref, ["fid"], device=device, seed=seed,
                         batch_size=batch_size, feature_extractor=fe)
    out["classifier_fd"] = round(fd["fid"], 4)
    out["reference_cache"] = fd["reference_cache"]
    return out
