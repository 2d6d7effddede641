"""Checkpoints: safetensors files that describe themselves, written atomically.

A run directory holds ``checkpoints/step-NNNNNNN/`` with ``generator.safetensors``,
``generator_ema.safetensors``, ``discriminator.safetensors``, ``optimizer_g.safetensors``,
``optimizer_d.safetensors`` and ``state.json``. A generator file carries the model name and the full
config in its metadata, so a generation command can rebuild the network from that file alone.
"""

from __future__ import annotations

import json
import math
import os
import re
import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Sequence

import torch
from safetensors import SafetensorError, safe_open
from torch import nn

from gancli import __version__
from gancli.errors import GancliError
from gancli.files import (atomic_dir, stored_digest, tensor_digest, write_json,
                          write_safetensors)
from gancli.latent import LatentSpec
from gancli.recipes import Config

FORMAT = "gancli-generator"
STEP_DIR = re.compile(r"^step-(\d+)$")


def step_dir_name(step: int) -> str:
    return f"step-{step:07d}"


def generator_metadata(cfg: Config, step: int, ema: bool,
                       class_names: Sequence[str] | None = None) -> dict[str, str]:
    """A generator file's metadata. `class_names` (the data set's, one per label value) let
    generation commands take a label by name (`sample --label Flags`) from the file alone."""
    meta = {"format": FORMAT, "gancli_version": __version__, "model": cfg.model,
            "config": cfg.to_json(), "step": str(step), "ema": "true" if ema else "false"}
    if class_names:
        meta["class_names"] = json.dumps([str(n) for n in class_names], ensure_ascii=False)
    return meta


MAX_CLASS_NAME = 200             # characters of one class name read from a file


def read_class_names(meta: dict[str, str], cfg: Config) -> tuple[str, ...] | None:
    """The class names a generator file records, else those its data source always has (files
    written before names were recorded); None when neither gives one name per class. Names are
    only ever shown and matched, so a malformed entry is ignored rather than refused."""
    k = int(cfg.data.num_classes or 0)
    names: Any = None
    try:
        names = json.loads(meta["class_names"]) if "class_names" in meta else None
    except ValueError:
        names = None
    if not (isinstance(names, list) and all(isinstance(n, str) for n in names)):
        from gancli.data import fixed_class_names

        names = fixed_class_names(cfg.data.source)
    if not names or len(names) != k:
        return None
    # one line each, whatever a folder or a file called them: they go into error lines
    return tuple(re.sub(r"[\x00-\x1f\x7f]", "?", n)[:MAX_CLASS_NAME] for n in names)


def optimizer_tensors(opt: torch.optim.Optimizer) -> tuple[dict[str, torch.Tensor], dict[str, Any]]:
    """Split an optimiser's state dict into tensors (for safetensors) and the rest (for JSON)."""
    sd = opt.state_dict()
    tensors: dict[str, torch.Tensor] = {}
    scalars: dict[str, dict[str, Any]] = {}
    for idx, st in sd["state"].items():
        for k, v in st.items():
            if torch.is_tensor(v):
                tensors[f"state.{idx}.{k}"] = v
            else:
                scalars.setdefault(str(idx), {})[k] = v
    return tensors, {"param_groups": sd["param_groups"], "scalars": scalars}


def load_optimizer(opt: torch.optim.Optimizer, tensors: dict[str, torch.Tensor],
                   rest: dict[str, Any]) -> None:
    """Put a saved optimiser state back, after checking that it fits `opt`'s parameters (torch
    checks the groups, but not the shapes of the moments, which would fail at the next step)."""
    try:
        state: dict[int, dict[str, Any]] = {}
        for key, v in tensors.items():
            _, idx, k = key.split(".", 2)
            state.setdefault(int(idx), {})[k] = v
        for idx, kv in rest.get("scalars", {}).items():
            state.setdefault(int(idx), {}).update(dict(kv))
        groups = rest["param_groups"]
        _check_param_groups(groups)
        params = [p for g in opt.param_groups for p in g["params"]]
        for idx, st in state.items():
            if not 0 <= idx < len(params):
                raise ValueError(f"state for parameter {idx}; the model has {len(params)}")
            for k, v in st.items():
                if torch.is_tensor(v) and v.dim() > 0 and v.shape != params[idx].shape:
                    raise ValueError(f"{k} of parameter {idx} is {tuple(v.shape)}, the "
                                     f"parameter {tuple(params[idx].shape)}")
        opt.load_state_dict({"state": state, "param_groups": groups})
        _match_layouts(opt)
    except (ValueError, KeyError, TypeError, AttributeError, IndexError, RuntimeError) as e:
        raise GancliError(f"the checkpoint's optimizer state does not match the model "
                          f"({_first(e)}): resume a checkpoint of this run, or start a new "
                          f"run") from None


