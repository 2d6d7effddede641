"""Running a loaded generator: batches of latents in, uint8 images out, the same on every call.

Limits (README "Limits"), checked before any image is made: what a command holds in memory at
once (the images of a .npz or of `score`, the latents drawn up front) is at most MAX_ARRAY_BYTES;
`sample --out DIR` streams at most MAX_FILES images, BATCH at a time; `fid` and `score` take at
most MAX_METRIC_SAMPLES. Pictures have their own limits in gancli.viz.
"""

from __future__ import annotations

from pathlib import Path
from typing import Iterator

import numpy as np
import torch
from torch import nn

from gancli.data import to_uint8
from gancli.errors import GancliError
from gancli.files import atomic_path
from gancli.latent import Latents, LatentSpec

MAX_ARRAY_BYTES = 2 * 2 ** 30    # 2 GiB: images or latents held at once
MAX_FILES = 1_000_000            # images one `sample --out DIR` writes
MAX_METRIC_SAMPLES = 100_000     # fid/score --n (twice the 50,000 of published FIDs)
MAX_BATCH = 4_096                # --batch-size
MAX_SEED = 2 ** 32 - 1           # the range every random generator involved accepts
BATCH = 256                      # images generated (and written) at a time


def pick_device(name: str | None) -> torch.device:
    if name in (None, "", "auto"):
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        dev = torch.device(name)
    except (RuntimeError, ValueError):
        raise GancliError(f"--device: {name!r} is not a device (cpu, cuda, cuda:1, ...)") from None
    if dev.type not in ("cpu", "cuda", "mps"):
        raise GancliError(f"--device {name}: gancli runs on cpu, cuda or mps")
    if dev.type == "cuda":
        if not torch.cuda.is_available():
            raise GancliError(f"--device {name}: no CUDA GPU is available here")
        if dev.index is not None and dev.index >= torch.cuda.device_count():
            raise GancliError(f"--device {name}: this machine has {torch.cuda.device_count()} "
                              f"GPU(s), cuda:0..cuda:{torch.cuda.device_count() - 1}")
    if dev.type == "mps" and not torch.backends.mps.is_available():
        raise GancliError(f"--device {name}: MPS is not available here")
    return dev


# ---------------------------------------------------------------------- checks on numbers


def check_count(value: int, option: str, *, at_least: int = 1, at_most: int | None = None,
                why: str = "") -> int:
    """An integer option within [at_least, at_most], or one line naming the option and range."""
    if value < at_least:
        want = "positive" if at_least == 1 else f"at least {at_least}"
        raise GancliError(f"{option} must be {want}, got {value}")
    if at_most is not None and value > at_most:
        raise GancliError(f"{option} must be at most {at_most:,}{why}, got {value:,}")
    return value


def check_seed(seed: int, option: str = "--seed", span: int = 1) -> int:
    """A seed (and the `span - 1` seeds after it) that every random generator accepts."""
    if not 0 <= seed or seed + span - 1 > MAX_SEED:
        raise GancliError(f"{option} must be between 0 and {MAX_SEED - span + 1}, got {seed}")
    return seed


def latent_bytes(spec: LatentSpec, n: int) -> int:
    """Bytes that n latents take: float32 noise and continuous codes, int64 categorical ones."""
    per = 4 * spec.noise_dim + sum(8 if c.categorical else 4 for c in spec.codes)
    return n * per


def check_memory(nbytes: int, what: str, fewer: str) -> None:
    if nbytes > MAX_ARRAY_BYTES:
        raise GancliError(f"{what} would take {nbytes / 2 ** 30:.1f} GiB, more than the "
                          f"{MAX_ARRAY_BYTES // 2 ** 30} GiB gancli holds at once: ask for {fewer}")


def image_bytes(n: int, channels: int, image_size: int) -> int:
    return n * channels * image_size * image_size


# ---------------------------------------------------------------------- running G


