"""Computing FID, KID, IS and precision/recall: torch-fidelity's feature passes and metric
functions, with gancli holding the weights (gancli.metrics.weights) and the reference features.

torch-fidelity's own cache stores pickles and reads them back with a full unpickle, so it is never
used (``cache=False`` everywhere); gancli keeps each reference's features in a safetensors file
under ``cache_dir()/features/``, named by what made them (gancli.metrics.references.cache_name),
checked by its checksum on every read. Generated samples are never cached.
"""

from __future__ import annotations

import contextlib
import os
import urllib.error
from pathlib import Path
from typing import Any, Iterable, Iterator, Sequence

import torch
from torch.utils.data import Dataset

from gancli.errors import GancliError
from gancli.files import cache_dir, write_safetensors
from gancli.metrics.inputs import GeneratorInput, _fidelity_generator
from gancli.metrics.references import Reference, cache_name
from gancli.metrics.weights import (INCEPTION, VGG16, _reason, extractor_class,
                                    inception_weights, offline_message, vgg16_weights)

METRICS = ("fid", "kid", "isc", "prc")
ENV_EXTRACTOR = "GANCLI_FEATURE_EXTRACTOR"  # advanced/tests: a registered stand-in extractor
ENV_PRECISION = "GANCLI_INCEPTION_PRECISION"
PRECISIONS = ("auto", "fp32", "bf16")
KID_SUBSET = 1000      # torch-fidelity's default subset size (smaller sets use all they have)
KID_SUBSETS = 100

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


def parse_metrics(text: str | Iterable[str]) -> list[str]:
    items = text.split(",") if isinstance(text, str) else list(text)
    names = [m.strip().lower() for m in items if m.strip()]
    bad = [m for m in names if m not in METRICS]
    if bad or not names:
        raise GancliError(f"--metrics takes a comma list of {', '.join(METRICS)}; got "
                          f"'{','.join(items)}'")
    return list(dict.fromkeys(names))


def check_extractor(name: str) -> None:
    from torch_fidelity.registry import FEATURE_EXTRACTORS_REGISTRY

    if name not in FEATURE_EXTRACTORS_REGISTRY:
        raise GancliError(f"unknown feature extractor '{name}'; registered: "
                          f"{', '.join(sorted(FEATURE_EXTRACTORS_REGISTRY))}")


def features_cache() -> Path:
    return cache_dir() / "features"


def inception_precision(device: torch.device, asked: str | None = None) -> str:
    """fp32 unless bf16 is asked for (--precision, $GANCLI_INCEPTION_PRECISION) or "auto" finds
    hardware that runs it natively: a CPU with AMX-BF16 (measured: see docs/performance.md) or a
    CUDA GPU with bf16."""
    p = (asked or os.environ.get(ENV_PRECISION) or "fp32").lower()
    if p not in PRECISIONS:
        raise GancliError(f"Inception precision must be one of {', '.join(PRECISIONS)}, got '{p}'")
    if p != "auto":
        return p
    if device.type == "cuda":
        return "bf16" if torch.cuda.is_bf16_supported() else "fp32"
    from gancli.train.fast import cpu_has_fast_bf16

    return "bf16" if cpu_has_fast_bf16() else "fp32"


def make_extractor(extractor: str, layers: Sequence[str], device: torch.device, *,
                   inception_weights_path: str | Path | None = None,
                   vgg16_weights_path: str | Path | None = None, need_fc: bool = False,
                   precision: str = "fp32") -> tuple[torch.nn.Module, str]:
    """A feature extractor on `device` and the tag naming its weights (for cache names)."""
    from torch_fidelity.registry import FEATURE_EXTRACTORS_REGISTRY

    if extractor == INCEPTION:
        w = inception_weights(inception_weights_path, need_fc=need_fc)
        fe = extractor_class(INCEPTION)(INCEPTION, list(layers), weights=w, precision=precision,
                                        channels_last=device.type == "cpu")
        tag = w.tag
    elif extractor == VGG16:
        fe = extractor_class(VGG16)(VGG16, list(layers), weights=vgg16_weights(vgg16_weights_path))
        tag = "tv-imagenet1k-v1"
    else:
        fe = FEATURE_EXTRACTORS_REGISTRY[extractor](extractor, list(layers))
        tag = "registered"
    fe.requires_grad_(False)
    fe.eval()
    return fe.to(device), tag