def _match_layouts(opt: torch.optim.Optimizer) -> None:
    """Moments read from a file are contiguous; a channels_last parameter's must be channels_last
    too. Fused Adam walks parameter, gradient and moments as flat memory, so moments in another
    layout would be applied to the wrong elements (measured: resume stopped being exact)."""
    for group in opt.param_groups:
        for p in group["params"]:
            st = opt.state.get(p, {})
            for k, v in st.items():
                if torch.is_tensor(v) and v.shape == p.shape and v.stride() != p.stride():
                    st[k] = torch.empty_like(p, dtype=v.dtype).copy_(v)


def _check_param_groups(groups: Any) -> None:
    """Saved optimiser settings are JSON: each group a dict whose numbers (lr, betas, eps, ...)
    are finite, so a damaged state.json cannot feed NaN into every weight."""
    if not isinstance(groups, list):
        raise ValueError("param_groups is not a list")
    for g in groups:
        if not isinstance(g, dict):
            raise ValueError("a param group is not an object")
        for k, v in g.items():
            items = v if isinstance(v, (list, tuple)) and k != "params" else [v]
            for x in items:
                if isinstance(x, float) and not math.isfinite(x):
                    raise ValueError(f"{k} is {x}")


def save_checkpoint(run_dir: Path, step: int, cfg: Config, *, generator: nn.Module,
                    discriminator: nn.Module, generator_ema: nn.Module | None,
                    opt_g: torch.optim.Optimizer, opt_d: torch.optim.Optimizer,
                    state: dict[str, Any], name: str | None = None,
                    extra_tensors: dict[str, torch.Tensor] | None = None,
                    class_names: Sequence[str] | None = None) -> Path:
    """Write one checkpoint directory, atomically as a whole: readers see all files or none.

    `state` goes to state.json; `extra_tensors` (random generator states, the preview latents)
    to training_state.safetensors; `class_names` into the generator files' metadata."""
    target = run_dir / "checkpoints" / (name or step_dir_name(step))
    with atomic_dir(target) as tmp:
        if extra_tensors:
            write_safetensors(tmp / "training_state.safetensors", extra_tensors,
                              {"gancli_version": __version__})
        write_safetensors(tmp / "generator.safetensors", generator.state_dict(),
                          generator_metadata(cfg, step, ema=False, class_names=class_names))
        if generator_ema is not None:
            write_safetensors(tmp / "generator_ema.safetensors", generator_ema.state_dict(),
                              generator_metadata(cfg, step, ema=True, class_names=class_names))
        write_safetensors(tmp / "discriminator.safetensors", discriminator.state_dict(),
                          {"format": "gancli-discriminator", "model": cfg.model,
                           "step": str(step), "gancli_version": __version__})
        opt_state = {}
        for key, opt in (("optimizer_g", opt_g), ("optimizer_d", opt_d)):
            tensors, rest = optimizer_tensors(opt)
            write_safetensors(tmp / f"{key}.safetensors", tensors, {"gancli_version": __version__})
            opt_state[key] = rest
        write_json(tmp / "state.json", {"step": step, "gancli_version": __version__,
                                        "config": cfg.to_dict(), "optimizers": opt_state, **state})
    return target


def step_dirs(run_dir: Path) -> list[tuple[int, Path]]:
    root = run_dir / "checkpoints"
    if not root.is_dir():
        return []
    found = [(int(m.group(1)), p) for p in root.iterdir() if (m := STEP_DIR.match(p.name))]
    return sorted(found)


def prune_checkpoints(run_dir: Path, keep_last: int) -> list[Path]:
    """Delete all but the `keep_last` newest step checkpoints (0 keeps all). Named ones such as
    best/ are never touched, nor is the newest. Each goes in one rename first, so a reader never
    meets a half-deleted step directory under its real name."""
    if keep_last <= 0:
        return []
    removed = []
    for _, p in step_dirs(run_dir)[:-keep_last]:
        doomed = p.with_name(f".{p.name}.deleting")
        os.replace(p, doomed)
        shutil.rmtree(doomed, ignore_errors=True)
        removed.append(p)
    return removed


