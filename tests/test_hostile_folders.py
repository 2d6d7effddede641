"""Image folders as people have them: symlink loops, FIFOs, devices, unreadable subfolders,
headers claiming billions of pixels, EXIF-rotated camera JPEGs, 16-bit, 32-bit and float images,
and --limit on class folders. Every hostile input is built here, in tmp_path."""

from __future__ import annotations

import io
import os
import struct
import subprocess
import sys
import zlib

import numpy as np
import pytest
import torch
from PIL import Image

from conftest import invoke
from gancli.data import decode_file, index_folder
from gancli.data.folders import scan_folder
from gancli.data.pixels import MAX_PIXELS, open_image, to_8bit
from gancli.errors import GancliError
from gancli.metrics import image_files
from gancli.recipes import DataConfig


def png(path, value=128, size=(4, 4), mode="L"):
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.new(mode, size, value).save(path)
    return path


def bomb_png(path, w=100_000, h=100_000):
    """A PNG whose IHDR claims w x h 8-bit grey pixels, followed by a tiny, truncated IDAT:
    a decoder trusting the header would allocate w*h bytes."""
    def chunk(kind, data):
        return (struct.pack(">I", len(data)) + kind + data
                + struct.pack(">I", zlib.crc32(kind + data) & 0xFFFFFFFF))
    ihdr = struct.pack(">IIBBBBB", w, h, 8, 0, 0, 0, 0)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr)
                     + chunk(b"IDAT", zlib.compress(b"\0" * 64)) + chunk(b"IEND", b""))
    return path


def cfg(path, size=4, channels=1, **kw) -> DataConfig:
    return DataConfig(source="imagefolder", image_size=size, channels=channels, path=str(path),
                      **kw)


RECIPE = """
[data]
source = "imagefolder"
image_size = 4
channels = 1
stream = "auto"
[train]
batch_size = 2
steps = 1
log_every = 1
sample_every = 1
checkpoint_every = 1
[models.gan]
noise_dim = 4
hidden = 8
"""


def train(tmp_path, data, *extra):
    recipe = tmp_path / "r.toml"
    recipe.write_text(RECIPE)
    return invoke("train", "gan", "--recipe", recipe, "--data", data, "--out",
                  tmp_path / "run", "--steps", "1", "--no-progress", *extra)


def one_line_error(r, *words):
    assert r.exit_code == 2, r.output
    assert "Traceback" not in r.output
    lines = [ln for ln in r.stderr.splitlines() if ln.strip()]
    assert len(lines) == 1 and lines[0].startswith("error:"), r.stderr
    for w in words:
        assert w in lines[0], lines[0]


# ----------------------------------------------------------------------------- the walk


def test_symlink_loops_each_real_folder_read_once(tmp_path):
    d = tmp_path / "pics"
    png(d / "a" / "1.png")
    png(d / "a" / "deep" / "2.png")
    os.symlink("..", d / "a" / "deep" / "up")           # a loop back to a/
    os.symlink(d, d / "a" / "root")                      # a loop to the top
    os.symlink(d / "a", d / "b")                         # a second name for a/
    os.symlink(d / "nowhere", d / "a" / "broken.png")    # a broken link
    scan = scan_folder(d)
    assert scan.files == ["a/1.png", "a/deep/2.png"]
    assert scan.repeated == 3 and scan.special == 1
    idx = index_folder(d, "train", "imagefolder", labelled=False)
    assert idx.files == scan.files and any("already read" in n for n in idx.notes)
    assert [p.name for p in image_files(d)] == ["1.png", "2.png"]


def test_fifos_and_devices_are_skipped_not_opened(tmp_path):
    d = tmp_path / "pics"
    png(d / "ok.png")
    png(d / "ok2.png")
    os.mkfifo(d / "pipe.png")                            # opened for reading: blocks forever
    os.symlink("/dev/zero", d / "zero.jpg")              # a device: streams forever
    idx = index_folder(d, "train", "imagefolder", labelled=False)
    assert idx.files == ["ok.png", "ok2.png"]
    assert any("2 special files" in n and "not opened" in n for n in idx.notes)
    with pytest.raises(GancliError, match="not a regular file"):
        open_image(d / "pipe.png")
    assert [p.name for p in image_files(d)] == ["ok.png", "ok2.png"]
    r = train(tmp_path, d)
    assert r.exit_code == 0, r.output


