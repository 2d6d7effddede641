"""Checkpoints: safetensors files that describe themselves, written atomically.

A run directory holds ``checkpoints/step-NNNNNNN/`` with ``generator.safetensors``,
``generator_ema.safetensors``, ``discriminator.safetensors``, ``optimizer_g.safetensors``,
``optimizer_d.safetensors`` and ``state.json``. A generator file carries the model name and the full
config in its metadata, so a generation command can rebuild the network from that file alone.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from safetensors import SafetensorError, safe_open
from safetensors.torch import load_file
from torch import nn

from gancli import __version__
from gancli.errors import GancliError
from gancli.files import atomic_dir, write_json, write_safetensors
from gancli.latent import LatentSpec
from gancli.recipes import Config

FORMAT = "gancli-generator"
STEP_DIR = re.compile(r"^step-(\d+)$")


def step_dir_name(step: int) -> str:
    return f"step-{step:07d}"


def generator_metadata(cfg: Config, step: int, ema: bool) -> dict[str, str]:
    return {"format": FORMAT, "gancli_version": __version__, "model": cfg.model,
            "config": cfg.to_json(), "step": str(step), "ema": "true" if ema else "false"}


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
    state: dict[int, dict[str, Any]] = {}
    for key, v in tensors.items():
        _, idx, k = key.split(".", 2)
        state.setdefault(int(idx), {})[k] = v
    for idx, kv in rest.get("scalars", {}).items():
        state.setdefault(int(idx), {}).update(kv)
    opt.load_state_dict({"state": state, "param_groups": rest["param_groups"]})


def save_checkpoint(run_dir: Path, step: int, cfg: Config, *, generator: nn.Module,
                    discriminator: nn.Module, generator_ema: nn.Module | None,
                    opt_g: torch.optim.Optimizer, opt_d: torch.optim.Optimizer,
                    state: dict[str, Any], name: str | None = None) -> Path:
    """Write one checkpoint directory, atomically as a whole: readers see all files or none."""
    target = run_dir / "checkpoints" / (name or step_dir_name(step))
    with atomic_dir(target) as tmp:
        write_safetensors(tmp / "generator.safetensors", generator.state_dict(),
                          generator_metadata(cfg, step, ema=False))
        if generator_ema is not None:
            write_safetensors(tmp / "generator_ema.safetensors", generator_ema.state_dict(),
                              generator_metadata(cfg, step, ema=True))
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


def read_metadata(path: Path) -> dict[str, str]:
    try:
        with safe_open(str(path), framework="pt") as f:
            return dict(f.metadata() or {})
    except (SafetensorError, OSError, ValueError) as e:
        raise GancliError(f"{path} is not a readable safetensors file ({e})") from None


def load_generator(path: str | Path, ema: bool = True, step: int | None = None,
                   device: str | torch.device = "cpu") -> LoadedGenerator:
    """Rebuild a generator from its file alone: the metadata names the model and its config."""
    from gancli.models import get_family

    file = find_generator(path, ema=ema, step=step)
    meta = read_metadata(file)
    if meta.get("format") != FORMAT or "config" not in meta or "model" not in meta:
        raise GancliError(f"{file} is not a gancli generator checkpoint (no gancli metadata)")
    cfg = Config.from_json(meta["config"])
    family = get_family(meta["model"])
    spec = family.latent_spec(cfg)
    G, _ = family.build(cfg, spec)
    try:
        tensors = load_file(str(file))
    except (SafetensorError, OSError) as e:
        raise GancliError(f"{file} is corrupt ({e})") from None
    try:
        G.load_state_dict(tensors, strict=True)
    except RuntimeError as e:
        first = str(e).splitlines()[0]
        raise GancliError(f"{file} does not match a {meta['model']} built from its own config "
                          f"({first})") from None
    G.to(device).eval().requires_grad_(False)
    return LoadedGenerator(G, spec, cfg, int(meta.get("step", 0)), meta.get("ema") == "true", file)


def load_training_state(step_dir: Path) -> tuple[dict[str, Any], dict[str, dict[str, torch.Tensor]]]:
    """state.json and every tensor file of a checkpoint directory, for --resume."""
    try:
        state = json.loads((step_dir / "state.json").read_text())
    except (OSError, json.JSONDecodeError) as e:
        raise GancliError(f"{step_dir}/state.json is missing or corrupt ({e})") from None
    tensors = {}
    for name in ("generator", "generator_ema", "discriminator", "optimizer_g", "optimizer_d"):
        f = step_dir / f"{name}.safetensors"
        if f.is_file():
            try:
                tensors[name] = load_file(str(f))
            except (SafetensorError, OSError) as e:
                raise GancliError(f"{f} is corrupt ({e})") from None
    return state, tensors


def write_run_config(run_dir: Path, cfg: Config) -> None:
    write_json(run_dir / "config.json", {"gancli_version": __version__, "config": cfg.to_dict()})


def read_run_config(run_dir: Path) -> Config:
    f = run_dir / "config.json"
    try:
        d = json.loads(f.read_text())
    except (OSError, json.JSONDecodeError) as e:
        raise GancliError(f"{run_dir} is not a gancli run ({f.name}: {e})") from None
    return Config.from_dict(d.get("config", {}))
