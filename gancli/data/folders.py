"""Local folders of image files: which folder a user named (:func:`local_dir`), its train/test
split folders, the sorted :class:`FileIndex` of its images (class subfolders become labels), decoding
an index into memory in a thread pool (:func:`decode_all`, unreadable files skipped and counted),
and :class:`FolderImages`, the same index decoded lazily, file by file, in DataLoader workers."""

from __future__ import annotations

import dataclasses
import hashlib
import os
import stat
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from gancli.data.base import ImageData, LazySource
from gancli.data.pixels import _size_tag, _threads, decode_file
from gancli.errors import GancliError
from gancli.recipes import DataConfig


IMAGE_EXTS = (".png", ".jpg", ".jpeg", ".bmp", ".gif", ".webp", ".tif", ".tiff", ".ppm",
              ".pgm", ".pbm")
SPLIT_DIRS = {"train": ("train",), "test": ("test", "val", "valid", "validation")}


@dataclass
class FileIndex:
    """The image files of one split of a local folder, in a fixed (sorted) order."""
    root: Path                           # the split's folder; `files` are relative to it
    files: list[str]
    labels: list[int] | None
    class_names: list[str] | None
    name: str
    notes: tuple[str, ...] = ()
    # Class subfolders listed in sorted order: --limit takes a spread of every class. Sources
    # that order their listing themselves (emoji's hashed order) keep the plain first n.
    spread: bool = False

    def __len__(self) -> int:
        return len(self.files)

    def first(self, n: int | None) -> "FileIndex":
        """At most `n` images. Unlabelled, or a listing in its own order: the first n. Class
        subfolders (`spread`): the first n in sorted
        order would be the first classes only; instead classes take turns (each its files in
        order), so every class is kept when n allows, and a note names the classes dropped
        when it does not."""
        if n is None or n >= len(self.files):
            return self
        if self.labels is None or not self.spread:
            return dataclasses.replace(self, files=self.files[:n],
                                       labels=None if self.labels is None else self.labels[:n],
                                       name=f"{self.name}-first{n}")
        per: dict[int, list[int]] = {}
        for i, c in enumerate(self.labels):
            per.setdefault(c, []).append(i)
        picked: list[int] = []
        for turn in range(max(len(v) for v in per.values())):
            for c in sorted(per):
                if turn < len(per[c]) and len(picked) < n:
                    picked.append(per[c][turn])
        picked.sort()
        notes = list(self.notes)
        kept = {self.labels[i] for i in picked}
        dropped = [self.class_names[c] if self.class_names else str(c)
                   for c in sorted(per) if c not in kept]
        if dropped:
            shown = ", ".join(dropped[:10]) + (f" and {len(dropped) - 10} more"
                                               if len(dropped) > 10 else "")
            notes.append(f"--limit {n} is fewer than the {len(per)} classes: {len(dropped)} "
                         f"dropped ({shown})")
        return dataclasses.replace(self, files=[self.files[i] for i in picked],
                                   labels=[self.labels[i] for i in picked],
                                   name=f"{self.name}-spread{n}", notes=tuple(notes))

    def decode(self, cfg: DataConfig) -> ImageData:
        """Every image decoded into memory (:func:`decode_all`)."""
        return decode_all(self, cfg)

    def lazy(self, cfg: DataConfig) -> "FolderImages":
        """The images opened lazily, decoded file by file as batches are drawn."""
        return FolderImages(self, cfg)


def split_dir(root: Path, split: str) -> Path:
    """A folder with train/ (and test/ or val/) subfolders holds splits; any other folder is
    all training images and has no test split."""
    try:
        with os.scandir(root):       # opened, not read: an unlisted folder raises from is_dir()
            pass
    except OSError as e:
        raise GancliError(f"cannot read folder {root}: {e.strerror or e}") from None
    if (root / "train").is_dir():
        for sub in SPLIT_DIRS[split]:
            if (root / sub).is_dir():
                return root / sub
        raise GancliError(f"{root} has train/ but no {' or '.join(SPLIT_DIRS[split])}/ folder "
                          f"for the {split} split")
    if split == "train":
        return root
    raise GancliError(f"{root} has no test split: put the images in {root}/train and {root}/test")


