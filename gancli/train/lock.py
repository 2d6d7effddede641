"""One writer per run directory: `gancli train` holds an OS lock (flock) on RUN/.gancli-lock while
it writes the run, so a second train with the same --out, or a --resume of a run being trained,
refuses at once instead of interleaving files. The kernel drops the lock when the holder's
process ends, killed or not, so a crash never leaves a run locked.

The lock file stays after a run (removing it would race with a process opening it); it holds
who took the lock last, as JSON, only to name the holder in the refusal.
"""

from __future__ import annotations

import json
import os
import shutil
import socket
import time
from pathlib import Path
from typing import Any

from gancli.errors import GancliError

LOCK_NAME = ".gancli-lock"

try:
    import fcntl
except ImportError:  # Windows: no flock; runs are not locked there
    fcntl = None  # type: ignore[assignment]


class RunBusy(GancliError):
    """The run directory is locked by another gancli process."""


def _holder(fd: int) -> str:
    try:
        info: Any = json.loads(os.pread(fd, 4096, 0) or b"{}")
    except (OSError, ValueError):
        info = {}
    if not isinstance(info, dict) or "pid" not in info:
        return "another gancli process"
    started = info.get("started")
    when = (time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(started))
            if isinstance(started, (int, float)) else "?")
    return (f"gancli train (pid {str(info.get('pid'))[:12]} on {str(info.get('host'))[:64]}, "
            f"started {when})")


class RunLock:
    """The lock on one run directory, held from `acquire` until `release` (or the process ends)."""

    def __init__(self, run_dir: Path) -> None:
        self.run_dir = Path(run_dir)
        self.fd: int | None = None

    def acquire(self) -> "RunLock":
        path = self.run_dir / LOCK_NAME
        try:
            fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o666)
        except OSError as e:
            from gancli.files import output_error
            raise output_error(path, e) from e
        if fcntl is not None:
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except OSError:
                holder = _holder(fd)
                os.close(fd)
                raise RunBusy(f"{self.run_dir} is being written by {holder}: wait for it to "
                              f"finish, stop it, or pick another --out") from None
        info = {"pid": os.getpid(), "host": socket.gethostname(), "started": time.time()}
        try:  # best effort: only used to name the holder
            os.ftruncate(fd, 0)
            os.pwrite(fd, json.dumps(info).encode(), 0)
        except OSError:
            pass
        self.fd = fd
        return self

    def release(self) -> None:
        if self.fd is not None:
            os.close(self.fd)   # closing drops the flock
            self.fd = None


def is_ours(name: str) -> bool:
    """Entries a directory may hold and still be free for a new run: the lock file, and what an
    interrupted writer of gancli leaves (hidden temporary names)."""
    return name == LOCK_NAME or (name.startswith(".") and (".tmp" in name
                                                           or name.endswith((".old", ".deleting"))))


def check_new_out(p: Path) -> None:
    """Refuse an --out that is a file or a non-empty directory that is not a gancli run (a data
    folder, a home directory): a run never writes among someone else's files."""
    if p.is_symlink() and not p.exists():
        raise GancliError(f"--out {p} is a broken link: pick another --out")
    if p.exists() and not p.is_dir():
        raise GancliError(f"--out {p} is a file, not a directory: pick another --out")
    if p.is_dir():
        try:
            foreign = sorted(e for e in os.listdir(p) if not is_ours(e))
        except OSError as e:
            raise GancliError(f"cannot read --out {p}: {e.strerror}") from None
        if foreign:
            raise GancliError(f"--out {p} is not empty and not a gancli run (it holds "
                              f"{foreign[0]!r}{' and more' if len(foreign) > 1 else ''}): "
                              f"a run writes only into a new or empty directory; pick another "
                              f"--out")


def undo_new_run(run_dir: Path, created: bool) -> None:
    """After a failure during set-up: remove what this run wrote, so the same --out is free
    again. A directory it made goes; one that was there (empty) is emptied."""
    if created:
        shutil.rmtree(run_dir, ignore_errors=True)
        return
    for e in os.listdir(run_dir) if run_dir.is_dir() else []:
        if e == LOCK_NAME:
            continue   # still held by this process; removing it would let a third one in
        p = run_dir / e
        if p.is_dir() and not p.is_symlink():
            shutil.rmtree(p, ignore_errors=True)
        else:
            p.unlink(missing_ok=True)