def _layers_for(cls: Any, metrics: Sequence[str]) -> dict[str, str]:
    return {m: cls.get_default_feature_layer_for_metric(m) for m in metrics}


def extractor_layers(extractor: str, metrics: Sequence[str]) -> dict[str, str]:
    from torch_fidelity.registry import FEATURE_EXTRACTORS_REGISTRY

    return _layers_for(FEATURE_EXTRACTORS_REGISTRY[extractor], metrics)


def features_of(x: Dataset | GeneratorInput, fe: torch.nn.Module, device: torch.device,
                batch_size: int, seed: int, verbose: bool) -> dict[str, torch.Tensor]:
    """torch-fidelity's own feature pass over a dataset or a generator."""
    from torch_fidelity.utils import (get_featuresdict_from_dataset,
                                      get_featuresdict_from_generative_model)

    cuda = device.type == "cuda"
    if isinstance(x, GeneratorInput):
        x.rewind()
        return get_featuresdict_from_generative_model(_fidelity_generator(x), fe, x.n,
                                                      batch_size, cuda, seed, verbose)
    # save_cpu_ram: no DataLoader worker processes (in-memory sets gain nothing; files decode here)
    return get_featuresdict_from_dataset(x, fe, batch_size, cuda, True, verbose)


def reference_features(reference: Reference, fe: torch.nn.Module, name: str, layers: set[str],
                       device: torch.device, batch_size: int, seed: int, cache: bool,
                       verbose: bool) -> dict[str, torch.Tensor]:
    """The reference's features: from gancli's safetensors cache when present and complete,
    else computed (and stored)."""
    from gancli.checkpoint import read_tensors

    path = features_cache() / f"{name}.safetensors"
    if cache and path.is_file():
        try:
            meta, tensors = read_tensors(path)
            if meta.get("name") == name and layers <= set(tensors):
                return tensors
        except GancliError:
            pass  # damaged or foreign: computed again and replaced
    feats = features_of(reference.dataset, fe, device, batch_size, seed, verbose)
    if cache:
        try:
            write_safetensors(path, {k: v.float() for k, v in feats.items()},
                              {"name": name, "reference": reference.description})
        except (GancliError, OSError) as e:
            print(f"note: reference features not cached ({_reason(e)})")
    return feats


def _length(x: Dataset | GeneratorInput) -> int:
    return x.n if isinstance(x, GeneratorInput) else len(x)