@dataclass
class FolderScan:
    """What a walk of a folder found: image files (relative, sorted) and what it passed over."""
    files: list[str]
    other: int = 0                       # regular files that are not images
    special: int = 0                     # FIFOs, sockets, devices, broken links: never opened
    unreadable: list[str] = dataclasses.field(default_factory=list)   # folders it could not list
    repeated: int = 0                    # links to a folder already read (loops included)

    def notes(self, where: Path) -> list[str]:
        out = []
        if self.other:
            out.append(f"{self.other} non-image files in {where} passed over")
        if self.special:
            out.append(f"{self.special} special files (FIFOs, devices, sockets, broken links) "
                       f"in {where} passed over, not opened")
        if self.unreadable:
            out.append(f"{len(self.unreadable)} unreadable folders in {where} passed over "
                       f"(e.g. {self.unreadable[0]})")
        if self.repeated:
            out.append(f"{self.repeated} links to folders already read in {where} passed over "
                       f"(each folder is read once)")
        return out


def scan_folder(folder: Path, exts: tuple[str, ...] = IMAGE_EXTS) -> FolderScan:
    """Walk `folder` (hidden entries skipped, symlinks followed) for files ending in `exts`.

    Each real directory is read once, by its (device, inode), so a symlink loop or two links
    to one folder cannot repeat or hang the walk. Only regular files are listed: a FIFO opened
    for reading blocks until a writer comes, a device streams forever. A folder that cannot be
    listed is counted, like an unreadable file; the top folder itself is an error.
    """
    scan = FolderScan([])
    seen: set[tuple[int, int]] = set()
    try:
        st = os.stat(folder)
    except OSError as e:
        raise GancliError(f"cannot read folder {folder}: {e.strerror or e}") from None
    seen.add((st.st_dev, st.st_ino))
    stack = [""]
    while stack:
        rel = stack.pop()
        try:
            with os.scandir(os.path.join(folder, rel) if rel else folder) as it:
                entries = sorted(it, key=lambda e: e.name)
        except OSError as e:
            if not rel:
                raise GancliError(f"cannot read folder {folder}: {e.strerror or e}") from None
            scan.unreadable.append(rel)
            continue
        subdirs = []
        for e in entries:
            if e.name.startswith("."):
                continue
            path = e.name if not rel else os.path.join(rel, e.name)
            try:
                st = e.stat()                      # follows links
            except OSError:                        # a broken or looping link
                scan.special += 1
                continue
            if stat.S_ISDIR(st.st_mode):
                if (st.st_dev, st.st_ino) in seen:
                    scan.repeated += 1
                else:
                    seen.add((st.st_dev, st.st_ino))
                    subdirs.append(path)
            elif not stat.S_ISREG(st.st_mode):
                scan.special += 1
            elif e.name.lower().endswith(exts):
                scan.files.append(path)
            else:
                scan.other += 1
        stack.extend(reversed(subdirs))          # depth first, in name order
    scan.files.sort()
    return scan


def image_files(folder: Path) -> tuple[list[str], int]:
    """Image files under `folder` (recursive, hidden ones skipped), relative and sorted; and how
    many other files were passed over (:func:`scan_folder` tells more)."""
    scan = scan_folder(folder)
    return scan.files, scan.other + scan.special


def index_folder(root: Path, split: str, source: str, *, labelled: bool,
                 num_classes: int = 0) -> FileIndex:
    """List a folder's images. With `labelled`, each subfolder is a class (sorted names are the
    class names; loose files beside them are left out); a folder with no subfolders is
    unlabelled. Without `labelled`, every image under the folder counts, unlabelled."""
    d = split_dir(root, split)
    scan = scan_folder(d)
    files = scan.files
    if not files:
        raise GancliError(f"no image files ({', '.join(e[1:] for e in IMAGE_EXTS[:5])}, ...) "
                          f"in {d}" + "".join(f"; {n}" for n in scan.notes(d)))
    notes = scan.notes(d)
    labels, class_names = None, None
    nested = [f for f in files if os.sep in f]
    if labelled and nested:
        if len(nested) < len(files):
            notes.append(f"{len(files) - len(nested)} images directly in {d} left out "
                         f"(images go in class subfolders)")
        files = nested
        class_names = sorted({f.split(os.sep, 1)[0] for f in files})
        lookup = {c: i for i, c in enumerate(class_names)}
        labels = [lookup[f.split(os.sep, 1)[0]] for f in files]
    if num_classes:
        found = len(class_names or [])
        if found != num_classes:
            where = f"{found} class subfolders" if found else "no class subfolders"
            raise GancliError(f"the recipe expects {num_classes} classes but {d} has {where}")
    digest = hashlib.sha1(str(d.resolve()).encode())
    digest.update("\n".join(files).encode("utf-8", "surrogateescape"))
    name = f"{source}-{root.resolve().name or 'root'}-{digest.hexdigest()[:8]}-{split}"
    return FileIndex(d, files, labels, class_names, name, tuple(notes), spread=True)


