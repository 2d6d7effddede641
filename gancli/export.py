"""`gancli export`: a generator as an ONNX model, or as the smallest file gancli's commands take.

ONNX (needs the `export` extra: onnx and onnxruntime). The graph has one input per latent, named
by code, each with a dynamic batch axis: ``z`` float32 [batch, noise_dim]; a categorical code or
label (``c1``, ``label``) int64 [batch] holding indices 0..K-1; a continuous code float32 [batch].
Its one output, ``image``, is NCHW, either uint8 0..255 (rounded exactly as `gancli sample` does)
or float32 in [-1, 1] (the generator's tanh). The model's metadata_props carry the latent spec and
the config JSON (``gancli_latent_spec``, ``gancli_config``, ...). Exported with torch's
TorchScript-based exporter (``dynamo=False``): the torch.export-based one needs onnxscript, which
gancli does not depend on. Before anything is written, the exported model runs in onnxruntime on
random latents (a batch of CHECK_BATCHES[0], then of 1) against the torch generator; a larger
difference than TOLERANCE stops the export with one line.

safetensors: the generator's weights and its metadata (model, config, step, EMA or not, the latent
spec, a SHA-256 of it all): a generator file exactly like a checkpoint's
``generator_ema.safetensors``, which `sample`, `traverse`, `interpolate`, `fid` and `score` take
as RUN. It is loaded back before it is put in place.
"""

from __future__ import annotations

import io
import json
import os
import sys
import warnings
from contextlib import contextmanager
from copy import deepcopy
from pathlib import Path
from typing import Any, Callable, Iterator

import numpy as np
import torch
from torch import nn

from gancli import __version__
from gancli.checkpoint import LoadedGenerator, generator_metadata, load_generator
from gancli.data import to_uint8
from gancli.errors import GancliError
from gancli.files import atomic_path, write_safetensors
from gancli.latent import Latents, LatentSpec

FORMATS = ("onnx", "safetensors")
OUTPUTS = ("uint8", "float")
SUFFIX = {"onnx": ".onnx", "safetensors": ".safetensors"}
ONNX_FORMAT = "gancli-onnx-generator"
OPSET = 17
OUTPUT_NAME = "image"
CHECK_SEED = 12345            # the random latents the check runs on
CHECK_BATCHES = (4, 1)        # batch sizes checked: a few latents, and batch 1 (the dynamic axis)
# Largest |onnxruntime - torch| accepted: one grey level for uint8 (a float difference of 1e-7
# can round a pixel the other way), 1e-4 of the [-1, 1] range for float.
TOLERANCE = {"uint8": 1.0, "float": 1e-4}
MAX_ONNX_BYTES = 2 * 2 ** 30 - 64 * 2 ** 20   # a single-file ONNX model (protobuf) is under 2 GiB
MISSING_EXTRA = "ONNX export needs the export extra: pip install 'gancli[export]'"


def require_onnx() -> tuple[Any, Any]:
    """(onnx, onnxruntime), or one line saying how to install them."""
    try:
        import onnx
        import onnxruntime
    except ImportError:
        raise GancliError(MISSING_EXTRA) from None
    return onnx, onnxruntime


def check_options(fmt: str, output: str | None, out: Path | None) -> str:
    """Check --format, --output and --out's suffix; returns the ONNX output kind."""
    if fmt not in FORMATS:
        raise GancliError(f"--format must be onnx or safetensors, got '{fmt}'")
    if output is not None and fmt != "onnx":
        raise GancliError(f"--output {output}: --output applies to --format onnx only")
    kind = output or "uint8"
    if kind not in OUTPUTS:
        raise GancliError(f"--output must be uint8 (0..255) or float ([-1, 1]), got '{kind}'")
    if out is not None and out.suffix.lower() != SUFFIX[fmt]:
        raise GancliError(f"--out {out}: --format {fmt} writes a {SUFFIX[fmt]} file")
    return kind


def input_names(spec: LatentSpec) -> list[str]:
    return ["z", *spec.names()]


def spec_dict(spec: LatentSpec) -> dict[str, Any]:
    """The latent spec as JSON: the codes, and the graph inputs they become."""
    codes, inputs = [], [{"name": "z", "dtype": "float32", "shape": ["batch", spec.noise_dim],
                          "noise": spec.noise}]
    for c in spec.codes:
        if c.categorical:
            codes.append({"name": c.name, "kind": c.kind, "size": c.size, "role": c.role})
            inputs.append({"name": c.name, "dtype": "int64", "shape": ["batch"],
                           "values": f"0..{c.size - 1}"})
        else:
            codes.append({"name": c.name, "kind": c.kind, "low": c.low, "high": c.high,
                          "role": c.role})
            inputs.append({"name": c.name, "dtype": "float32", "shape": ["batch"],
                           "training_range": [c.low, c.high]})
    return {"noise_dim": spec.noise_dim, "noise": spec.noise, "codes": codes, "inputs": inputs}