@pytest.mark.skipif(os.geteuid() == 0, reason="root reads any folder")
def test_unreadable_subfolder_counted_like_unreadable_files(tmp_path):
    d = tmp_path / "pics"
    png(d / "cat" / "1.png")
    png(d / "cat" / "2.png")
    png(d / "dog" / "1.png")
    locked = d / "dog"
    locked.chmod(0)
    try:
        idx = index_folder(d, "train", "imagefolder", labelled=True)
        assert idx.files == ["cat/1.png", "cat/2.png"]
        assert any("1 unreadable folders" in n and "dog" in n for n in idx.notes)
        r = train(tmp_path, d)
        assert r.exit_code == 0 and "unreadable folders" in r.output, r.output
        d.chmod(0)
        one_line_error(train(tmp_path / "x", d), "cannot read folder")
    finally:
        d.chmod(0o755)
        locked.chmod(0o755)


# ----------------------------------------------------------------------------- the decoder


def test_bomb_refused_from_the_header_without_pil_warnings(tmp_path):
    b = bomb_png(tmp_path / "pics" / "bomb.png")
    just_over = bomb_png(tmp_path / "over.png", 12_000, 12_000)   # PIL warns here, no error
    png(tmp_path / "pics" / "ok.png")
    png(tmp_path / "pics" / "ok2.png")
    assert 12_000 * 12_000 > MAX_PIXELS
    for f in (b, just_over):
        with pytest.raises(GancliError, match="refused before decoding"):
            decode_file(f, 4, 1)
    # PIL's own warning, with the filters a terminal has (pytest records every warning).
    code = ("import sys; from gancli.data.pixels import decode_file\n"
            "try: decode_file(sys.argv[1], 4, 1)\nexcept Exception as e: print(e)")
    p = subprocess.run([sys.executable, "-c", code, str(just_over)], capture_output=True,
                       text=True, timeout=120)
    assert "refused before decoding" in p.stdout and p.stderr == "", p.stderr
    r = train(tmp_path, tmp_path / "pics")
    assert r.exit_code == 0, r.output
    assert "skipped 1 unreadable" in r.output and "refused before decoding" in r.output
    assert "DecompressionBomb" not in r.output and "Traceback" not in r.output


def test_fid_ref_folder_with_a_bomb_is_one_line(tmp_path):
    bomb_png(tmp_path / "ref" / "bomb.png")
    png(tmp_path / "ref" / "ok.png")
    png(tmp_path / "gen" / "ok.png")
    os.mkfifo(tmp_path / "ref" / "pipe.png")
    r = invoke("fid", tmp_path / "gen", "--ref", tmp_path / "ref", "--device", "cpu",
               "--metrics", "fid")
    one_line_error(r, "bomb.png", "refused before decoding")


def test_exif_orientation_trained_upright(tmp_path):
    # 4 wide, 2 high, left half black and right half white, tagged "rotate 90 CW to view".
    a = np.zeros((2, 4, 3), np.uint8)
    a[:, 2:] = 255
    im = Image.fromarray(a)
    exif = Image.Exif()
    exif[0x0112] = 6
    f = tmp_path / "pics" / "cam.jpg"
    f.parent.mkdir()
    im.save(f, exif=exif.tobytes(), quality=100)
    x = decode_file(f, 2, 1, crop=None)
    # Upright it is 2 wide, 4 high, black above white (the stored left columns on top): its
    # centre square is a black row above a white one. Stored, that square is black | white.
    assert x.shape == (1, 2, 2)
    assert int(x[0, 0].max()) < 55 and int(x[0, 1].min()) > 200
    (fx,) = [image_files(tmp_path / "pics")[0]]
    from gancli.metrics.inputs import FolderFiles
    assert tuple(FolderFiles([fx])[0].shape) == (3, 4, 2)        # the reference, upright too