def decode_all(index: FileIndex, cfg: DataConfig, threads: int | None = None) -> ImageData:
    """Decode every file of `index` at the recipe's size, in a thread pool (PIL and torch let go
    of the GIL while they work). Unreadable files are left out and counted."""
    n, size, ch = len(index), cfg.image_size, cfg.channels
    out = torch.empty((n, ch, size, size), dtype=torch.uint8)
    ok = [False] * n
    first_error: list[str] = []

    def one(i: int) -> None:
        try:
            out[i] = decode_file(index.root / index.files[i], size, ch, cfg.crop, cfg.background)
            ok[i] = True
        except Exception as e:  # any decoder failure means the same: this file cannot be used
            if not first_error:
                first_error.append(f"{index.files[i]}: {_first_line(e)}")

    with ThreadPoolExecutor(max_workers=threads or _threads()) as pool:
        for start in range(0, n, 8192):          # bounded: no million futures at once
            list(pool.map(one, range(start, min(n, start + 8192))))
    good = sum(ok)
    if good == 0:
        raise GancliError(f"none of the {n} image files in {index.root} could be read "
                          f"(e.g. {first_error[0] if first_error else '?'})")
    labels = None if index.labels is None else torch.tensor(index.labels, dtype=torch.int64)
    notes = list(index.notes)
    if good < n:
        keep = torch.tensor(ok)
        out = out[keep]
        labels = None if labels is None else labels[keep]
        notes.append(f"skipped {n - good} unreadable image files of {n} in {index.root} "
                     f"(e.g. {first_error[0]})")
    return ImageData(out, labels, len(index.class_names or []),
                     f"{index.name}-{_size_tag(cfg, bool(cfg.crop))}", index.class_names,
                     skipped=n - good, notes=tuple(notes))


def _first_line(e: BaseException) -> str:
    s = str(e).strip()
    return (s.splitlines()[0] if s else type(e).__name__)[:160]


class FolderImages(LazySource):
    """A folder of image files decoded lazily, one file at a time, in DataLoader workers.

    Paths are kept in one numpy byte array rather than a list of str, so forked workers do not
    copy the list page by page as reference counts change.
    """

    stored = "files"

    def __init__(self, index: FileIndex, cfg: DataConfig) -> None:
        self.root = str(index.root)
        self.files = np.array([os.fsencode(f) for f in index.files])
        self.labels = None if index.labels is None else torch.tensor(index.labels,
                                                                     dtype=torch.int64)
        self.num_classes = len(index.class_names or [])
        self.class_names = index.class_names
        self.name = f"{index.name}-{_size_tag(cfg, bool(cfg.crop))}"
        self.notes = index.notes
        self.size, self.channels, self.crop = cfg.image_size, cfg.channels, cfg.crop
        self.background = cfg.background
        self.cfg, self.index_name = cfg, index.name

    def __len__(self) -> int:
        return len(self.files)

    def path(self, i: int) -> str:
        return os.path.join(self.root, os.fsdecode(self.files[i]))

    def describe(self, i: int) -> str:
        return self.path(i)

    def decode(self, i: int) -> torch.Tensor:
        return decode_file(self.path(i), self.size, self.channels, self.crop, self.background)

    def load(self) -> ImageData:
        """Decode everything into memory (for the device-resident mode)."""
        labels = None if self.labels is None else self.labels.tolist()
        index = FileIndex(Path(self.root), [os.fsdecode(f) for f in self.files], labels,
                          self.class_names, self.index_name, self.notes)   # already limited
        return decode_all(index, self.cfg)


def local_dir(cfg: DataConfig) -> Path | None:
    """The local copy a user named: --data first, then the recipe's environment variable."""
    if cfg.path:
        p = Path(cfg.path).expanduser()
        if not p.is_dir():
            raise GancliError(f"data directory not found: {cfg.path}")
        return p
    if cfg.env and os.environ.get(cfg.env):
        p = Path(os.environ[cfg.env]).expanduser()
        if not p.is_dir():
            raise GancliError(f"data directory not found: {p} (from ${cfg.env})")
        return p
    return None
