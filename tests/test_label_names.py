"""Labels by name: `sample --label dog` (and --code/--fix label=dog) means the value of class
"dog", from the class names a generator file records (or, for files written before they were
recorded, the names of a source whose classes are fixed). A tiny cGAN on a 16 px colour image
folder with classes cat, dog, dove; 2 steps."""

from __future__ import annotations

import json
import shutil
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from conftest import invoke
from gancli.checkpoint import load_generator, read_class_names, read_tensors
from gancli.data import EMOJI_CATEGORIES, fixed_class_names
from gancli.errors import GancliError
from gancli.files import write_safetensors
from gancli.latent import Code, LatentSpec
from gancli.recipes import resolve

CLASSES = ("cat", "dog", "dove")
RECIPE = """
description = "three colour classes in a folder"
[data]
source = "imagefolder"
image_size = 16
channels = 3
num_classes = 3
[train]
batch_size = 6
steps = 2
log_every = 1
sample_every = 2
checkpoint_every = 2
[models.cgan]
noise_dim = 8
channels = 8
"""


@pytest.fixture(scope="module")
def named_run(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("named")
    for k, name in enumerate(CLASSES):
        (root / "pets" / name).mkdir(parents=True)
        for i in range(4):
            Image.new("RGB", (16, 16), (80 * k, 40 * i, 200 - 60 * k)).save(
                root / "pets" / name / f"{i}.png")
    (root / "pets.toml").write_text(RECIPE)
    run = root / "run"
    r = invoke("train", "cgan", "--recipe", root / "pets.toml", "--data", root / "pets",
               "--out", run, "--no-progress")
    assert r.exit_code == 0, r.output
    return run


def _images(run: Path, out: Path, *args) -> np.ndarray:
    r = invoke("sample", run, "--n", 5, "--seed", 3, *args, "--out", out)
    assert r.exit_code == 0, r.output
    return np.load(out)["images"]


def _one_line_error(r, *parts: str) -> None:
    assert r.exit_code == 2, r.output
    assert "Traceback" not in r.output and len(r.stderr.strip().splitlines()) == 1, r.stderr
    for p in parts:
        assert p in r.stderr, r.stderr


def test_the_checkpoint_records_the_class_names(named_run):
    g = load_generator(named_run)
    assert g.class_names == CLASSES and g.spec.label_code.value_names == CLASSES
    meta, _ = read_tensors(g.path)
    assert json.loads(meta["class_names"]) == list(CLASSES)


def test_a_name_is_its_number_bit_for_bit(named_run, tmp_path):
    by_number = _images(named_run, tmp_path / "n.npz", "--label", 1)
    for i, text in enumerate(("dog", "DOG", " Dog ")):
        assert np.array_equal(_images(named_run, tmp_path / f"a{i}.npz", "--label", text),
                              by_number), text
    assert np.array_equal(_images(named_run, tmp_path / "c.npz", "--code", "label=dog"),
                          by_number)
    # a prefix of only one name will do; a number always means the value itself
    assert np.array_equal(_images(named_run, tmp_path / "p.npz", "--label", "ca"),
                          _images(named_run, tmp_path / "z.npz", "--label", "0"))
    assert (np.load(tmp_path / "p.npz")["label"] == 0).all()


def test_fix_label_by_name_in_traverse_and_interpolate(named_run, tmp_path):
    for i, value in enumerate(("2", "dove")):
        r = invoke("interpolate", named_run, "--seeds", "1,2", "--steps", 3, "--fix",
                   f"label={value}", "--out", tmp_path / f"i{i}.npz")
        assert r.exit_code == 0, r.output
    a, b = np.load(tmp_path / "i0.npz"), np.load(tmp_path / "i1.npz")
    assert np.array_equal(a["images"], b["images"]) and (b["label"] == 2).all()
    r = invoke("traverse", named_run, "--code", "z0", "--steps", 3, "--rows", 1,
               "--fix", "label=Cat", "--out", tmp_path / "t.png")
    assert r.exit_code == 0, r.output


def test_unknown_and_ambiguous_names_are_one_line(named_run, tmp_path):
    r = invoke("sample", named_run, "--label", "wolf", "--out", tmp_path / "w.png")
    _one_line_error(r, "--label wolf", "unknown class 'wolf'", "0 cat, 1 dog, 2 dove")
    r = invoke("sample", named_run, "--label", "do", "--out", tmp_path / "d.png")
    _one_line_error(r, "starts several class names (dog, dove)")
    r = invoke("sample", named_run, "--label", "7", "--out", tmp_path / "7.png")
    _one_line_error(r, "integers 0..2", "0 cat, 1 dog, 2 dove")
    r = invoke("interpolate", named_run, "--fix", "label=wolf", "--out", tmp_path / "i.png")
    _one_line_error(r, "--fix label=wolf", "0 cat, 1 dog, 2 dove")
    for extra in (("--label", "dog"), ("--code", "label=1")):   # the rows' names would lie
        r = invoke("sample", named_run, "--per-class", *extra, "--out", tmp_path / "pc.png")
        _one_line_error(r, "--per-class draws every class")
    assert not list(tmp_path.iterdir())   # nothing written


def test_per_class_grid_names_its_rows(named_run, tmp_path):
    r = invoke("sample", named_run, "--per-class", "--n", 6, "--out", tmp_path / "pc.png")
    assert r.exit_code == 0, r.output
    assert "one row per class: 0 cat, 1 dog, 2 dove" in r.stdout
    im = np.asarray(Image.open(tmp_path / "pc.png").convert("RGB"))
    side = 16 * 4 + 2                      # 16 px shown 4x, plus the padding
    assert im.shape[0] == 3 * side + 2 and im.shape[1] > 2 * side + 2   # a margin at the left
    margin = im[:, : im.shape[1] - (2 * side + 2)]
    assert (margin < 128).any()           # something is written in it
    # with --nrow the layout is the caller's: no margin
    r = invoke("sample", named_run, "--per-class", "--n", 6, "--nrow", 2,
               "--out", tmp_path / "plain.png")
    assert r.exit_code == 0 and Image.open(tmp_path / "plain.png").size == (2 * side + 2,
                                                                              3 * side + 2)


def _strip_names(run: Path, dest: Path) -> Path:
    """The run as an older gancli wrote it: generator files without class_names."""
    shutil.copytree(run, dest)
    for f in dest.glob("checkpoints/*/generator*.safetensors"):
        meta, tensors = read_tensors(f)
        meta = {k: v for k, v in meta.items() if k != "class_names"}   # re-checksummed
        write_safetensors(f, tensors, meta)
    return dest


def test_older_checkpoints_load_and_take_numbers(named_run, tmp_path):
    old = _strip_names(named_run, tmp_path / "old")
    g = load_generator(old)
    assert g.class_names is None and g.spec.label_code.value_names == ()
    assert np.array_equal(_images(old, tmp_path / "o.npz", "--label", 1),
                          _images(named_run, tmp_path / "n.npz", "--label", 1))
    r = invoke("sample", old, "--label", "dog", "--out", tmp_path / "d.png")
    _one_line_error(r, "records no class names", "label takes integers 0..2")


def test_class_names_from_metadata_or_a_fixed_source():
    emoji = resolve("cgan", "emoji")
    assert read_class_names({}, emoji) == tuple(EMOJI_CATEGORIES)     # emoji's groups are fixed
    assert read_class_names({"class_names": "not json"}, emoji) == tuple(EMOJI_CATEGORIES)
    assert fixed_class_names("imagefolder") is None and fixed_class_names("emoji")[2] == "Flags"
    folder = replace(emoji, data=replace(emoji.data, source="imagefolder", num_classes=3))
    assert read_class_names({}, folder) is None
    assert read_class_names({"class_names": json.dumps(["a", "b"])}, folder) is None  # 2 != 3
    # names go into one-line errors: control characters cannot break the line
    assert read_class_names({"class_names": json.dumps(["a\nb", "c", "d"])}, folder) == \
        ("a?b", "c", "d")


def test_value_of_on_the_emoji_groups():
    spec = LatentSpec(4, codes=(Code("label", "categorical", size=9, role="label"),))
    spec = spec.with_class_names(EMOJI_CATEGORIES)
    lc = spec.label_code
    assert spec.parse_value("label", "Smileys & Emotion") == 6
    assert spec.parse_value("label", "flags") == 2 and spec.parse_value("label", "peop") == 5
    assert spec.parse_value("label", "8") == 8
    with pytest.raises(GancliError, match=r"several class names \(Smileys & Emotion, Symbols\)"):
        lc.value_of("s", "--label s")
    with pytest.raises(GancliError, match="0 Activities, 1 Animals & Nature, 2 Flags"):
        spec.parse_value("label", "Emotions", what="--label Emotions")
    # digits' names are their numbers: nothing to add
    digits = LatentSpec(4, codes=(Code("label", "categorical", size=10, role="label"),))
    assert digits.with_class_names([str(i) for i in range(10)]).label_code.value_names == ()
    assert spec == LatentSpec(4, codes=(Code("label", "categorical", size=9, role="label"),))
    x = spec.fix(spec.sample(2, torch.Generator().manual_seed(0)), "label", 2)
    assert x["label"].tolist() == [2, 2]