def clean_stale(run_dir: Path) -> list[Path]:
    """Remove what an interrupted writer left behind: hidden temporary files and directories
    (``.NAME.tmp.*``, ``.NAME.*.tmp``, ``.NAME.old``, ``.NAME.deleting``). They are never read."""
    removed = []
    for folder in (run_dir, run_dir / "checkpoints", run_dir / "samples"):
        if not folder.is_dir():
            continue
        for p in folder.iterdir():
            if p.name.endswith(".old") and p.name.startswith("."):
                live = p.with_name(p.name[1:-4])
                if not live.exists():   # killed between atomic_dir's two renames: put it back
                    os.replace(p, live)
                    continue
            if p.name.startswith(".") and (".tmp" in p.name or p.name.endswith((".old", ".deleting"))):
                if p.is_dir():
                    shutil.rmtree(p, ignore_errors=True)
                else:
                    p.unlink(missing_ok=True)
                removed.append(p)
    return removed


def load_training_tensors(step_dir: Path) -> dict[str, torch.Tensor]:
    """training_state.safetensors (random states, preview latents); empty for older checkpoints."""
    f = step_dir / "training_state.safetensors"
    return load_tensors(f) if f.is_file() else {}


def newest_run(root: str | Path = "runs") -> Path:
    """The run under `root` (./runs by default) that changed last: the newest of its config,
    metrics and checkpoints. What commands use when no RUN is named."""
    root = Path(root)
    runs = [d for d in root.iterdir() if (d / "config.json").is_file()] if root.is_dir() else []
    if not runs:
        raise GancliError(f"no run under ./{root.as_posix()}: train one first (gancli train "
                          f"infogan) or name a RUN")

    def changed(d: Path) -> float:
        parts = [d / "config.json", d / "metrics.jsonl", d / "checkpoints"]
        parts += [p for _, p in step_dirs(d)[-1:]]
        return max(p.stat().st_mtime for p in parts if p.exists())

    return max(runs, key=lambda d: (changed(d), d.name))


def latest_step_dir(run_dir: Path) -> Path:
    dirs = step_dirs(run_dir)
    if not dirs:
        raise GancliError(f"{run_dir} has no checkpoints (expected {run_dir}/checkpoints/step-*/)")
    return dirs[-1][1]


def find_generator(path: str | Path, ema: bool = True, step: int | None = None) -> Path:
    """The generator file a user means by a run directory, a step directory or a file."""
    p = Path(path)
    if not p.exists():
        raise GancliError(f"no such run, checkpoint or file: {path}")
    if p.is_file():
        return p
    if step is not None:
        p = p / "checkpoints" / step_dir_name(step)
        if not p.is_dir():
            raise GancliError(f"{path} has no checkpoint for step {step}")
    elif not (p / "generator.safetensors").is_file():
        p = latest_step_dir(p) if (p / "checkpoints").is_dir() else p
    ema_file, raw_file = p / "generator_ema.safetensors", p / "generator.safetensors"
    if ema and ema_file.is_file():
        return ema_file
    if raw_file.is_file():
        return raw_file
    raise GancliError(f"{p} holds no generator.safetensors")


@dataclass
class LoadedGenerator:
    generator: nn.Module
    spec: LatentSpec
    config: Config
    step: int
    ema: bool
    path: Path
    class_names: tuple[str, ...] | None = None   # one per label value, when known


# Files from elsewhere are untrusted: bound what gancli reads before it parses anything.
MAX_HEADER = 16 * 2 ** 20        # a safetensors header (JSON) larger than this is refused
MAX_CONFIG = 2 ** 20             # so is a "config" metadata string over 1 MiB
MAX_JSON = 64 * 2 ** 20          # and a state.json / config.json over 64 MiB
_AGAIN = "copy it again, or use another checkpoint (--step)"


def _first(e: BaseException) -> str:
    lines = str(e).strip().splitlines()
    text = lines[0] if lines else type(e).__name__
    return text if len(text) <= 200 else text[:197] + "..."


def _version(v: str) -> tuple[int, ...] | None:
    m = re.match(r"(\d{1,6})\.(\d{1,6})(?:\.(\d{1,6}))?", v.strip())
    return tuple(int(x or 0) for x in m.groups()) if m else None