def generate_batches(G: nn.Module, latents: Latents, device: torch.device | str = "cpu",
                     batch_size: int = BATCH) -> Iterator[torch.Tensor]:
    """uint8 images, `batch_size` at a time, on the CPU: memory holds one batch."""
    n = latents["z"].shape[0]
    with torch.no_grad():
        for i in range(0, n, batch_size):
            chunk = {k: v[i: i + batch_size].to(device) for k, v in latents.items()}
            yield to_uint8(G(chunk)).cpu()


def generate(G: nn.Module, latents: Latents, device: torch.device | str = "cpu",
             batch_size: int = BATCH) -> torch.Tensor:
    """uint8 N x C x H x W images on the CPU. The generator is in eval mode, so each image depends
    only on its own latents: batching never changes a result."""
    out = list(generate_batches(G, latents, device, batch_size))
    return torch.cat(out) if out else torch.empty(0, dtype=torch.uint8)


class Processes:
    """This process's place among the processes a command was launched as (torchrun or
    `accelerate launch`); one process when it was started alone."""

    def __init__(self, rank: int = 0, world: int = 1) -> None:
        self.rank, self.world = rank, world

    @property
    def main(self) -> bool:
        return self.rank == 0

    def barrier(self) -> None:
        if self.world > 1:
            import torch.distributed as dist

            dist.barrier()


def launch_device(device: str | None) -> str | None:
    """A launched process on a GPU machine takes the GPU of its local rank unless told."""
    import os

    if device is None and int(os.environ.get("WORLD_SIZE", "1")) > 1 and torch.cuda.is_available():
        return f"cuda:{int(os.environ.get('LOCAL_RANK', '0'))}"
    return device


def join_processes(device: torch.device | str) -> Processes:
    """Under torchrun or `accelerate launch` (WORLD_SIZE > 1), join the process group (NCCL on
    GPUs, gloo on the CPU) so that generate_shared splits the work; else one process."""
    import os

    world = int(os.environ.get("WORLD_SIZE", "1"))
    if world <= 1:
        return Processes()
    import torch.distributed as dist

    if not dist.is_initialized():
        dist.init_process_group("nccl" if torch.device(device).type == "cuda" else "gloo")
    return Processes(dist.get_rank(), dist.get_world_size())