class ExportedGenerator(nn.Module):
    """The generator with positional inputs (one per latent, in `names` order) and the image
    output the export promises: uint8 0..255 or float [-1, 1].

    A categorical index becomes its one-hot here, as its row of the K x K identity (a Gather:
    the same float rows F.one_hot gives, and an index outside 0..K-1 is an error in
    onnxruntime rather than a silent row of zeros as with ONNX's OneHot)."""

    def __init__(self, generator: nn.Module, spec: LatentSpec, output: str) -> None:
        super().__init__()
        self.generator, self.names, self.uint8 = generator, tuple(input_names(spec)), \
            output == "uint8"
        self.sizes = {c.name: c.size for c in spec.codes if c.categorical}

    def forward(self, *inputs: torch.Tensor) -> torch.Tensor:
        latents = {}
        for name, x in zip(self.names, inputs):
            if name in self.sizes:
                x = torch.eye(self.sizes[name], device=x.device)[x]
            latents[name] = x
        image = self.generator(latents).float()
        return to_uint8(image) if self.uint8 else image


def exportable(generator: nn.Module) -> nn.Module:
    """A copy of `generator` that the TorchScript exporter takes with a dynamic batch: a
    BatchNorm without its own affine (cgan's conditional ones) gets weight 1 and bias 0, the
    same numbers, because the exporter must otherwise know its channel count from shape
    inference, which loses it after a reshape whose batch is dynamic."""
    copy = deepcopy(generator)
    for m in copy.modules():
        if isinstance(m, nn.modules.batchnorm._BatchNorm) and not m.affine:
            like = m.running_mean if m.running_mean is not None else torch.empty(0)
            m.weight = nn.Parameter(torch.ones(m.num_features, device=like.device),
                                    requires_grad=False)
            m.bias = nn.Parameter(torch.zeros(m.num_features, device=like.device),
                                  requires_grad=False)
            m.affine = True
    return copy.eval()


@contextmanager
def _quiet() -> Iterator[None]:
    """Silence file descriptors 1 and 2 for the exporter: on a failure torch's C++ side prints
    the whole TorchScript graph to stdout (its ONNX log is left on), and a failure is one line."""
    sys.stdout.flush()
    sys.stderr.flush()
    saved = []
    try:
        null = os.open(os.devnull, os.O_WRONLY)
    except OSError:
        yield
        return
    try:
        for fd in (1, 2):
            try:
                saved.append((fd, os.dup(fd)))
                os.dup2(null, fd)
            except OSError:
                pass
        yield
    finally:
        for fd, copy in saved:
            os.dup2(copy, fd)
            os.close(copy)
        os.close(null)


def _first(e: BaseException) -> str:
    lines = str(e).strip().splitlines()
    text = lines[0] if lines else type(e).__name__
    return text if len(text) <= 200 else text[:197] + "..."


def onnx_metadata(g: LoadedGenerator, output: str) -> dict[str, str]:
    return {"gancli_format": ONNX_FORMAT, "gancli_version": __version__,
            "gancli_model": g.config.model, "gancli_recipe": g.config.recipe,
            "gancli_step": str(g.step), "gancli_ema": "true" if g.ema else "false",
            "gancli_output": output,
            "gancli_latent_spec": json.dumps(spec_dict(g.spec), sort_keys=True),
            "gancli_config": g.config.to_json()}


def _session(ort: Any, data: bytes) -> Any:
    options = ort.SessionOptions()
    options.log_severity_level = 3   # errors only
    return ort.InferenceSession(data, options, providers=["CPUExecutionProvider"])


def reference(generator: nn.Module, output: str) -> Callable[[Latents], torch.Tensor]:
    """The torch side of the check: the generator as gancli's own commands run it (int64
    categorical codes, its own one-hot), with the output the export promises."""
    def run(latents: Latents) -> torch.Tensor:
        with torch.no_grad():
            image = generator(latents).float()
        return to_uint8(image) if output == "uint8" else image
    return run


