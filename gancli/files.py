"""Safe file writing: everything gancli writes goes to a temporary name first and is renamed into
place, so an interrupted command never leaves a half-written file behind.

A write is durable once it returns: the temporary file is flushed to disk (fsync), renamed over
the target, and the directory holding it is flushed too (where the platform can open a directory),
so a power cut after "wrote X" does not lose X. Any operating-system failure (a full disk, no
permission, a path whose parent is a file, a name too long) becomes one :class:`OutputError` line,
and the temporary file or directory is always removed.
"""

from __future__ import annotations

import errno
import hashlib
import json
import os
import re
import shutil
import tempfile
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Iterator, Mapping

import torch
from safetensors.torch import save_file

from gancli.errors import GancliError

DIGEST_KEY = "sha256"            # safetensors metadata key holding the checksum (see tensor_digest)
_DIGEST_TAG = b"gancli-sha256-v1\n"
_SHORT = 100                     # temporary names keep this much of the target's name


class OutputError(GancliError):
    """An output cannot be written: the path is taken, or the operating system refused.

    `path`, `cause` and `needed` (bytes, when known) let an enclosing writer (atomic_dir) say
    the same thing about the file's real name rather than its temporary one."""

    def __init__(self, message: str, *, path: Path | None = None, cause: OSError | None = None,
                 needed: int | None = None) -> None:
        super().__init__(message)
        self.path, self.cause, self.needed = path, cause, needed


# What to do about the usual refusals; anything else shows the system's own words only.
_FIXES = {
    errno.ENOSPC: "free some space or write elsewhere",
    errno.EDQUOT: "free some space or write elsewhere",
    errno.EACCES: "write somewhere you have permission to",
    errno.EPERM: "write somewhere you have permission to",
    errno.EROFS: "write elsewhere",
    errno.ENAMETOOLONG: "use a shorter name",
    errno.EISDIR: "name a file, not a directory",
    errno.ENOTDIR: "a part of the path is a file, not a directory",
}


_FULL = (errno.ENOSPC, errno.EDQUOT)


def _size(n: int) -> str:
    for unit, k in (("GB", 1e9), ("MB", 1e6), ("kB", 1e3)):
        if n >= k:
            return f"{n / k:.1f} {unit}"
    return f"{n} bytes"


def _free(path: Path) -> int | None:
    try:
        return shutil.disk_usage(_existing_ancestor(path.parent)).free
    except OSError:
        return None


def output_error(path: str | os.PathLike, e: OSError, needed: int | None = None) -> OutputError:
    """One line for an OS error met while writing `path`: the system's reason and the fix; for a
    full disk or quota also how much the file needs (when known) and how much is free."""
    reason = e.strerror or str(e) or type(e).__name__
    fix = _FIXES.get(e.errno or 0)
    if e.errno in _FULL:
        free = _free(Path(path))
        room = ([f"it needs about {_size(needed)}"] if needed else []) + \
            ([f"{_size(free)} free there"] if free is not None else [])
        fix = "; ".join(room + [fix or ""])
    return OutputError(f"cannot write {path}: {reason}" + (f" ({fix})" if fix else ""),
                       path=Path(path), cause=e, needed=needed)


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def _short(name: str) -> str:
    # A temporary name adds a prefix and a random part: keep it under the file system's limit
    # even when the target's own name is near it.
    return name[:_SHORT]


def _existing_ancestor(path: Path) -> Path:
    p = path
    while not (p.exists() or p.is_symlink()) and p != p.parent:
        p = p.parent
    return p


def _make_parent(path: Path) -> None:
    """Create `path`'s parent directories, naming the culprit when a part of it is a file."""
    anc = _existing_ancestor(path.parent)
    if (anc.exists() or anc.is_symlink()) and not anc.is_dir():
        raise OutputError(f"cannot write {path}: {anc} is a file, not a directory "
                          f"(pick another path)")
    path.parent.mkdir(parents=True, exist_ok=True)


