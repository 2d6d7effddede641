"""Transparency composited onto data.background (--background) in every path that decodes images:
folder files in memory and streamed, palette and grey-alpha files, in-memory PIL modes, and
HuggingFace tables. Tiny PNGs written here."""

from __future__ import annotations

import pytest
import torch
from PIL import Image

from gancli.data import FolderImages, flatten, load_images, open_dataset, prepare_image
from gancli.errors import GancliError
from gancli.recipes import DataConfig, parse_background, resolve

from conftest import invoke

CLEAR, RED, HALF, HIDDEN = (0, 0, 0, 0), (255, 0, 0, 255), (255, 0, 0, 128), (10, 200, 30, 0)


def blend(c: int, a: int, bg: int) -> int:
    return round((c * a + bg * (255 - a)) / 255)


def rgba_png(path, pixels=(CLEAR, RED, HALF, HIDDEN)):
    """A 2x2 RGBA PNG: transparent black, opaque red, half-transparent red, and transparent
    with a colour stored under alpha 0 (as many emoji files have)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    im = Image.new("RGBA", (2, 2))
    im.putdata(list(pixels))
    im.save(path)
    return path


def cfg(path, channels=3, **kw) -> DataConfig:
    return DataConfig(source="imagefolder", image_size=2, channels=channels, path=str(path), **kw)


def pixels(x: torch.Tensor) -> list[tuple[int, ...]]:
    """C x 2 x 2 -> the four pixels in PIL's putdata order."""
    return [tuple(int(v) for v in x[:, i // 2, i % 2]) for i in range(4)]


@pytest.mark.parametrize("background, bg", [("white", (255, 255, 255)), ("black", (0, 0, 0)),
                                            ("#102030", (16, 32, 48)), ("grey", (128, 128, 128))])
def test_rgba_files_on_background_in_memory_and_streamed(tmp_path, background, bg):
    rgba_png(tmp_path / "f" / "a.png")
    want = [bg, (255, 0, 0), tuple(blend(c, 128, b) for c, b in zip((255, 0, 0), bg)), bg]
    mem = load_images(cfg(tmp_path / "f", background=background))
    assert pixels(mem.images[0]) == want
    lazy = open_dataset(cfg(tmp_path / "f", background=background, stream="stream"))
    assert isinstance(lazy, FolderImages) and pixels(lazy.decode(0)) == want


def test_white_is_the_default_and_half_alpha_blends(tmp_path):
    rgba_png(tmp_path / "f" / "a.png")
    x = load_images(cfg(tmp_path / "f")).images[0]
    assert pixels(x) == [(255, 255, 255), (255, 0, 0), (255, 127, 127), (255, 255, 255)]


def test_grey_alpha_and_palette_transparency(tmp_path):
    la = Image.new("LA", (2, 2))
    la.putdata([(100, 0), (100, 255), (100, 128), (0, 0)])
    la.save(tmp_path / "la.png")
    grey = load_images(cfg(tmp_path, channels=1)).images[0]
    assert grey[0].flatten().tolist() == [255, 100, blend(100, 128, 255), 255]
    (tmp_path / "la.png").unlink()

    p = Image.new("P", (2, 2))
    p.putpalette([0, 0, 0, 0, 0, 255] + [0] * 762)      # index 0 black, index 1 blue
    p.putdata([0, 1, 1, 0])
    p.save(tmp_path / "p.png", transparency=0)           # index 0 is transparent (tRNS)
    p.save(tmp_path / "p.gif", transparency=0)
    d = load_images(cfg(tmp_path, background="black"))
    for x in d.images:                                   # the GIF and the PNG alike
        assert pixels(x) == [(0, 0, 0), (0, 0, 255), (0, 0, 255), (0, 0, 0)]
    for x in load_images(cfg(tmp_path)).images:
        assert pixels(x) == [(255, 255, 255), (0, 0, 255), (0, 0, 255), (255, 255, 255)]


@pytest.mark.parametrize("mode", ["PA", "RGBa", "La", "RGBA", "LA"])
def test_every_alpha_mode_composites(mode):
    im = Image.new("RGBA", (2, 2), (0, 0, 0, 0)).convert(mode) if mode != "La" else \
        Image.new("LA", (2, 2), (0, 0)).convert("La")
    x = prepare_image(im, 2, 3, background="#00ff00")
    assert (x[1] == 255).all() and (x[0] == 0).all() and (x[2] == 0).all()


def test_opaque_images_are_untouched_by_the_background(tmp_path):
    im = Image.new("RGB", (2, 2))
    im.putdata([(1, 2, 3), (250, 251, 252), (0, 0, 0), (255, 255, 255)])
    im.save(tmp_path / "rgb.png")
    white = load_images(cfg(tmp_path)).images
    assert torch.equal(white, load_images(cfg(tmp_path, background="black")).images)
    assert pixels(white[0]) == [(1, 2, 3), (250, 251, 252), (0, 0, 0), (255, 255, 255)]
    assert flatten(Image.new("RGBA", (1, 1), (9, 8, 7, 255))).getpixel((0, 0)) == (9, 8, 7)


def test_background_is_in_the_name_only_when_not_white(tmp_path):
    rgba_png(tmp_path / "f" / "a.png")
    base = load_images(cfg(tmp_path / "f")).name
    assert "bg" not in base and base.endswith("2px3c")
    assert load_images(cfg(tmp_path / "f", background="#FFFFFF")).name == base
    black = load_images(cfg(tmp_path / "f", background="black"))
    assert black.name == f"{base}-bg000000"
    lazy = open_dataset(cfg(tmp_path / "f", background="black", stream="stream"))
    assert lazy.name == black.name and lazy.load().name == black.name
    # Tensors from IDX-style sources have no alpha: their names never carry a background.
    d = load_images(DataConfig(source="digits", image_size=8, channels=1, background="black"))
    assert "bg" not in d.name


def test_hub_images_composite_too():
    datasets = pytest.importorskip("datasets")
    from gancli.data import table_index

    ims = []
    for colour in ((0, 0, 0, 0), (255, 0, 0, 255)):
        ims.append(Image.new("RGBA", (4, 4), colour))
    ds = datasets.Dataset.from_dict({"image": ims}, features=datasets.Features(
        {"image": datasets.Image()}))
    index = table_index(ds, "t-train", "test table")
    c = DataConfig(source="hf", image_size=4, channels=3, background="black")
    mem = index.decode(c)
    assert (mem.images[0] == 0).all() and mem.images[1, 0].min() == 255
    assert mem.name.endswith("-bg000000")
    assert torch.equal(index.lazy(c).decode(0), mem.images[0])
    assert (index.decode(DataConfig(source="hf", image_size=4, channels=3)).images[0] == 255).all()


@pytest.mark.parametrize("bad", ["pink", "#12345", "#gggggg", "", "white ", 7])
def test_bad_backgrounds_are_one_line(bad):
    if bad == "white ":                                  # surrounding spaces are forgiven
        assert parse_background(bad) == (255, 255, 255)
        return
    with pytest.raises(GancliError, match="background must be") as e:
        resolve("dcgan", "imagefolder", data_overrides={"background": bad})
    assert "\n" not in str(e.value)
    if isinstance(bad, str):
        assert "white, black, grey or a #rrggbb colour" in str(e.value)


def test_train_background_option(tmp_path):
    r = invoke("train", "dcgan", "--recipe", "imagefolder", "--background", "pink", "--dry-run")
    assert r.exit_code == 2 and "--background must be" in r.stderr and "Traceback" not in r.output
    r = invoke("train", "gan", "--background", "black", "--dry-run")
    assert r.exit_code == 0 and '"background": "black"' in r.stdout
    r = invoke("train", "gan", "--vendor", "google", "--dry-run")
    assert r.exit_code == 2 and "--vendor is a setting of the emoji source" in r.stderr
    r = invoke("train", "gan", "--resume", str(tmp_path), "--background", "black")
    assert r.exit_code == 2 and "--background" in r.stderr and "cannot change" in r.stderr