def check_version(found: Any, where: str | Path) -> None:
    """Refuse what a newer gancli wrote: it may hold what this one would misread. Files without
    a version (older ones) pass."""
    if found is None:
        return
    mine = _version(__version__)
    theirs = _version(found) if isinstance(found, str) else None
    if theirs is None:
        raise GancliError(f"{where}: unreadable gancli_version {str(found)[:40]!r}: "
                          f"not a gancli file")
    if mine is not None and theirs > mine:
        raise GancliError(f"{where} was written by gancli {found}; this is gancli {__version__}: "
                          f"upgrade (pip install -U gancli)")


def _check_header(path: Path) -> None:
    """The first 8 bytes of a safetensors file give its header's length: check it is sane and
    fits the file before safetensors reads (and allocates) it."""
    try:
        size = path.stat().st_size
        with open(path, "rb") as f:
            head = f.read(8)
    except OSError as e:
        raise GancliError(f"cannot read {path}: {e.strerror or e}") from None
    if len(head) < 8:
        raise GancliError(f"{path} is not a readable safetensors file (truncated: {size} "
                          f"bytes): {_AGAIN}")
    n = int.from_bytes(head, "little")
    if n > MAX_HEADER:
        raise GancliError(f"{path} is not a readable safetensors file (its header claims "
                          f"{n:,} bytes, more than the {MAX_HEADER // 2 ** 20} MiB gancli "
                          f"reads): not a gancli checkpoint")
    if 8 + n > size:
        raise GancliError(f"{path} is not a readable safetensors file (truncated: its header "
                          f"needs {8 + n:,} bytes, the file has {size:,}): {_AGAIN}")


def read_metadata(path: Path) -> dict[str, str]:
    """A safetensors file's metadata, after checking its header's size and its writer's
    version. The tensors are neither read nor verified (load_tensors does that)."""
    path = Path(path)
    _check_header(path)
    try:
        with safe_open(str(path), framework="pt") as f:
            meta = dict(f.metadata() or {})
    except (SafetensorError, OSError, ValueError, RuntimeError) as e:
        raise GancliError(f"{path} is not a readable safetensors file ({_first(e)}): "
                          f"{_AGAIN}") from None
    check_version(meta.get("gancli_version"), path)
    if len(meta.get("config", "")) > MAX_CONFIG:
        raise GancliError(f"{path}: its config metadata is {len(meta['config']):,} bytes, more "
                          f"than the {MAX_CONFIG // 2 ** 20} MiB gancli reads: not a gancli "
                          f"checkpoint")
    return meta


def read_tensors(path: Path) -> tuple[dict[str, str], dict[str, torch.Tensor]]:
    """(metadata, tensors) of a safetensors file, verified against the checksum gancli's writer
    stores in the metadata (files without one, from older versions, are taken unverified)."""
    path = Path(path)
    meta = read_metadata(path)
    try:
        with safe_open(str(path), framework="pt") as f:
            tensors = {k: f.get_tensor(k) for k in f.keys()}
    except (SafetensorError, OSError, ValueError, RuntimeError) as e:
        raise GancliError(f"{path} is corrupt or truncated ({_first(e)}): {_AGAIN}") from None
    want = stored_digest(meta)
    if want is not None and tensor_digest(tensors, meta) != want:
        raise GancliError(f"{path} is corrupt: its contents do not match the checksum written "
                          f"with them (a damaged or altered file): {_AGAIN}")
    return meta, tensors


def load_tensors(path: Path) -> dict[str, torch.Tensor]:
    """Every tensor of a safetensors file, verified (see read_tensors)."""
    return read_tensors(path)[1]


def read_json_file(path: Path, what: str) -> dict[str, Any]:
    """A JSON object from a file gancli wrote (state.json, config.json): bounded in size, and
    refused when a newer gancli wrote it. `what` starts the error line."""
    try:
        size = path.stat().st_size
        if size > MAX_JSON:
            raise GancliError(f"{what}: {path.name} is {size:,} bytes, more than the "
                              f"{MAX_JSON // 2 ** 20} MiB gancli reads")
        d = json.loads(path.read_text(encoding="utf-8"))
    except GancliError:
        raise
    except (OSError, ValueError, RecursionError) as e:  # also bad UTF-8 and bad JSON
        raise GancliError(f"{what} ({path.name} is missing or corrupt: {_first(e)})") from None
    if not isinstance(d, dict):
        raise GancliError(f"{what} ({path.name} does not hold a JSON object)")
    check_version(d.get("gancli_version"), path)
    return d


