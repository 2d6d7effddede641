"""Every random stream a training process draws from, captured and restored as data.

A checkpoint must hold what decides the next step, or a resumed run drifts from the run it
continues: torch's global CPU generator (InfoGAN's ``random_affine`` and anything else that calls
``torch.rand``), the current CUDA device's generator, Python's and NumPy's generators (seeded by
Accelerate, used by nothing in gancli today but by code a user may add), and the loop's own named
generators (the latent noise). A snapshot is split the way checkpoints store things: tensors (the
generator states, as uint8/int64) for safetensors, the rest (small ints) for JSON. Nothing is
pickled.
"""

from __future__ import annotations

import random
from typing import Any, Mapping

import numpy as np
import torch

Snapshot = tuple[dict[str, torch.Tensor], dict[str, Any]]


def capture(generators: Mapping[str, torch.Generator]) -> Snapshot:
    """This process's random state: (tensors, JSON-able rest)."""
    tensors = {"torch_cpu": torch.get_rng_state()}
    if torch.cuda.is_available() and torch.cuda.is_initialized():
        tensors["torch_cuda"] = torch.cuda.get_rng_state()
    for name, g in generators.items():
        tensors[f"gen.{name}"] = g.get_state()
    kind, keys, pos, has_gauss, cached = np.random.get_state()
    tensors["numpy_keys"] = torch.from_numpy(keys.astype(np.int64))
    version, py_state, gauss_next = random.getstate()
    rest = {"numpy": {"kind": kind, "pos": int(pos), "has_gauss": int(has_gauss),
                      "cached_gaussian": float(cached)},
            "python": {"version": version, "state": list(py_state), "gauss_next": gauss_next}}
    return tensors, rest


def restore(tensors: Mapping[str, torch.Tensor], rest: Mapping[str, Any],
            generators: Mapping[str, torch.Generator]) -> None:
    """Put back what :func:`capture` took. A generator the snapshot lacks keeps its state."""
    torch.set_rng_state(tensors["torch_cpu"].to(torch.uint8).cpu())
    if "torch_cuda" in tensors and torch.cuda.is_available():
        torch.cuda.set_rng_state(tensors["torch_cuda"].to(torch.uint8).cpu())
    for name, g in generators.items():
        if f"gen.{name}" in tensors:
            g.set_state(tensors[f"gen.{name}"].to(torch.uint8).cpu())
    if "numpy_keys" in tensors and "numpy" in rest:
        n = rest["numpy"]
        np.random.set_state((n["kind"], tensors["numpy_keys"].numpy().astype(np.uint32),
                             int(n["pos"]), int(n["has_gauss"]), float(n["cached_gaussian"])))
    if "python" in rest:
        p = rest["python"]
        random.setstate((p["version"], tuple(p["state"]), p["gauss_next"]))


def pack(per_rank: list[Snapshot]) -> Snapshot:
    """Every rank's snapshot as one flat (tensors, rest) for a checkpoint: ``rng.<rank>.<name>``."""
    tensors: dict[str, torch.Tensor] = {}
    ranks = []
    for r, (t, rest) in enumerate(per_rank):
        tensors.update({f"rng.{r}.{k}": v for k, v in t.items()})
        ranks.append(rest)
    return tensors, {"world_size": len(per_rank), "ranks": ranks}


def unpack(tensors: Mapping[str, torch.Tensor], rest: Mapping[str, Any], rank: int) -> Snapshot:
    """One rank's snapshot out of :func:`pack`'s form."""
    prefix = f"rng.{rank}."
    mine = {k[len(prefix):]: v for k, v in tensors.items() if k.startswith(prefix)}
    return mine, rest["ranks"][rank]