def generate_shared(G: nn.Module, latents: Latents, device: torch.device | str = "cpu",
                    batch_size: int = BATCH) -> torch.Tensor:
    """generate() with the work split across the processes of a distributed run: each makes a
    contiguous share of the n images and every process gets all n back, in order. Each image
    depends only on its own latents (eval mode), so the result is the one-process result. Every
    process must call it with the same latents."""
    import torch.distributed as dist

    if not (dist.is_available() and dist.is_initialized()) or dist.get_world_size() == 1:
        return generate(G, latents, device, batch_size)
    world, rank = dist.get_world_size(), dist.get_rank()
    n = latents["z"].shape[0]
    per = -(-n // world)
    lo, hi = min(n, rank * per), min(n, (rank + 1) * per)
    mine = generate(G, {k: v[lo:hi] for k, v in latents.items()}, device, batch_size)
    if mine.numel() == 0:   # a rank past the end still takes part, with an empty share
        probe = generate(G, {k: v[:1] for k, v in latents.items()}, device, 1)
        mine = probe[:0]
    # NCCL moves only CUDA tensors; gloo takes CPU ones.
    where = torch.device(device) if dist.get_backend() == "nccl" else torch.device("cpu")
    padded = torch.zeros((per, *mine.shape[1:]), dtype=torch.uint8, device=where)
    padded[: mine.shape[0]] = mine.to(where)
    parts = [torch.empty_like(padded) for _ in range(world)]
    dist.all_gather(parts, padded)
    return torch.cat(parts).cpu()[:n]


def save_npz(path: str | Path, images: torch.Tensor, latents: Latents) -> Path:
    """images (uint8 N x C x H x W) and every latent array used, named by code."""
    arrays = {"images": images.numpy()}
    for k, v in latents.items():
        arrays[k] = v.cpu().numpy()
    path = Path(path)
    with atomic_path(path) as tmp:
        with open(tmp, "wb") as f:
            np.savez_compressed(f, **arrays)
    return path


def parse_assignments(items: list[str] | None, option: str = "--code") -> list[tuple[str, str]]:
    """'c1=3' -> ('c1', '3'), with one clear line for a malformed item."""
    out = []
    for item in items or []:
        name, sep, value = item.partition("=")
        if not sep or not name.strip() or not value.strip():
            raise GancliError(f"{option} expects NAME=VALUE (e.g. c1=3), got {item!r}")
        out.append((name.strip(), value.strip()))
    return out


# ---------------------------------------------------------------------- latents files

MAX_LATENT_FILE = 2 * 2 ** 30    # a --latents file (and every array in it, unpacked) at most this
MAX_NPZ_MEMBERS = 64             # arrays in one --latents file: a model has a handful
_IGNORED = ("images",)           # what `sample --out x.npz` stores beside the latents


def save_latents(path: str | Path, latents: Latents) -> Path:
    """The latents alone, named by code (z, c1, ..., label), in the .npz that `--latents`
    reads: written to a temporary file and renamed, so a reader never sees half of one."""
    arrays = {k: v.detach().cpu().numpy() for k, v in latents.items()}
    path = Path(path)
    with atomic_path(path) as tmp:
        with open(tmp, "wb") as f:
            np.savez(f, **arrays)
    return path


def _member_header(zf, member: str, what: str) -> tuple[tuple[int, ...], np.dtype]:
    """(shape, dtype) from a member's .npy header, read before any of its data."""
    with zf.open(member) as f:
        try:
            version = np.lib.format.read_magic(f)
            if version == (1, 0):
                shape, _, dtype = np.lib.format.read_array_header_1_0(f)
            elif version == (2, 0):
                shape, _, dtype = np.lib.format.read_array_header_2_0(f)
            else:
                raise ValueError(f"unknown .npy version {version}")
        except (ValueError, OSError, EOFError, SyntaxError) as e:
            raise GancliError(f"{what}: not a NumPy array ({str(e)[:120]})") from None
    return tuple(shape), dtype


def load_latents(path: str | Path, spec: LatentSpec, option: str = "--latents") -> Latents:
    """Read a .npz of latents (what `sample --save-latents`, `sample --out x.npz` and `project`
    write) and check it against `spec` before the generator sees it: exactly the arrays z and
    one per code (an `images` array beside them is ignored), z float [N, noise_dim], a
    categorical code or label int [N] within its values (or float [N, K] soft weights), a
    continuous code float [N]; every value finite and within +-MAX_VALUE; N from 1 to
    MAX_FILES. Nothing is unpickled (allow_pickle=False), and sizes are checked from the zip
    directory and the .npy headers before any array is read."""
    import os
    import stat
    import zipfile

    from gancli.latent import MAX_VALUE

    path = Path(path)
    where = f"{option} {path}"
    try:
        st = os.stat(path)
    except OSError as e:
        raise GancliError(f"{where}: {e.strerror or 'cannot be read'}") from None
    if not stat.S_ISREG(st.st_mode):
        raise GancliError(f"{where}: not a regular file")
    if st.st_size > MAX_LATENT_FILE:
        raise GancliError(f"{where}: {st.st_size:,} bytes, more than the "
                          f"{MAX_LATENT_FILE // 2 ** 30} GiB a latents file may be")
    if not zipfile.is_zipfile(path):
        raise GancliError(f"{where}: not a .npz file (write one with gancli sample "
                          f"--save-latents, or numpy.savez)")
    try:
        zf = zipfile.ZipFile(path)
    except (zipfile.BadZipFile, OSError, ValueError) as e:
        raise GancliError(f"{where}: not a readable .npz file ({str(e)[:120]})") from None
    with zf:
        infos = zf.infolist()
        if len(infos) > MAX_NPZ_MEMBERS:
            raise GancliError(f"{where}: {len(infos):,} arrays, more than {MAX_NPZ_MEMBERS}: "
                              f"not a latents file")
        members: dict[str, zipfile.ZipInfo] = {}
        for info in infos:
            name = info.filename[:-4] if info.filename.endswith(".npy") else info.filename
            members[name] = info
        want = ["z"] + spec.names()
        unknown = sorted(set(members) - set(want) - set(_IGNORED))
        missing = [k for k in want if k not in members]
        if unknown:
            shown = ", ".join(repr(k[:40]) for k in unknown[:8])
            raise GancliError(f"{where}: unknown array(s) {shown}; this model's latents are "
                              f"{', '.join(want)}")
        if missing:
            raise GancliError(f"{where}: no array {', '.join(missing)}; this model's latents "
                              f"are {', '.join(want)}")
        total = sum(members[k].file_size for k in want)
        if total > MAX_ARRAY_BYTES:
            raise GancliError(f"{where}: its latents unpack to {total / 2 ** 30:.1f} GiB, more "
                              f"than the {MAX_ARRAY_BYTES / 2 ** 30:.0f} GiB gancli holds at once")
        out: Latents = {}
        rows: int | None = None
        for k in want:
            what = f"{where}: array {k}"
            shape, dtype = _member_header(zf, members[k].filename, what)
            code = None if k == "z" else spec.code(k)
            if dtype.hasobject or dtype.kind not in "iuf" or dtype.fields is not None:
                raise GancliError(f"{what} has dtype {dtype}: latents are plain numbers "
                                  f"(nothing pickled is read)")
            if k == "z":
                ok, expect = (len(shape) == 2 and shape[1] == spec.noise_dim
                              and dtype.kind == "f"), f"float [N, {spec.noise_dim}]"
            elif code.categorical:
                expect = f"int [N] (values 0..{code.size - 1}) or float [N, {code.size}] weights"
                ok = ((len(shape) == 1 and dtype.kind in "iu")
                      or (len(shape) == 2 and shape[1] == code.size and dtype.kind == "f"))
            else:
                ok, expect = len(shape) == 1 and dtype.kind == "f", "float [N]"
            if not ok:
                raise GancliError(f"{what} is {dtype} {list(shape)}; it must be {expect}")
            n = shape[0]
            if rows is None:
                rows = n
            elif n != rows:
                raise GancliError(f"{what} has {n:,} rows but z has {rows:,}: every array holds "
                                  f"one row per image")
            if not 1 <= n <= MAX_FILES:
                raise GancliError(f"{what} has {n:,} rows: from 1 to {MAX_FILES:,} images")
            if int(np.prod(shape)) * dtype.itemsize > members[k].file_size:
                raise GancliError(f"{what}: truncated (its header promises more than it holds)")
            try:
                with zf.open(members[k].filename) as f:
                    a = np.lib.format.read_array(f, allow_pickle=False)
            except (ValueError, OSError, EOFError, zipfile.BadZipFile) as e:
                raise GancliError(f"{what} cannot be read ({str(e)[:120]})") from None
            if dtype.kind == "f":
                a64 = a.astype(np.float64)
                if not np.isfinite(a64).all() or (np.abs(a64) > MAX_VALUE).any():
                    raise GancliError(f"{what}: values must be finite numbers within "
                                      f"+-{MAX_VALUE:g}")
                out[k] = torch.from_numpy(np.ascontiguousarray(a, dtype=np.float32))
            else:
                if a.size and (a.min() < 0 or a.max() >= code.size):
                    raise GancliError(f"{what}: {k} takes integers 0..{code.size - 1}, the file "
                                      f"holds {int(a.min())}..{int(a.max())}")
                out[k] = torch.from_numpy(a.astype(np.int64))
    return out