def compare(session: Any, torch_side: Callable[[Latents], torch.Tensor], spec: LatentSpec,
            batches: tuple[int, ...] = CHECK_BATCHES, seed: int = CHECK_SEED) -> float:
    """Largest |onnxruntime - torch| over random latents, one batch per entry of `batches`."""
    gen = torch.Generator().manual_seed(seed)
    worst, names = 0.0, input_names(spec)
    for n in batches:
        latents = spec.sample(n, gen)
        want = torch_side(latents).numpy()
        got = session.run([OUTPUT_NAME], {k: latents[k].numpy() for k in names})[0]
        if got.shape != want.shape or got.dtype != want.dtype:
            raise GancliError(f"the exported ONNX model gives {got.dtype} {list(got.shape)} for "
                              f"a batch of {n}; torch gives {want.dtype} {list(want.shape)}: "
                              f"nothing written (a gancli bug: please report it)")
        worst = max(worst, float(np.abs(got.astype(np.float64) - want.astype(np.float64)).max()))
    return worst


def export_onnx(g: LoadedGenerator, target: Path, output: str) -> dict[str, Any]:
    """Export, check in onnxruntime, then write `target` atomically. Returns what to report."""
    onnx, ort = require_onnx()
    spec, names = g.spec, input_names(g.spec)
    weights = sum(t.numel() * t.element_size() for t in g.generator.state_dict().values())
    if weights > MAX_ONNX_BYTES:
        raise GancliError(f"the generator's weights take {weights / 2 ** 30:.1f} GiB, more than "
                          f"a single-file ONNX model holds (2 GiB): export --format safetensors")
    exported = ExportedGenerator(exportable(g.generator), spec, output).eval()
    example = spec.sample(2, torch.Generator().manual_seed(CHECK_SEED))
    buf = io.BytesIO()
    with warnings.catch_warnings(), _quiet():
        # the TorchScript-based exporter announces its own deprecation, and the tracer warns
        # about Python-level checks that do not depend on the batch
        warnings.simplefilter("ignore")
        torch.onnx.export(exported, tuple(example[k] for k in names), buf, input_names=names,
                          output_names=[OUTPUT_NAME], opset_version=OPSET, dynamo=False,
                          dynamic_axes={k: {0: "batch"} for k in [*names, OUTPUT_NAME]})
    proto = onnx.load_from_string(buf.getvalue())
    onnx.helper.set_model_props(proto, onnx_metadata(g, output))
    values = "uint8 0..255" if output == "uint8" else "float [-1, 1]"
    proto.doc_string = (f"gancli {g.config.model} generator, step {g.step}"
                        f"{' (EMA)' if g.ema else ''}: latents {', '.join(names)} -> "
                        f"{OUTPUT_NAME} ({values}, NCHW)")
    onnx.checker.check_model(proto)
    data = proto.SerializeToString()
    try:
        session = _session(ort, data)
    except Exception as e:  # onnxruntime's own errors share no base class
        raise GancliError(f"onnxruntime cannot load the exported model ({_first(e)}): nothing "
                          f"written (a gancli bug: please report it)") from None
    diff = compare(session, reference(g.generator, output), spec)
    tol = TOLERANCE[output]
    unit = " of 255" if output == "uint8" else ""
    if not diff <= tol:
        raise GancliError(f"the exported ONNX model differs from the torch generator by "
                          f"{diff:.3g}{unit} on random latents, more than the tolerance "
                          f"{tol:g}: nothing written (a gancli bug: please report it)")
    with atomic_path(target) as tmp:
        tmp.write_bytes(data)
    return {"path": target, "inputs": names, "max_abs_diff": diff, "tolerance": tol,
            "unit": unit, "bytes": len(data), "checked": sum(CHECK_BATCHES)}


def export_safetensors(g: LoadedGenerator, target: Path) -> dict[str, Any]:
    """The generator file alone, loaded back (from its temporary name) before it is put in
    place."""
    tensors = g.generator.state_dict()
    meta = generator_metadata(g.config, g.step, g.ema, g.class_names)
    meta["latent_spec"] = json.dumps(spec_dict(g.spec), sort_keys=True)
    with atomic_path(target) as tmp:
        write_safetensors(tmp, tensors, meta)
        back = load_generator(tmp)
        again = back.generator.state_dict()
        if again.keys() != tensors.keys() or not all(torch.equal(again[k], tensors[k].cpu())
                                                      for k in tensors):
            raise GancliError(f"{target}: the written generator does not load back as written: "
                              f"nothing written (a gancli bug: please report it)")
        size = tmp.stat().st_size
    return {"path": target, "bytes": size}


def load(run: str, ema: bool, step: int | None) -> LoadedGenerator:
    """The generator to export, on the CPU (exporting and checking run there)."""
    return load_generator(run, ema=ema, step=step, device="cpu")
