"""gancli data: the grid of what training sees and the counts, on the digits that ship with the
install, on folders (in memory and streamed), on a fake emoji package, and on the real emoji
packages when ../shared/data/emoji holds them."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from PIL import Image

from gancli.data import epoch_permutation, load_images, look, make_batches, open_dataset, to_uint8
from gancli.recipes import DataConfig, resolve_data
from gancli.viz import grid

from conftest import invoke
from test_background import rgba_png
from test_emoji import EMOJI, fake_package


def said(r) -> str:
    """stdout with rich's line folding undone."""
    return " ".join(r.stdout.split())


def one_line_error(r, words: str) -> None:
    assert r.exit_code == 2, r.output
    assert "Traceback" not in r.output and words in r.stderr
    assert len(r.stderr.strip().splitlines()) == 1 and r.stderr.startswith("error:")


def test_digits_grid_is_the_first_batch_training_draws(tmp_path):
    out = tmp_path / "digits.png"
    r = invoke("data", "--out", out)
    assert r.exit_code == 0, r.output
    text = said(r)
    assert "1,500 at 16x16, grey" in text and "digits-train-16px1c" in text
    assert "classes 10" in text and "3: 153 (10.2%)" in text
    assert "skipped none" in text and "in memory: decoded once" in text
    assert f"wrote {out}  (grid of the first 64 images of epoch 0 with --seed 0" in r.stdout
    # The grid holds the images of the first 64 places of epoch 0's permutation, in order.
    cfg = resolve_data("digits")[1]
    data = load_images(cfg)
    first = data.images[epoch_permutation(0, 0, len(data))[:64]]
    want = grid(first, nrow=8)
    got = torch.from_numpy(np.array(Image.open(out))).unsqueeze(0)
    assert torch.equal(got, want)
    # ... which is the batch the training loop's batcher hands its first step.
    x, _ = next(make_batches(open_dataset(cfg), 64, torch.device("cpu"), seed=0))
    assert torch.equal(to_uint8(x), first)


def test_seed_split_limit_and_overrides(tmp_path):
    view = look(resolve_data("digits")[1], n=16, seed=3)
    data = load_images(resolve_data("digits")[1])
    assert torch.equal(view.images, data.images[epoch_permutation(3, 0, 1500)[:16]])
    r = invoke("data", "--split", "test", "--limit", "10", "--n", "64", "--image-size", "8",
               "--out", tmp_path / "t.png")
    assert r.exit_code == 0, r.output
    assert "10 at 8x8" in said(r) and "grid of the first 10 images" in said(r)
    side = (8 * 8 + 2) * math.ceil(math.sqrt(10)) + 2          # 4 columns of 8 px images x 8
    assert Image.open(tmp_path / "t.png").size == (side, (8 * 8 + 2) * 3 + 2)


def test_outputs_refused_replaced_and_default(tmp_path, monkeypatch):
    out = tmp_path / "g.png"
    out.write_bytes(b"mine")
    one_line_error(invoke("data", "--out", out), "exists: pass --overwrite")
    assert out.read_bytes() == b"mine"
    assert invoke("data", "--out", out, "--overwrite").exit_code == 0
    assert Image.open(out).size[0] > 100
    monkeypatch.chdir(tmp_path)
    for _ in range(2):                                        # gancli's own default: replaced
        r = invoke("data", "--n", "4")
        assert r.exit_code == 0, r.output
    assert (tmp_path / "runs" / "data" / "digits-train.png").is_file()
    assert list((tmp_path / "runs" / "data").iterdir()) == [tmp_path / "runs/data/digits-train.png"]


@pytest.mark.parametrize("args, words", [
    (["--split", "val"], "--split must be train or test"),
    (["--n", "0"], "--n must be positive"),
    (["--n", "20000"], "--n must be at most"),
    (["--background", "pink"], "--background must be white, black, grey or a #rrggbb"),
    (["--vendor", "google"], "--vendor is a setting of the emoji source"),
    (["--image-size", "0"], "data.image_size must be positive"),
    (["--out", "grid.jpg"], "data writes a .png grid"),
    (["--recipe", "nonesuch"], "unknown recipe 'nonesuch'"),
    (["--recipe", "imagefolder"], "needs --data DIR"),
    (["--recipe", "imagefolder", "--data", "/nonexistent/dir"], "data directory not found"),
])
def test_user_errors_are_one_line(args, words, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    one_line_error(invoke("data", *args), words)
    assert not (tmp_path / "runs").exists()                   # refused before anything is written


def test_streamed_folder_with_transparency(tmp_path):
    for i in range(5):
        rgba_png(tmp_path / "pics" / f"{i}.png")
    recipe = tmp_path / "folder.toml"
    recipe.write_text('[data]\nsource = "imagefolder"\nimage_size = 2\nchannels = 3\n'
                      'stream = "stream"\n')
    out = tmp_path / "g.png"
    r = invoke("data", "--recipe", recipe, "--data", tmp_path / "pics", "--out", out,
               "--background", "black")
    assert r.exit_code == 0, r.output
    text = said(r)
    assert "5 at 2x2, RGB, transparency on black" in text and "classes none (no labels)" in text
    assert "streamed: decoded image by image from files" in text
    assert 'data.stream is "stream"' in text
    cell = np.asarray(Image.open(out))[2:66, 2:66]            # the first image, scaled 32x
    assert (cell[:32, :32] == 0).all() and (cell[:32, 32:] == (255, 0, 0)).all()
    assert "bg000000" in text


def test_fake_emoji_package(tmp_path):
    fake_package(tmp_path, "twitter")
    out = tmp_path / "e.png"
    r = invoke("data", "--recipe", "emoji", "--data", tmp_path, "--out", out)
    assert r.exit_code == 0, r.output
    text = said(r)
    assert "source emoji (twitter)" in text and "5 at 64x64, RGB, transparency on white" in text
    assert "Smileys & Emotion: 3 (60.0%)" in text and "Travel & Places: 0 (0.0%)" in text
    assert "'Component' images" in text and "no twitter drawing" in text
    assert np.asarray(Image.open(out))[2, 2].tolist() == [255, 255, 255]
    one_line_error(invoke("data", "--recipe", "emoji", "--data", tmp_path, "--vendor", "google"),
                   "no google images")


def test_real_emoji(tmp_path):
    if not (EMOJI / "emoji-datasource-twitter" / "emoji.json").is_file():
        pytest.skip("real emoji packages not present (../shared/data/emoji)")
    out = tmp_path / "emoji.png"
    r = invoke("data", "--recipe", "emoji", "--data", EMOJI, "--out", out)
    assert r.exit_code == 0, r.output
    text = said(r)
    assert "3,390 at 64x64, RGB, transparency on white" in text and "classes 9" in text
    assert "People & Body: 2,007" in text and "5 twitter 'Component' images" in text
    assert "in memory: decoded once" in text
    # White backgrounds: most cells' top-left pixels are white (a few emoji reach their corner).
    a = np.asarray(Image.open(out))
    corners = [a[2 + 66 * (i // 8), 2 + 66 * (i % 8)] for i in range(64)]
    assert sum((c == 255).all() for c in corners) >= 48
    r = invoke("data", "--recipe", "emoji", "--data", EMOJI, "--vendor", "both", "--split",
               "test", "--out", tmp_path / "both.png")
    assert r.exit_code == 0 and "782 at 64x64" in said(r)