def load_generator(path: str | Path, ema: bool = True, step: int | None = None,
                   device: str | torch.device = "cpu") -> LoadedGenerator:
    """Rebuild a generator from its file alone: the metadata names the model and its config."""
    from gancli.models import get_family

    file = find_generator(path, ema=ema, step=step)
    meta = read_metadata(file)
    if meta.get("format") != FORMAT or "config" not in meta or "model" not in meta:
        raise GancliError(f"{file} is not a gancli generator checkpoint (no gancli metadata)")
    meta, tensors = read_tensors(file)   # verified before anything in it is believed
    step = read_step(meta, file)
    try:
        cfg = Config.from_json(meta["config"])
        if cfg.model != meta["model"]:
            raise GancliError(f"its metadata names model {meta['model']!r} but its config "
                              f"{cfg.model!r}")
        family = get_family(cfg.model)
        spec = family.latent_spec(cfg)
        check_model_size(file, cfg, family, spec, tensors)
        G, _ = family.build(cfg, spec)
    except GancliError as e:
        raise GancliError(f"{file}: {e}") from None
    except (TypeError, ValueError, KeyError, IndexError) as e:  # a family's own checks missed it
        raise GancliError(f"{file}: its config cannot build a {cfg.model} ({_first(e)})") from None
    try:
        G.load_state_dict(tensors, strict=True)
    except RuntimeError as e:
        raise GancliError(f"{file} does not match a {meta['model']} built from its own config "
                          f"({_first(e)})") from None
    G.to(device).eval().requires_grad_(False)
    names = read_class_names(meta, cfg)
    return LoadedGenerator(G, spec.with_class_names(names), cfg, step,
                           meta.get("ema") == "true", file, names)


def read_step(meta: dict[str, str], file: Path) -> int:
    """The metadata's step: decimal digits only, and short (int() of 5,000 digits raises)."""
    text = meta.get("step", "0")
    if not isinstance(text, str) or not text.isascii() or not text.isdigit() or len(text) > 12:
        raise GancliError(f"{file}: metadata field 'step' must be a whole number of at most "
                          f"12 digits, got {text[:40]!r}")
    return int(text)


# What a generator file may claim (README, "Files from elsewhere"): past these, building it would
# take more memory than any gancli run trains, so the file is refused before anything is allocated.
MAX_GENERATOR_PARAMS = 100_000_000        # 400 MB of fp32 weights
MAX_GENERATOR_ACTIVATIONS = 200_000_000   # values one sample's forward pass holds


def check_model_size(file: Path, cfg: Config, family: Any, spec: LatentSpec,
                     tensors: dict[str, torch.Tensor] | None = None) -> None:
    """Build the generator on the meta device (shapes only, no memory) and refuse a config whose
    parameters or one-sample activations pass the limits, or whose weights the file does not
    hold: a few kilobytes of metadata must not make gancli allocate gigabytes."""
    try:
        with torch.device("meta"):
            G, D = family.build(cfg, spec)
    except GancliError:
        raise
    except (TypeError, ValueError, KeyError, IndexError, RuntimeError,
            NotImplementedError) as e:
        raise GancliError(f"its config cannot build a {cfg.model} ({_first(e)})") from None
    del D
    n = sum(p.numel() for p in G.parameters()) + sum(b.numel() for b in G.buffers())
    if n > MAX_GENERATOR_PARAMS:
        raise GancliError(f"its config claims a generator of {n:,} parameters, more than the "
                          f"{MAX_GENERATOR_PARAMS:,} gancli loads: not a gancli checkpoint")
    if tensors is not None:
        held = sum(t.numel() for t in tensors.values())
        if held < sum(p.numel() for p in G.state_dict().values()):
            raise GancliError(f"its config claims a generator of {n:,} parameters; the file "
                              f"holds {held:,} weights: it does not match a {cfg.model} built from its "
                              f"own config (an altered file)")
    acts = _activations(G, spec)
    if acts > MAX_GENERATOR_ACTIVATIONS:
        raise GancliError(f"its config claims a generator whose one-sample forward pass holds "
                          f"{acts:,} values, more than the {MAX_GENERATOR_ACTIVATIONS:,} gancli "
                          f"allows: not a gancli checkpoint")


