"""Data source `emoji`: the 64x64 RGBA PNGs of the npm packages emoji-datasource-twitter (Twemoji,
CC-BY 4.0) and emoji-datasource-google (Noto Emoji, Apache 2.0), labelled by their emoji.json
category, from --data DIR (one package, or a folder holding several) or $GANCLI_EMOJI_DIR.

- `vendor` (data.vendor, --vendor): twitter (default), google or both. With both, each emoji's
  two drawings sit side by side in the index.
- Labels: the 9 Unicode groups (:data:`EMOJI_CATEGORIES`, sorted). A skin-tone variant takes its
  base emoji's group. The 'Component' images (skin-tone swatches, hair styles: parts of other
  emoji) are left out, with a note.
- Splits: the packages have none, so the test split is a fixed share (:data:`TEST_PERCENT`) of the
  base emoji, chosen by a hash of the base emoji's code points: the same emoji are held out for
  every vendor and package version, and an emoji's variants never straddle the two splits.
- Files listed in emoji.json but absent from img/<vendor>/64/ are skipped and counted.

It is a :func:`folder_index` source (a :class:`FileIndex`), so it is decoded into memory or
streamed like any folder, with transparency composited onto data.background.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import os
import re
from collections import Counter
from pathlib import Path
from typing import Any

from gancli.data.base import ImageData
from gancli.data.folders import FileIndex, decode_all, local_dir
from gancli.data.registry import folder_index, loader
from gancli.errors import GancliError
from gancli.recipes import DataConfig

EMOJI_CATEGORIES = ["Activities", "Animals & Nature", "Flags", "Food & Drink", "Objects",
                    "People & Body", "Smileys & Emotion", "Symbols", "Travel & Places"]
LEFT_OUT = "Component"            # skin-tone swatches and hair styles: parts, not pictures
VENDOR_ORDER = ("twitter", "google")
TEST_PERCENT = 10                 # of the base emoji, held out as the test split
IMAGE_DIR = "64"                  # the packages' largest single images; other sizes are resized
ENV = "GANCLI_EMOJI_DIR"
MAX_JSON = 64 << 20               # emoji.json is about 1 MB; anything this big is not one
HOW = ("get one with `npm pack emoji-datasource-twitter@16.0.0` and `tar xzf "
       "emoji-datasource-twitter-16.0.0.tgz`, then pass --data package (the folder it unpacks "
       "into); for --vendor both unpack emoji-datasource-google@16.0.0 as well, each package "
       "into a folder of its own, and pass the folder holding both")


def held_out(unified: str) -> bool:
    """Whether the base emoji with code points `unified` (e.g. "1F385") is in the test split."""
    h = hashlib.sha1(f"gancli-emoji-split:{unified.upper()}".encode()).hexdigest()
    return int(h[:8], 16) % 100 < TEST_PERCENT


def _place(unified: str) -> str:
    """A base emoji's place in the listing: a hash, so that the first N are a fair sample."""
    return hashlib.sha1(f"gancli-emoji-order:{unified.upper()}".encode()).hexdigest()


def _vendors(cfg: DataConfig) -> tuple[str, ...]:
    v = cfg.vendor or "twitter"
    return VENDOR_ORDER if v == "both" else (v,)


def _packages(d: Path) -> list[Path]:
    """The emoji packages at `d`: `d` when it holds emoji.json, else its subfolders that do."""
    if (d / "emoji.json").is_file():
        return [d]
    return sorted(p for p in d.iterdir() if p.is_dir() and (p / "emoji.json").is_file())


def package_dirs(d: Path, vendors: tuple[str, ...]) -> dict[str, Path]:
    """For each vendor, the package under `d` that has its img/<vendor>/64/ folder."""
    packages = _packages(d)
    if not packages:
        raise GancliError(f"{d} holds no emoji package (no emoji.json in it or in its "
                          f"subfolders): {HOW}")
    found = {}
    for v in vendors:
        pkg = next((p for p in packages if (p / "img" / v / IMAGE_DIR).is_dir()), None)
        if pkg is None:
            raise GancliError(f"{d} has no {v} images (img/{v}/{IMAGE_DIR}/ of the "
                              f"emoji-datasource-{v} package): {HOW}")
        found[v] = pkg
    return found


def read_entries(pkg: Path) -> list[Any]:
    path = pkg / "emoji.json"
    try:
        if path.stat().st_size > MAX_JSON:
            raise GancliError(f"{path} is over {MAX_JSON >> 20} MiB: not an emoji list")
        entries = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, ValueError, RecursionError) as e:
        raise GancliError(f"cannot read {path} ({str(e).splitlines()[0][:80]})") from None
    if not isinstance(entries, list):
        raise GancliError(f"{path} is not an emoji list (expected a JSON array)")
    return entries


def _version(pkg: Path) -> str:
    """The package's version from package.json, as a file-name-safe tag ("" if unknown)."""
    try:
        v = json.loads((pkg / "package.json").read_text(encoding="utf-8")).get("version", "")
    except (OSError, UnicodeDecodeError, ValueError, AttributeError):
        return ""
    return re.sub(r"[^\w.-]", "", str(v))[:20]


def _plain(name: Any) -> bool:
    # Names come from a file: they must stay inside the image folder.
    return (isinstance(name, str) and bool(name) and not name.startswith(".")
            and "/" not in name and "\\" not in name and "\0" not in name)


