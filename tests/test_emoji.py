"""The emoji source: a tiny fake package built here (always), and the real npm packages in
../shared/data/emoji (skipped when absent)."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from gancli.data import (EMOJI_CATEGORIES, FolderImages, ImageData, index_emoji, load_images,
                         open_dataset)
from gancli.data.emoji import held_out
from gancli.errors import GancliError
from gancli.recipes import DataConfig, resolve

from conftest import REPO, invoke

EMOJI = REPO.parent / "shared" / "data" / "emoji"


def emoji_cfg(path, vendor=None, **kw) -> DataConfig:
    kw = {"image_size": 64, "channels": 3, "num_classes": 9, **kw}
    return DataConfig(source="emoji", path=str(path), vendor=vendor, **kw)


# ----------------------------------------------------------------------------- a fake package


def _png(path: Path, colour) -> None:
    im = Image.new("RGBA", (8, 8), (0, 0, 0, 0))
    im.paste(colour + (255,), (2, 2, 6, 6))                 # an opaque square on transparency
    im.save(path)


def _codes(split: str, n: int) -> list[str]:
    """n code points whose base emoji fall in `split`."""
    found = [f"1F{i:03X}" for i in range(4096) if held_out(f"1F{i:03X}") == (split == "test")]
    return found[:n]


def fake_package(root: Path, vendor: str, missing: tuple[str, ...] = ()) -> Path:
    """emoji.json with 3 train emoji (one with 2 skin-tone variants), 1 test emoji, a Component
    and an entry with no drawing for this vendor; PNGs for all but `missing`."""
    pkg = root / f"emoji-datasource-{vendor}"
    img = pkg / "img" / vendor / "64"
    img.mkdir(parents=True)
    a, b, c = _codes("train", 3)
    (t,) = _codes("test", 1)
    entries = [
        {"unified": a, "image": f"{a.lower()}.png", "category": "Smileys & Emotion",
         "skin_variations": {"1F3FC": {"image": f"{a.lower()}-1f3fc.png"},
                             "1F3FB": {"image": f"{a.lower()}-1f3fb.png"}}},
        {"unified": b, "image": f"{b.lower()}.png", "category": "Flags"},
        {"unified": c, "image": f"{c.lower()}.png", "category": "Activities"},
        {"unified": t, "image": f"{t.lower()}.png", "category": "Symbols"},
        {"unified": "1F3FB", "image": "1f3fb.png", "category": "Component"},
        {"unified": "1F000", "image": "1f000.png", "category": "Objects",
         f"has_img_{vendor}": False},
        {"unified": "1F001", "image": "../escape.png", "category": "Objects"},
        "not an entry",
    ]
    (pkg / "emoji.json").write_text(json.dumps(entries))
    (pkg / "package.json").write_text(json.dumps({"name": f"emoji-datasource-{vendor}",
                                                  "version": "16.0.0"}))
    names = [f"{x.lower()}.png" for x in (a, b, c, t)] + \
        [f"{a.lower()}-1f3fc.png", f"{a.lower()}-1f3fb.png", "1f3fb.png"]
    colour = (255, 0, 0) if vendor == "twitter" else (0, 0, 255)
    for name in names:
        if name not in missing:
            _png(img / name, colour)
    return pkg


def test_fake_package_counts_labels_and_notes(tmp_path):
    pkg = fake_package(tmp_path, "twitter")
    d = load_images(emoji_cfg(pkg))
    assert isinstance(d, ImageData) and d.images.shape == (5, 3, 64, 64)
    assert d.class_names == EMOJI_CATEGORIES and d.num_classes == 9
    lab = {EMOJI_CATEGORIES[i] for i in d.labels.tolist()}
    assert lab == {"Smileys & Emotion", "Flags", "Activities"}
    # Skin-tone variants take their base emoji's category: 3 Smileys.
    assert d.labels.tolist().count(EMOJI_CATEGORIES.index("Smileys & Emotion")) == 3
    assert (d.images[:, :, 0, 0] == 255).all()               # transparency on white
    assert (d.images[:, 0, 32, 32] == 255).all() and (d.images[:, 1:, 32, 32] == 0).all()
    notes = " | ".join(d.notes)
    assert "1 twitter 'Component' images" in notes and "no twitter drawing" in notes
    assert "name no emoji category or plain image file" in notes     # ../escape.png, a string
    test = load_images(emoji_cfg(pkg), "test")
    assert len(test) == 1 and EMOJI_CATEGORIES[int(test.labels[0])] == "Symbols"
    assert d.name.startswith("emoji-twitter-v16.0.0-") and d.name.endswith("-train-64px3c")


def test_fake_missing_files_both_vendors_and_stream(tmp_path):
    fake_package(tmp_path, "twitter")
    a = _codes("train", 1)[0].lower()
    fake_package(tmp_path, "google", missing=(f"{a}-1f3fb.png",))
    g = load_images(emoji_cfg(tmp_path, "google", image_size=32))
    assert g.images.shape == (4, 3, 32, 32) and (g.images[:, 2, 16, 16] == 255).all()
    assert any("1 images listed in" in n and "missing" in n for n in g.notes)
    both = index_emoji(emoji_cfg(tmp_path, "both"), "train")
    assert len(both) == 9 and both.name.startswith("emoji-both-")
    # Each emoji's drawings side by side, twitter first: --limit keeps both styles.
    assert [Path(f).parts[0] for f in both.files[:2]] == ["emoji-datasource-twitter",
                                                        "emoji-datasource-google"]
    lazy = open_dataset(emoji_cfg(tmp_path, "both", stream="stream"))
    assert isinstance(lazy, FolderImages) and len(lazy) == 9
    mem = open_dataset(emoji_cfg(tmp_path, "both"))
    assert torch.equal(lazy.decode(3), mem.images[3])
    assert torch.equal(lazy.labels, mem.labels)


def test_fake_package_errors_are_one_line(tmp_path, monkeypatch):
    monkeypatch.delenv("GANCLI_EMOJI_DIR", raising=False)
    cases = [(DataConfig(source="emoji", image_size=64, channels=3), "npm pack emoji-datasource")]
    pkg = fake_package(tmp_path, "twitter")
    cases += [(emoji_cfg(pkg, "google"), "no google images"),
              (emoji_cfg(tmp_path / "empty"), "data directory not found"),
              (emoji_cfg(pkg, num_classes=4), "expects 4 classes but the emoji source has 9")]
    (tmp_path / "nothing").mkdir()
    cases.append((emoji_cfg(tmp_path / "nothing"), "holds no emoji package"))
    for c, words in cases:
        with pytest.raises(GancliError, match=words) as e:
            load_images(c)
        assert "\n" not in str(e.value)
    (pkg / "emoji.json").write_text("{broken")
    with pytest.raises(GancliError, match="cannot read .*emoji.json"):
        load_images(emoji_cfg(pkg))
    monkeypatch.setenv("GANCLI_EMOJI_DIR", str(tmp_path / "nothing"))
    with pytest.raises(GancliError, match="holds no emoji package"):
        load_images(DataConfig(source="emoji", image_size=64, channels=3))


def test_split_is_by_base_emoji_and_about_a_tenth():
    codes = [f"1F{i:03X}" for i in range(2000)]
    share = sum(map(held_out, codes)) / len(codes)
    assert 0.08 < share < 0.12
    assert held_out("1f385") == held_out("1F385")


def test_recipe_resolves():
    cfg = resolve("dcgan", "emoji")
    d = cfg.data
    assert (d.source, d.image_size, d.channels, d.num_classes) == ("emoji", 64, 3, 9)
    assert (d.background, d.vendor, d.env) == ("white", "twitter", "GANCLI_EMOJI_DIR")
    assert cfg.train.batch_size == 64 and cfg.train.lr_g == 2e-4 and cfg.train.beta1 == 0.5
    assert cfg.train.ema
    assert resolve("cgan", "emoji").model_args["channels"] == 32
    small = resolve("dcgan", "emoji", data_overrides={"image_size": 32, "vendor": "both"})
    assert small.data.image_size == 32 and small.data.vendor == "both"


def test_train_without_data_says_how_to_get_it(monkeypatch):
    monkeypatch.delenv("GANCLI_EMOJI_DIR", raising=False)
    r = invoke("train", "dcgan", "--recipe", "emoji", "--steps", "1", "--no-progress")
    assert r.exit_code == 2 and "Traceback" not in r.output
    assert "npm pack emoji-datasource-twitter@16.0.0" in r.stderr and "tar xzf" in r.stderr
    assert len(r.stderr.strip().splitlines()) == 1


# ----------------------------------------------------------------------------- the real packages


@pytest.fixture
def emoji_dir() -> Path:
    if not (EMOJI / "emoji-datasource-twitter" / "emoji.json").is_file():
        pytest.skip("real emoji packages not present (../shared/data/emoji)")
    return EMOJI


def test_real_emoji_counts_labels_and_white_backgrounds(emoji_dir):
    train = load_images(emoji_cfg(emoji_dir / "emoji-datasource-twitter"))
    test = index_emoji(emoji_cfg(emoji_dir), "test")
    assert len(train) + len(test) == 3786 - 5                 # all but the 5 Components
    assert 0.08 < len(test) / (len(train) + len(test)) < 0.12
    assert train.labels.min() >= 0 and train.labels.max() < 9
    assert set(train.labels.tolist()) == set(range(9))        # every group in train
    assert not train.skipped and len(train.notes) == 1       # the Component note only
    # Corners that are transparent in the file are white once decoded. The files are RGBA,
    # palette with a transparent entry (177 of Twitter's) and grey + alpha (62 of Google's).
    index = index_emoji(emoji_cfg(emoji_dir), "train")
    alpha = [np.asarray(Image.open(index.root / f).convert("RGBA"))[0, 0, 3]
             for f in index.files]
    clear = [i for i, a in enumerate(alpha) if a == 0]
    assert len(clear) > 0.9 * len(index)
    assert (train.images[clear, :, 0, 0] == 255).all()


def test_real_emoji_vendors_and_split(emoji_dir):
    tw = {s: index_emoji(emoji_cfg(emoji_dir, "twitter"), s) for s in ("train", "test")}
    go = {s: index_emoji(emoji_cfg(emoji_dir, "google"), s) for s in ("train", "test")}
    both = {s: index_emoji(emoji_cfg(emoji_dir, "both"), s) for s in ("train", "test")}
    for s in ("train", "test"):
        assert len(both[s]) == 2 * len(tw[s]) == 2 * len(go[s])
        assert sorted(both[s].labels) == sorted(tw[s].labels + go[s].labels)
    # Disjoint by base emoji: each file's base emoji (its emoji.json entry) is on one side only.
    entries = json.loads((emoji_dir / "emoji-datasource-twitter" / "emoji.json").read_text())
    base = {}
    for e in entries:
        for s in [e, *(e.get("skin_variations") or {}).values()]:
            base[s["image"]] = e["unified"]
    for v in (tw, go, both):
        sides = [{base[Path(f).name] for f in v[s].files} for s in ("train", "test")]
        assert sides[0] and sides[1] and not sides[0] & sides[1]
    assert [Path(f).name for f in tw["test"].files] == [Path(f).name for f in go["test"].files]
    # Google's grey + alpha and palette files come out white where they are transparent.
    from gancli.data import decode_file
    odd = [f for f in go["train"].files if Image.open(go["train"].root / f).mode in ("LA", "P")]
    assert len(odd) > 20
    for f in odd:
        a = np.asarray(Image.open(go["train"].root / f).convert("RGBA"))[..., 3]
        x = decode_file(go["train"].root / f, 64, 3)
        assert (x[:, torch.from_numpy(a == 0)] == 255).all()


def test_real_emoji_limit_is_a_spread_of_every_group(emoji_dir):
    # The listing is in a hashed order of base emoji, so --limit 1000 holds every group in
    # about its share of the whole (code point order would give 258 flags and no smileys),
    # and each base emoji's skin-tone variants follow it.
    from collections import Counter
    index = index_emoji(emoji_cfg(emoji_dir / "emoji-datasource-twitter"), "train")
    full, first = Counter(index.labels), Counter(index.labels[:1000])
    for group, count in full.items():
        share = count / len(index)
        assert abs(first[group] / 1000 - share) < max(0.3 * share, 0.01), EMOJI_CATEGORIES[group]
    names = [Path(f).stem for f in index.files]
    tone = [i for i, n in enumerate(names) if "-1f3fb" in n and n.count("-") == 1]
    near = lambda i: [n.split("-")[0] for n in names[i - 1:i + 6]]  # noqa: E731
    assert tone and all(near(i).count(names[i].split("-")[0]) >= 6 for i in tone)
