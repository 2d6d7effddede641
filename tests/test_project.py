"""`gancli project`: latents that redraw a real image, written so that `sample --latents` gives
the reconstruction back; a generator's own image is found again, a random one is not."""

import json

import numpy as np
import pytest
from PIL import Image

from conftest import invoke
from test_families import trained
from test_truncation_latents import ok, one_line_error

FAST = ("--steps", "60", "--starts", "4")


@pytest.fixture(scope="module")
def own_images(tiny_run, tmp_path_factory):
    d = tmp_path_factory.mktemp("own") / "png"
    ok(invoke("sample", tiny_run, "--n", 2, "--seed", 9, "--out", d))
    return d


def test_own_image_is_found_again_and_round_trips(tiny_run, own_images, tmp_path):
    rng = np.random.default_rng(0)
    noise = tmp_path / "noise.png"
    Image.fromarray(rng.integers(0, 256, (16, 16), dtype=np.uint8), "L").save(noise)
    out = tmp_path / "proj"
    r = ok(invoke("project", own_images / "000000.png", noise, tiny_run, *FAST, "--out", out))
    assert "MSE" in r.stdout and "PSNR" in r.stdout
    own, rand = (json.loads((out / f"{n}.json").read_text()) for n in ("000000", "noise"))
    assert own["init"] == "q" and set(own["codes"]) == {"c1", "c2", "c3"}
    assert own["mse"] < 0.01 and own["mse"] * 10 < rand["mse"], (own["mse"], rand["mse"])
    assert own["psnr"] > 20 and len(own["start_mse"]) == 4
    for name in ("000000", "noise"):
        for suffix in (".png", "-original.png", "-projected.png", ".npz"):
            assert (out / f"{name}{suffix}").is_file()
    assert not [p for p in out.iterdir() if p.name.startswith(".")]   # no temporary left
    # the latents are exactly what sample --latents reads: the same image, byte for byte
    ok(invoke("sample", tiny_run, "--latents", out / "000000.npz", "--out", tmp_path / "again.png"))
    assert (tmp_path / "again.png").read_bytes() == (out / "000000-projected.png").read_bytes()
    with Image.open(out / "000000.png") as pair, Image.open(out / "000000-original.png") as one:
        assert pair.size[0] > 2 * one.size[0] - 8        # original | reconstruction, side by side


def test_any_family_and_any_picture(tmp_path, tmp_path_factory):
    run = trained("gan", tmp_path_factory)
    rgb = tmp_path / "colour photo.jpg"                  # RGB, another size: converted and resized
    Image.fromarray(np.full((40, 30, 3), (200, 30, 30), np.uint8), "RGB").save(rgb)
    out = tmp_path / "p"
    ok(invoke("project", rgb, run, "--steps", 20, "--starts", 2, "--out", out))
    got = json.loads((out / "colour_photo.json").read_text())
    assert got["codes"] == {} and got["init"] == "random" and got["mse"] >= 0
    with np.load(out / "colour_photo.npz", allow_pickle=False) as f:
        assert f.files == ["z"] and f["z"].shape[0] == 1


def test_bad_inputs_are_one_line(tiny_run, own_images, tmp_path):
    junk = tmp_path / "junk.png"
    junk.write_bytes(b"not a picture at all")
    one_line_error(invoke("project", junk, tiny_run, *FAST, "--out", tmp_path / "a"), "junk.png")
    one_line_error(invoke("project", tmp_path / "missing.png", tiny_run), "missing.png")
    one_line_error(invoke("project", own_images / "000000.png", tiny_run, "--starts", 0), "--starts")
    one_line_error(invoke("project", own_images / "000000.png", tiny_run, "--lr", "nan"), "--lr")
    one_line_error(invoke("project", tiny_run), "IMAGE")
    taken = tmp_path / "taken"
    taken.mkdir()
    (taken / "x").write_text("x")
    one_line_error(invoke("project", own_images / "000000.png", tiny_run, "--out", taken),
                   "--overwrite")