def _fsync_file(path: Path) -> None:
    fd = os.open(path, os.O_RDWR if os.name == "nt" else os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _fsync_dir(path: Path) -> None:
    """Flush a directory's entries (the rename) to disk; best effort: some platforms (Windows)
    and file systems cannot open or sync a directory."""
    try:
        fd = os.open(path, os.O_RDONLY | getattr(os, "O_DIRECTORY", 0))
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def _fsync_tree(root: Path) -> None:
    for folder, _, files in os.walk(root):
        for name in files:
            p = Path(folder) / name
            if not p.is_symlink():
                _fsync_file(p)
        _fsync_dir(Path(folder))


def _remove(path: Path) -> None:
    try:
        if path.is_dir() and not path.is_symlink():
            shutil.rmtree(path, ignore_errors=True)
        else:
            path.unlink(missing_ok=True)
    except OSError:
        pass


def plain_path(path: str | os.PathLike) -> Path:
    """`path` with "x/.." collapsed, as the checks and the writers both see it: otherwise
    "missing/../taken" looks free to a check (its first part does not exist) and the writer,
    which creates "missing", then replaces "taken"."""
    return Path(os.path.normpath(path))


def check_target(path: str | os.PathLike, *, directory: bool = False,
                 overwrite: bool = False) -> None:
    """Check before any work that `path` can be written: refuse a taken path (unless `overwrite`),
    a directory where a file goes, a parent that is a file, a missing permission, a name longer
    than the file system allows. An empty directory counts as free for a `directory` output."""
    path = plain_path(path)
    try:
        _check_target(path, directory, overwrite)
    except OSError as e:  # e.g. looking at a name too long to even look up
        raise output_error(path, e) from e


def _check_target(path: Path, directory: bool, overwrite: bool) -> None:
    if path.name in ("", ".", ".."):
        raise OutputError(f"cannot write {path}: name a file or directory")
    if path.exists() or path.is_symlink():
        if path.is_dir() and not directory:
            raise OutputError(f"{path} is a directory: name a file (e.g. {path / 'out.png'})")
        empty_dir = directory and path.is_dir() and not any(path.iterdir())
        if not empty_dir and not overwrite:
            raise OutputError(f"{path} exists: pass --overwrite to replace it")
    anc, new_parts = path.parent, [path.name]
    while not (anc.exists() or anc.is_symlink()) and anc != anc.parent:
        new_parts.insert(0, anc.name)
        anc = anc.parent
    if not anc.is_dir():
        raise OutputError(f"cannot write {path}: {anc} is a file, not a directory "
                          f"(pick another path)")
    if not os.access(anc, os.W_OK | os.X_OK):
        raise OutputError(f"cannot write {path}: permission denied in {anc} "
                          f"({_FIXES[errno.EACCES]})")
    try:
        name_max = os.pathconf(anc, "PC_NAME_MAX")
    except (OSError, ValueError, AttributeError):
        name_max = 255
    for part in new_parts:
        size = len(os.fsencode(part))
        if size > name_max:
            raise OutputError(f"cannot write {path}: the name '{part[:24]}...' is {size} bytes, "
                              f"more than the {name_max} this file system allows "
                              f"(use a shorter name)")


def safe_name(name: str, what: str = "name") -> str:
    """`name` as one plain file name, refusing anything that could leave the chosen directory
    (a path separator, '..', a NUL). For names built from data read from a file."""
    seps = {"/", "\\", os.sep} | ({os.altsep} if os.altsep else set())
    if (not name or name in (".", "..") or ".." in name or "\0" in name
            or any(s in name for s in seps)):
        raise OutputError(f"refusing {what} {name!r}: an output name must be one plain file "
                          f"name (no path separator or '..')")
    return name


@contextmanager
def atomic_path(path: str | os.PathLike, needed: int | None = None) -> Iterator[Path]:
    """Yield a temporary path beside `path`; on success flush it, rename it over `path` and flush
    the directory; on any failure remove it. OS errors become one OutputError line (`needed`:
    the file's size when the caller knows it, said when the disk is full).

    The temporary name keeps the suffix, so writers that pick a format by suffix still work.
    """
    path = plain_path(path)
    tmp_path: Path | None = None
    try:
        _make_parent(path)
        fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{_short(path.stem)}.tmp.",
                                   suffix=path.suffix[:16] or ".tmp")
        os.close(fd)
        tmp_path = Path(tmp)
        yield tmp_path
        # mkstemp makes 0600, and some writers (safetensors) replace the file with their own
        # 0600 one: the finished file gets the usual mode under the umask, set last.
        os.chmod(tmp_path, 0o666 & ~_umask())
        _fsync_file(tmp_path)
        os.replace(tmp_path, path)
        tmp_path = None
        _fsync_dir(path.parent)
    except OSError as e:
        raise output_error(path, e, needed) from e
    finally:
        if tmp_path is not None:
            _remove(tmp_path)


@contextmanager
def atomic_dir(path: str | os.PathLike) -> Iterator[Path]:
    """Yield a temporary directory beside `path`; on success every file in it is flushed and it
    replaces `path` as a whole (an existing `path` is moved aside, then removed); on any failure
    it is removed and `path` is left as it was. OS errors become one OutputError line."""
    path = plain_path(path)
    tmp: Path | None = None
    try:
        _make_parent(path)
        tmp = Path(tempfile.mkdtemp(dir=path.parent, prefix=f".{_short(path.name)}.",
                                    suffix=".tmp"))
        os.chmod(tmp, 0o777 & ~_umask())  # mkdtemp makes 0700; finished ones get the usual mode
        yield tmp
        _fsync_tree(tmp)
        if path.exists() or path.is_symlink():
            old = path.with_name(f".{_short(path.name)}.old")
            _remove(old)
            os.replace(path, old)
            try:
                os.replace(tmp, path)
            except OSError:
                os.replace(old, path)  # put the old one back: all or nothing
                raise
            tmp = None
            _remove(old)
        else:
            os.replace(tmp, path)
            tmp = None
        _fsync_dir(path.parent)
    except OSError as e:
        raise output_error(path, e) from e
    except OutputError as e:
        # A file inside failed: name it where it was going (not the temporary directory) and
        # say what the whole directory needs, the inner file's size being only a part of it.
        if tmp is None or e.path is None or e.cause is None or e.cause.errno not in _FULL:
            raise
        try:
            inner = path / e.path.relative_to(tmp)
        except ValueError:
            raise e from None
        raise output_error(inner, e.cause, _tree_size(tmp) + (e.needed or 0)) from e.cause
    finally:
        if tmp is not None:
            _remove(tmp)