def _activations(G: nn.Module, spec: LatentSpec) -> int:
    """Values the modules of a meta-device forward of one sample output (0 where the network
    cannot run on meta: its parameters were bounded already)."""
    total = 0

    def hook(_m: nn.Module, _i: Any, out: Any) -> None:
        nonlocal total
        for t in out if isinstance(out, (tuple, list)) else (out,):
            if torch.is_tensor(t):
                total += t.numel()

    handles = [m.register_forward_hook(hook) for m in G.modules() if not list(m.children())]
    try:
        with torch.device("meta"), torch.no_grad():
            G.eval()(spec.sample(1, device="meta"))
    except Exception:  # noqa: BLE001 - an estimate only; the parameter bound still holds
        return 0
    finally:
        for h in handles:
            h.remove()
    return total


def load_training_state(step_dir: Path) -> tuple[dict[str, Any], dict[str, dict[str, torch.Tensor]]]:
    """state.json and every tensor file of a checkpoint directory, for --resume: each verified
    against its checksum, the version checked, and the pieces checked to fit one another (the
    networks themselves are checked against the model when they are loaded)."""
    cannot = f"cannot resume from {step_dir}"
    state = read_json_file(step_dir / "state.json", cannot)
    step = state.get("step")
    if not isinstance(step, int) or isinstance(step, bool) or not 0 <= step <= 10 ** 12:
        raise GancliError(f"{cannot}: state.json has no valid step ({str(step)[:40]!r})")
    opts = state.get("optimizers")
    if not (isinstance(opts, dict) and all(isinstance(opts.get(k), dict)
                                           for k in ("optimizer_g", "optimizer_d"))):
        raise GancliError(f"{cannot}: state.json has no optimizer settings")
    tensors = {}
    for name in ("generator", "generator_ema", "discriminator", "optimizer_g", "optimizer_d"):
        f = step_dir / f"{name}.safetensors"
        if f.is_file():
            tensors[name] = load_tensors(f)
        elif name != "generator_ema":
            raise GancliError(f"{cannot}: it has no {f.name} (an incomplete checkpoint): "
                              f"resume from another one, or start a new run")
    if "generator_ema" in tensors:
        shapes = {k: tuple(v.shape) for k, v in tensors["generator"].items()}
        if {k: tuple(v.shape) for k, v in tensors["generator_ema"].items()} != shapes:
            raise GancliError(f"{cannot}: generator_ema.safetensors does not match "
                              f"generator.safetensors (another model's file?)")
    return state, tensors


def write_run_config(run_dir: Path, cfg: Config) -> None:
    write_json(run_dir / "config.json", {"gancli_version": __version__, "config": cfg.to_dict()})


def read_run_config(run_dir: Path) -> Config:
    f = run_dir / "config.json"
    d = read_json_file(f, f"{run_dir} is not a gancli run")
    try:
        return Config.from_dict(d.get("config", {}))
    except GancliError as e:
        raise GancliError(f"{f}: {e}") from None


def load_discriminator(g: LoadedGenerator, device: str | torch.device = "cpu") -> nn.Module:
    """The discriminator saved beside a loaded generator (the same step directory), verified,
    built from the generator's own config, in eval mode with no gradients. InfoGAN's Q head
    lives on it: `encode` and `project` read Q as an encoder."""
    from gancli.models import get_family

    file = g.path.parent / "discriminator.safetensors"
    if not file.is_file():
        raise GancliError(f"{g.path.parent} has no discriminator.safetensors beside {g.path.name}: "
                          f"name a run or a step directory of one (an exported generator alone "
                          f"has no Q)")
    meta, tensors = read_tensors(file)
    if meta.get("format") != "gancli-discriminator" or meta.get("model") != g.config.model:
        raise GancliError(f"{file} is not the discriminator of a {g.config.model} run "
                          f"(its metadata names {meta.get('model')!r})")
    family = get_family(g.config.model)
    try:
        _, D = family.build(g.config, family.latent_spec(g.config))
        D.load_state_dict(tensors, strict=True)
    except (RuntimeError, ValueError, KeyError, TypeError) as e:
        raise GancliError(f"{file} does not match the {g.config.model} its generator was built "
                          f"from ({_first(e)})") from None
    return D.to(device).eval().requires_grad_(False)