def compute_metrics(input1: Dataset | GeneratorInput, reference: Reference,
                    metrics: Sequence[str] = ("fid", "kid"), *,
                    device: torch.device | str = "cpu", batch_size: int = 128, seed: int = 0,
                    feature_extractor: str | None = None,
                    inception_weights_path: str | Path | None = None,
                    vgg16_weights_path: str | Path | None = None, cache: bool = True,
                    verbose: bool = False, precision: str | None = None,
                    kid_subset_size: int = KID_SUBSET,
                    kid_subsets: int = KID_SUBSETS) -> dict[str, Any]:
    """FID/KID/IS/PRC of input1 against the reference: gancli's metric names -> floats, plus
    "feature_extractor" and "reference_cache" (the cache names used) and "precision".

    fid/kid/isc use Inception (or `feature_extractor`), prc uses VGG16; a chosen extractor serves
    every metric. Only the reference's features are cached."""
    from torch_fidelity.metric_fid import fid_featuresdict_to_statistics, fid_statistics_to_metric
    from torch_fidelity.metric_isc import isc_featuresdict_to_metric
    from torch_fidelity.metric_kid import kid_featuresdict_to_metric
    from torch_fidelity.metric_prc import prc_featuresdict_to_metric

    metrics = parse_metrics(metrics)
    device = torch.device(device)
    fe_name = feature_extractor or os.environ.get(ENV_EXTRACTOR) or None
    if fe_name and fe_name != INCEPTION:
        check_extractor(fe_name)
        calls = [(fe_name, metrics)]
    else:
        calls = [(INCEPTION, [m for m in metrics if m != "prc"]),
                 (VGG16, [m for m in metrics if m == "prc"])]
        calls = [(e, ms) for e, ms in calls if ms]
    prec = inception_precision(device, precision)

    n1 = _length(input1)
    results: dict[str, Any] = {}
    names: dict[str, str] = {}
    for extractor, wanted in calls:
        layers = extractor_layers(extractor, wanted)
        try:
            fe, tag = make_extractor(extractor, sorted(set(layers.values())), device,
                                     inception_weights_path=inception_weights_path,
                                     vgg16_weights_path=vgg16_weights_path,
                                     need_fc="isc" in wanted, precision=prec)
            f1 = features_of(input1, fe, device, batch_size, seed, verbose)
            f2 = None
            binary = [m for m in wanted if m != "isc"]
            if binary:
                ref_layers = {layers[m] for m in binary}
                name = cache_name(reference, extractor, tag, prec if extractor == INCEPTION
                                  else "fp32")
                names[extractor] = name
                with _only(fe, ref_layers) as ref_fe:
                    f2 = reference_features(reference, ref_fe, name, ref_layers, device,
                                            batch_size, seed, cache, verbose)
        except (urllib.error.URLError, ConnectionError, TimeoutError) as e:
            raise GancliError(offline_message(extractor, _reason(e))) from None
        kw: dict[str, Any] = dict(verbose=verbose, rng_seed=seed, samples_shuffle=True)
        raw: dict[str, float] = {}
        if "isc" in wanted:
            raw.update(isc_featuresdict_to_metric(f1, layers["isc"], **kw,
                                                  isc_splits=max(1, min(10, n1 // 2))))
        if "fid" in wanted:
            s1 = fid_featuresdict_to_statistics(f1, layers["fid"])
            s2 = fid_featuresdict_to_statistics(f2, layers["fid"])
            raw.update(fid_statistics_to_metric(s1, s2, verbose))
        if "kid" in wanted:
            size = min(kid_subset_size, n1, len(f2[layers["kid"]]))
            raw.update(kid_featuresdict_to_metric(f1, f2, layers["kid"], **kw,
                                                  kid_subset_size=size, kid_subsets=kid_subsets))
        if "prc" in wanted:
            raw.update(prc_featuresdict_to_metric(f1, f2, layers["prc"], **kw,
                                                  save_cpu_ram=True))
        results.update({_KEYS.get(k, k): float(v) for k, v in raw.items()})
    results["feature_extractor"] = ",".join(e for e, _ in calls)
    results["reference_cache"] = ",".join(names.values())
    results["inception_precision"] = prec
    return results


@contextlib.contextmanager
def _only(fe: torch.nn.Module, layers: set[str]) -> Iterator[torch.nn.Module]:
    """The same extractor asked for fewer features (the reference needs no IS logits): its
    forward stops as soon as the last wanted layer is out."""
    full = fe.features_list
    fe.features_list = [f for f in full if f in layers]
    try:
        yield fe
    finally:
        fe.features_list = full


# Images per second per CPU core of the 299 px Inception pass, measured on a 2-core Xeon with
# AMX-BF16 (benchmarks/inception.py; docs/performance.md). Only for the "how long" note.
_CPU_RATE = {"fp32": 5.0, "bf16": 12.0}


def cpu_estimate(n: int, precision: str) -> str:
    """A rough "how long" for n images on this CPU (the features of the reference come on top
    the first time)."""
    from gancli.data.pixels import _cpus

    rate = _CPU_RATE.get(precision, _CPU_RATE["fp32"]) * _cpus()
    s = n / rate
    return f"{s / 60:.0f} min" if s >= 90 else f"{s:.0f} s"