def _tree_size(root: Path) -> int:
    """Bytes already written under `root` (before it is removed): part of what a write needs."""
    total = 0
    for folder, _, files in os.walk(root):
        for name in files:
            try:
                total += os.lstat(os.path.join(folder, name)).st_size
            except OSError:
                pass
    return total


def write_json(path: str | os.PathLike, obj: Any) -> None:
    with atomic_path(path) as tmp:
        tmp.write_text(json.dumps(obj, indent=2, sort_keys=True) + "\n")


def _raw_bytes(t: torch.Tensor) -> memoryview:
    flat = t.detach().to("cpu").contiguous().reshape(-1)
    return memoryview(flat.view(torch.uint8).numpy())


def tensor_digest(tensors: Mapping[str, torch.Tensor], metadata: Mapping[str, str]) -> str:
    """SHA-256 over every tensor (sorted by name: name, dtype, shape, raw bytes) and every other
    metadata entry (sorted by key). safetensors has no checksum of its own: this one catches a
    truncated or bit-flipped file, in the data or in the header, before gancli uses it."""
    h = hashlib.sha256(_DIGEST_TAG)
    for k in sorted(metadata):
        if k != DIGEST_KEY:
            h.update(json.dumps(["meta", k, metadata[k]]).encode() + b"\n")
    for name in sorted(tensors):
        t = tensors[name]
        h.update(json.dumps(["tensor", name, str(t.dtype), list(t.shape)]).encode() + b"\n")
        h.update(_raw_bytes(t))
    return h.hexdigest()


def stored_digest(metadata: Mapping[str, str]) -> str | None:
    """The checksum a file's metadata holds (None for files written before there was one)."""
    value = metadata.get(DIGEST_KEY)
    if value is None:
        return None
    try:
        decoded = json.loads(value)
    except ValueError:
        return value
    return decoded if isinstance(decoded, str) else value


def write_safetensors(path: str | os.PathLike, tensors: Mapping[str, torch.Tensor],
                      metadata: Mapping[str, str] | None = None) -> None:
    """Write tensors (made contiguous, on CPU) with string metadata, atomically, with a
    checksum of both in the metadata (`sha256`, see tensor_digest). The checksum is stored as a
    JSON string ('"3fa4..."'), so readers that decode every metadata value as JSON (the
    classifier cache does) read it too."""
    flat = {k: v.detach().to("cpu").contiguous() for k, v in tensors.items()}
    meta = {k: v for k, v in (metadata or {}).items() if k != DIGEST_KEY}
    meta[DIGEST_KEY] = json.dumps(tensor_digest(flat, meta))
    # The data's size plus a generous header: what a full disk's message says is needed.
    needed = sum(t.numel() * t.element_size() for t in flat.values()) + 8 + \
        len(json.dumps(meta)) + 200 * (len(flat) + 1)
    with atomic_path(path, needed) as tmp:
        try:
            save_file(flat, str(tmp), metadata=meta)
        except Exception as e:  # noqa: BLE001 - only an I/O failure is turned into OSError
            raise _as_os_error(e) from e


_OS_ERROR = re.compile(r"\(os error (\d+)\)")


def _as_os_error(e: Exception) -> Exception:
    """safetensors' Rust writer reports a failed write as SafetensorError("... I/O error: No
    space left on device (os error 28)"), not OSError (a real full tmpfs showed it; a patched
    write had raised OSError): given back as the OSError it was, so a full disk is the same one
    line as for every other file. Anything else is returned as it is."""
    if isinstance(e, OSError):
        return e
    m = _OS_ERROR.search(str(e))
    if m is None:
        return e
    n = int(m.group(1))
    return OSError(n, os.strerror(n))


def append_jsonl(path: str | os.PathLike, record: Mapping[str, Any]) -> None:
    """Append one JSON line, flushed to disk. A single short write with O_APPEND: a reader never
    sees half a line from a completed call."""
    path = plain_path(path)
    line = json.dumps(dict(record), sort_keys=True) + "\n"
    try:
        _make_parent(path)
        # 0o666 under the umask, like every other file gancli writes (a team may share a run)
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o666)
        try:
            os.write(fd, line.encode())
            os.fsync(fd)
        finally:
            os.close(fd)
    except OSError as e:
        raise output_error(path, e, len(line.encode())) from e


def cache_dir() -> Path:
    """Where gancli keeps things it can rebuild (classifiers, reference statistics)."""
    root = os.environ.get("GANCLI_CACHE") or os.path.join(
        os.environ.get("XDG_CACHE_HOME", os.path.expanduser("~/.cache")), "gancli")
    return Path(root)