@pytest.mark.parametrize("kind", ["I;16", "I", "F01", "Fwide", "I32"])
def test_high_bit_depths_scaled_to_their_true_range(tmp_path, kind):
    ramp = np.linspace(0, 1, 16).reshape(4, 4)
    if kind == "I;16":
        arr, f = (ramp * 65535).astype(np.uint16), "a.png"          # opens as I;16
    elif kind == "I":
        arr, f = (ramp * 65535).astype(np.int32), "a.tif"           # 16-bit values in I
    elif kind == "I32":
        arr, f = (ramp * 2_000_000_000).astype(np.int32), "a.tif"
    elif kind == "F01":
        arr, f = ramp.astype(np.float32), "a.tif"
    else:
        arr, f = (ramp * 5000 - 1000).astype(np.float32), "a.tif"
    path = tmp_path / "pics" / f
    path.parent.mkdir()
    Image.fromarray(arr).save(path)
    with Image.open(path) as im:
        assert im.mode in ("I;16", "I", "F")
        got = np.asarray(to_8bit(im))
    want = np.rint(ramp * 255)
    assert np.abs(got.astype(int) - want).max() <= 1               # neither white nor black
    x = decode_file(path, 4, 1)
    assert int(x.min()) <= 1 and int(x.max()) >= 254 and len(torch.unique(x)) == 16


# ----------------------------------------------------------------------------- --limit


def classes(d, n_classes=3, per=4):
    for c in range(n_classes):
        for i in range(per):
            png(d / f"class{c}" / f"{i}.png", value=40 * c)
    return d


def test_limit_keeps_every_class(tmp_path):
    d = classes(tmp_path / "pics")
    idx = index_folder(d, "train", "imagefolder", labelled=True).first(6)
    assert sorted(idx.labels) == [0, 0, 1, 1, 2, 2]
    assert not any("dropped" in n for n in idx.notes)
    r = train(tmp_path, d, "--limit", "6")
    assert r.exit_code == 0, r.output


def test_limit_below_the_class_count_says_which_are_dropped(tmp_path):
    d = classes(tmp_path / "pics")
    idx = index_folder(d, "train", "imagefolder", labelled=True).first(2)
    assert sorted(idx.labels) == [0, 1]
    (note,) = [n for n in idx.notes if "dropped" in n]
    assert "1 dropped (class2)" in note
    r = train(tmp_path, d, "--limit", "2")
    assert r.exit_code == 0 and "dropped (class2)" in r.output, r.output


def test_recipe_class_count_must_match_before_training(tmp_path):
    d = classes(tmp_path / "pics")
    recipe = tmp_path / "r.toml"
    recipe.write_text(RECIPE.replace('channels = 1', 'channels = 1\nnum_classes = 5'))
    r = invoke("train", "gan", "--recipe", recipe, "--data", d, "--out", tmp_path / "run",
               "--no-progress")
    one_line_error(r, "5 classes", "3 class subfolders")
    assert not (tmp_path / "run" / "checkpoints").exists()


def test_a_listing_in_its_own_order_keeps_its_first_n(tmp_path):
    # emoji orders its files itself (a hashed spread): --limit stays the plain first n there.
    from gancli.data.folders import FileIndex
    idx = FileIndex(tmp_path, ["b/1", "a/1", "b/2"], [1, 0, 1], ["a", "b"], "x")
    assert idx.first(2).files == ["b/1", "a/1"] and idx.first(2).name == "x-first2"


def test_unreadable_subfolder_as_root_too(tmp_path, monkeypatch):
    # Root reads any folder, so the refusal a chmod 000 gives other users is simulated.
    d = tmp_path / "pics"
    for c in ("cat", "dog"):
        png(d / c / "1.png")
        png(d / c / "2.png")
    real = os.scandir

    def scandir(p="."):
        if os.path.basename(str(p)) == "dog":
            raise PermissionError(13, "Permission denied")
        return real(p)

    monkeypatch.setattr(os, "scandir", scandir)
    idx = index_folder(d, "train", "imagefolder", labelled=True)
    assert idx.files == ["cat/1.png", "cat/2.png"] and idx.class_names == ["cat"]
    assert any("1 unreadable folders" in n and "dog" in n for n in idx.notes)
