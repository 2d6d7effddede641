"""Cheap checks before costly work (issue 23): what can be known in a second is checked before a
model is built, data is loaded or a classifier is trained, so a run does not fail an hour in for
a reason it could have given at once. Each check raises one GancliError line or returns a short
phrase for `train --dry-run` to print. Nothing here writes anything or allocates a network.
"""

from __future__ import annotations

import os
import shutil
from pathlib import Path
from typing import Any

from gancli.errors import GancliError
from gancli.files import _size, cache_dir

# A checkpoint's directory holds G, its EMA and D (generator.safetensors, generator_ema...,
# discriminator...) and a training state with Adam's two moments of G and of D: 4 copies of G's
# values and 3 of D's, in fp32 (the tiny test InfoGAN: 64.7 MB estimated, 64.7 MB on disk).
# Twice that is asked for: the next checkpoint is written beside the last one before the older
# is pruned, and best/ may hold one more.
BYTES_PER_VALUE = 4
SAFETY = 2


def _existing_ancestor(p: Path) -> Path:
    p = p.absolute()
    while not p.exists() and p != p.parent:
        p = p.parent
    return p


def writable(target: Path, what: str) -> Path:
    """Refuse a `target` directory that cannot be made or written: its nearest existing
    ancestor must be a directory this user may write (root passes os.access everywhere, as it
    does the writes themselves). Returns that ancestor, where the free space is measured."""
    anc = _existing_ancestor(target)
    if not anc.is_dir():
        raise GancliError(f"cannot write {what} {target}: {anc} is a file, not a directory")
    if not os.access(anc, os.W_OK | os.X_OK):
        raise GancliError(f"cannot write {what} {target}: {anc} is not writable "
                          f"(permission denied): pick another place, or fix its permissions")
    return anc


def free_bytes(path: Path) -> int | None:
    try:
        return shutil.disk_usage(path).free
    except OSError:
        return None


def model_sizes(cfg: Any) -> tuple[int, int]:
    """G's and D's parameter counts, from the networks built on PyTorch's meta device (shapes
    only, no memory). A size the family cannot build (dcgan at 30 px) is its own one line."""
    import torch

    from gancli.models import get_family

    family = get_family(cfg.model)
    try:
        with torch.device("meta"):
            G, D = family.build(cfg, family.latent_spec(cfg))
    except GancliError:
        raise
    except (TypeError, ValueError, KeyError, IndexError, RuntimeError, NotImplementedError) as e:
        raise GancliError(f"{cfg.model} cannot be built at {cfg.data.image_size} px: "
                          f"{str(e).splitlines()[0] if str(e) else type(e).__name__}") from None

    def count(m: Any) -> int:
        return sum(p.numel() for p in m.parameters()) + sum(b.numel() for b in m.buffers())
    return count(G), count(D)


def checkpoint_bytes(g: int, d: int) -> int:
    return BYTES_PER_VALUE * (4 * g + 3 * d)


def room(target: Path, what: str, needed: int) -> str:
    """`target` writable with `needed` bytes free; the phrase for --dry-run."""
    anc = writable(target, what)
    free = free_bytes(anc)
    if free is not None and free < needed:
        raise GancliError(f"not enough room for {what} {target}: a checkpoint needs about "
                          f"{_size(needed // SAFETY)} (asked {_size(needed)} to be safe), "
                          f"{_size(free)} free there: free some space or pick another --out")
    return (f"{what} writable" + (f", {_size(free)} free" if free is not None else ""))


def eval_split(data: Any, split: str) -> str | None:
    """A split a folder source must hold (train/ and test/ or val/): looked up in the folder,
    not listed. Other sources' splits are fixed (digits, emoji) or checked when opened."""
    from gancli.data.folders import local_dir, split_dir

    if data.source not in ("imagefolder", "faces64"):
        return None
    d = local_dir(data)
    if d is None:
        return None
    split_dir(d, split)
    return f"{data.source} {split} split present"


def cache_writable() -> str:
    writable(cache_dir(), "the cache")
    return "cache writable"


def training_checks(cfg: Any, resume: str | Path | None = None) -> list[str]:
    """Everything `train` can know before it starts; raises on the first failure. Returns the
    phrases `--dry-run` prints."""
    from gancli.train.run import new_run_dir

    said = []
    g, d = model_sizes(cfg)      # the image size suits the model, and how big a checkpoint is
    out = Path(resume) if resume is not None else new_run_dir(cfg)
    need = checkpoint_bytes(g, d)
    said.append(room(out, "output", SAFETY * need)
                + f", needs ~{_size(need)} per checkpoint")
    said.append(f"image size {cfg.data.image_size} suits {cfg.model} "
                f"(G {g:,} parameters, D {d:,})")
    if cfg.train.eval_every:
        # score's classifier is tested on the test split; fid's reference is the train split
        split = "test" if cfg.train.eval_metric == "score" else "train"
        said.append(cache_writable())
        if (s := eval_split(cfg.data, split)) is not None:
            said.append(s)
    return said


def measure_checks(run_file: Path | None, data: Any | None, split: str | None,
                   cache: bool = True) -> None:
    """fid and score: the cache they keep features and classifiers in is writable (unless
    `cache` is off), the run's metrics.jsonl (where the result is recorded) can be written, and
    the split exists."""
    if cache:
        cache_writable()
    if run_file is not None:
        run_dir = run_file if run_file.is_dir() else run_file.parent
        while run_dir != run_dir.parent and not (run_dir / "config.json").is_file():
            run_dir = run_dir.parent
        if (run_dir / "config.json").is_file():      # the result is appended to its record
            writable(run_dir, "the run's metrics.jsonl in")
    if data is not None and split is not None:
        eval_split(data, split)