def _images(entry: dict[str, Any], vendor: str) -> list[tuple[Any, bool]]:
    """(file name, whether the vendor has that drawing) of an emoji and its skin-tone variants."""
    key = f"has_img_{vendor}"
    out = [(entry.get("image"), entry.get(key) is not False)]
    variants = entry.get("skin_variations")
    if isinstance(variants, dict):
        for k in sorted(variants):
            s = variants[k]
            if isinstance(s, dict):
                out.append((s.get("image"), s.get(key) is not False))
    return out


def index_vendor(pkg: Path, vendor: str, split: str
                 ) -> tuple[list[tuple[str, int, str]], list[str]]:
    """One vendor's images of `split`: ([(file name, label, base emoji)], notes)."""
    folder = pkg / "img" / vendor / IMAGE_DIR
    on_disk = set(os.listdir(folder))
    lookup = {c: i for i, c in enumerate(EMOJI_CATEGORIES)}
    items: list[tuple[str, int, str]] = []
    counts: Counter[str] = Counter()
    others: set[str] = set()
    for entry in read_entries(pkg):
        if not isinstance(entry, dict) or not isinstance(entry.get("category"), str):
            counts["bad"] += 1
            continue
        cat, base = entry["category"], entry.get("unified") or entry.get("image")
        images = _images(entry, vendor)
        if cat not in lookup:
            counts["component" if cat == LEFT_OUT else "other"] += len(images)
            others.update([] if cat == LEFT_OUT else [cat])
            continue
        if not isinstance(base, str) or held_out(base) != (split == "test"):
            continue
        for name, drawn in images:
            if not _plain(name):
                counts["bad"] += 1
            elif not drawn:
                counts["undrawn"] += 1
            elif name not in on_disk:
                counts["missing"] += 1
            else:
                items.append((name, lookup[cat], base.upper()))
    why = {
        "component": f"{vendor} '{LEFT_OUT}' images (skin-tone swatches and hair styles, parts "
                     f"of other emoji) left out",
        "other": f"{vendor} images of categories outside the 9 groups left out "
                 f"({', '.join(sorted(others))[:120]})",
        "undrawn": f"emoji that emoji.json says have no {vendor} drawing (has_img_{vendor} "
                   f"false) left out",
        "missing": f"images listed in {pkg / 'emoji.json'} but missing from {folder} skipped",
        "bad": f"entries of {pkg / 'emoji.json'} that name no emoji category or plain image "
               f"file skipped",
    }
    notes = [f"{counts[k]} {text}" for k, text in why.items() if counts[k]]
    return items, notes


@folder_index("emoji")
def index_emoji(cfg: DataConfig, split: str) -> FileIndex:
    """The emoji of `split` for the configured vendors, listed (not decoded), labelled by group."""
    d = local_dir(dataclasses.replace(cfg, env=cfg.env or ENV))
    if d is None:
        raise GancliError(f"the emoji source needs --data DIR (or ${cfg.env or ENV}), an "
                          f"emoji-datasource package: {HOW}")
    if cfg.num_classes and cfg.num_classes != len(EMOJI_CATEGORIES):
        raise GancliError(f"the recipe expects {cfg.num_classes} classes but the emoji source "
                          f"has {len(EMOJI_CATEGORIES)} (its categories)")
    vendors = _vendors(cfg)
    rows: list[tuple[str, int, str, int]] = []      # (file name, vendor rank, path, label)
    shuffled: dict[str, str] = {}                   # file name -> its base emoji's place
    notes: list[str] = []
    versions = []
    for rank, (v, pkg) in enumerate(package_dirs(d, vendors).items()):
        items, more = index_vendor(pkg, v, split)
        rel = os.path.relpath(pkg / "img" / v / IMAGE_DIR, d)
        rows += [(name, rank, os.path.normpath(os.path.join(rel, name)), label)
                 for name, label, _ in items]
        shuffled.update((name, _place(base)) for name, _, base in items)
        notes += more
        versions.append(_version(pkg))
    if not rows:
        raise GancliError(f"no {'/'.join(vendors)} emoji images of the {split} split in {d}: "
                          f"{HOW}")
    # Base emoji in a fixed shuffled order (code point order puts 258 flags first and leaves
    # the smileys past image 1,000), each followed by its skin-tone variants, each drawing
    # beside its other vendor's: --limit N is a spread of every group and keeps every style.
    rows.sort(key=lambda r: (shuffled[r[0]], os.path.splitext(r[0])[0], r[1]))
    # Named by what was listed, not where it lies: a package moved or unpacked elsewhere keeps
    # its caches (the classifier's, FID's reference statistics).
    digest = hashlib.sha1("\n".join(f"{vendors[r]}/{n}:{y}" for n, r, _, y in rows).encode())
    version = "-".join(sorted({v for v in versions if v}))
    name = "-".join(["emoji", cfg.vendor or "twitter", *([f"v{version}"] if version else []),
                     digest.hexdigest()[:8], split])
    return FileIndex(d, [p for _, _, p, _ in rows], [y for *_, y in rows],
                     list(EMOJI_CATEGORIES), name, tuple(notes))


@loader("emoji")
def load_emoji(cfg: DataConfig, split: str) -> ImageData:
    """The emoji of `split`, decoded into memory."""
    return decode_all(index_emoji(cfg, split).first(cfg.limit), cfg)
