"""`gancli interpolate`: strips from one seed's draw to another's, for every family."""

import numpy as np
import pytest
from PIL import Image

from conftest import invoke
from test_families import FAMILIES, trained


@pytest.fixture(params=FAMILIES)
def family_run(request, tmp_path_factory):
    return request.param, trained(request.param, tmp_path_factory)


@pytest.fixture
def cgan_run(tmp_path_factory):
    return trained("cgan", tmp_path_factory)


def sample_one(run, seed, path):
    r = invoke("sample", run, "--n", 1, "--seed", seed, "--out", path)
    assert r.exit_code == 0, r.output
    return np.load(path)


def strip(run, path, *args):
    r = invoke("interpolate", run, *args, "--out", path)
    assert r.exit_code == 0, r.output
    return np.load(path), r.stdout


@pytest.mark.parametrize("method", ["slerp", "lerp"])
def test_endpoints_are_the_seeds_samples(family_run, method, tmp_path):
    _, run = family_run
    a, b = sample_one(run, 3, tmp_path / "a.npz"), sample_one(run, 7, tmp_path / "b.npz")
    # a conditional model walks its label too, so the end is seed 7's draw in full
    walk = ["--code", "label"] if "label" in a.files else []
    s, out = strip(run, tmp_path / "s.npz", "--seeds", "3,7", "--steps", 5, "--method", method,
                   *walk)
    assert s["images"].shape[0] == 5 and "1 row x 5 steps" in out
    assert np.array_equal(s["z"][0], a["z"][0]) and np.array_equal(s["z"][-1], b["z"][0])
    assert np.array_equal(s["images"][0], a["images"][0])
    assert np.array_equal(s["images"][-1], b["images"][0])
    # the walk goes somewhere in between
    assert not np.allclose(s["z"][2], a["z"][0]) and not np.allclose(s["z"][2], b["z"][0])


def test_rows_and_several_pairs(tmp_path, tmp_path_factory):
    run = trained("dcgan", tmp_path_factory)
    s, out = strip(run, tmp_path / "rows.npz", "--seeds", "3,7", "--rows", 3, "--steps", 4)
    assert s["images"].shape[0] == 12 and "3->7, 4->8, 5->9" in out
    four, eight = sample_one(run, 4, tmp_path / "4.npz"), sample_one(run, 8, tmp_path / "8.npz")
    assert np.array_equal(s["images"][4], four["images"][0])      # row 1 starts at seed 4
    assert np.array_equal(s["images"][7], eight["images"][0])     # ... and ends at seed 8
    p, out = strip(run, tmp_path / "pairs.npz", "--seeds", "3,7", "--seeds", "1,2", "--steps", 3)
    assert p["images"].shape[0] == 6 and "3->7, 1->2" in out
    assert np.array_equal(p["images"][0], s["images"][0])         # row 0 is 3 -> 7 again
    one = sample_one(run, 1, tmp_path / "1.npz")
    assert np.array_equal(p["images"][3], one["images"][0])       # row 1 starts at seed 1


def test_slerp_and_lerp_walk_differently(tmp_path, tmp_path_factory):
    run = trained("gan", tmp_path_factory)   # normal noise: lerp dips in norm, slerp does not
    s, _ = strip(run, tmp_path / "s.npz", "--seeds", "3,7", "--steps", 5, "--method", "slerp")
    l, _ = strip(run, tmp_path / "l.npz", "--seeds", "3,7", "--steps", 5, "--method", "lerp")
    assert np.linalg.norm(l["z"][2]) < np.linalg.norm(s["z"][2])


def test_cgan_label_held_unless_walked(cgan_run, tmp_path):
    a, b = sample_one(cgan_run, 3, tmp_path / "a.npz"), sample_one(cgan_run, 7, tmp_path / "b.npz")
    held, _ = strip(cgan_run, tmp_path / "held.npz", "--seeds", "3,7", "--steps", 4)
    assert (held["label"] == a["label"][0]).all()              # codes stay at the start's value
    walked, _ = strip(cgan_run, tmp_path / "walk.npz", "--seeds", "3,7", "--steps", 5,
                      "--code", "label")
    soft = walked["label"]
    assert soft.shape == (5, 10) and np.allclose(soft.sum(1), 1)
    assert soft[0].argmax() == a["label"][0] and soft[-1].argmax() == b["label"][0]
    fixed, _ = strip(cgan_run, tmp_path / "fix.npz", "--seeds", "3,7", "--steps", 4,
                     "--fix", "label=2")
    assert (fixed["label"] == 2).all()
    r = invoke("sample", cgan_run, "--n", 1, "--seed", 3, "--label", 2,
               "--out", tmp_path / "s2.npz")
    assert r.exit_code == 0
    assert np.array_equal(fixed["images"][0], np.load(tmp_path / "s2.npz")["images"][0])


def test_default_output_and_gif(cgan_run):
    r = invoke("interpolate", cgan_run, "--seeds", "1,2", "--steps", 3, "--rows", 2, "--gif",
               "--method", "lerp")
    assert r.exit_code == 0, r.output
    png = cgan_run / "interpolations" / "seed1-seed2-lerp-2rows.png"
    assert png.is_file() and Image.open(png.with_suffix(".gif")).n_frames >= 3
    w, h = Image.open(png).size
    assert w > h  # 3 steps across, 2 rows down


@pytest.mark.parametrize("args,msg", [
    (["--method", "cubic"], "--method must be slerp or lerp"),
    (["--seeds", "3"], "--seeds expects A,B"),
    (["--seeds", "3,x"], "--seeds expects A,B"),
    (["--steps", "1"], "--steps must be at least 2"),
    (["--code", "c9"], "label (categorical, 10 values)"),
    (["--code", "z1"], "the noise always walks"),
    (["--seeds", "1,2", "--seeds", "3,4", "--rows", "2"], "--rows goes with a single --seeds"),
    (["--out", "x.jpg"], "writes a .png or a .npz"),
    (["--fix", "label=11"], "integers 0..9"),
])
def test_errors_are_one_line(cgan_run, args, msg):
    r = invoke("interpolate", cgan_run, *args)
    assert r.exit_code == 2, r.output
    assert msg in r.stderr and len(r.stderr.strip().splitlines()) == 1

