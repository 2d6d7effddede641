import json
import os
import time
from pathlib import Path

import pytest
import torch
from PIL import Image
from safetensors import safe_open

from gancli.classifier import (Classifier, balanced_accuracy, class_recalls, class_weights,
                               evaluate, evaluate_classes, extract_features, load_or_train,
                               predict, train_classifier)
from gancli.data import EMOJI_CATEGORIES, ImageData, load_images
from gancli.data.emoji import held_out
from gancli.errors import GancliError
from gancli.files import write_safetensors
from gancli.recipes import DataConfig

DIGITS = DataConfig(source="digits", image_size=16, channels=1, num_classes=10)
# 4 epochs of the 1,500 training digits in batches of 64 (92 steps, a few seconds). Measured test
# accuracy 0.946-0.973 over seeds and thread counts; 0.9 leaves room for BLAS differences.
QUICK_EPOCHS, QUICK_BATCH = 4.0, 64
DIGITS_MIN_ACC = 0.9
# The cache tests need a trained file, not a good one: 256 images, 2 steps.
TINY = DataConfig(source="digits", image_size=16, channels=1, num_classes=10, limit=256)

MNIST_RAW = Path(__file__).resolve().parents[2] / "shared/data/MNIST/raw"


@pytest.fixture(scope="module")
def digits() -> tuple[ImageData, ImageData]:
    return load_images(DIGITS, "train"), load_images(DIGITS, "test")


@pytest.fixture(scope="module")
def quick_model(digits) -> Classifier:
    return train_classifier(digits[0], epochs=QUICK_EPOCHS, batch_size=QUICK_BATCH, seed=0)


@pytest.mark.parametrize("size,channels", [(8, 1), (16, 3), (28, 1), (32, 3), (64, 1)])
def test_shapes_for_every_supported_size(size, channels):
    m = Classifier(channels, size, num_classes=7).eval()
    x = torch.rand(2, channels, size, size) * 2 - 1
    assert m(x).shape == (2, 7)
    assert m.features(x).shape == (2, m.feature_dim)
    rebuilt = Classifier.from_arch(json.loads(json.dumps(m.arch())))
    rebuilt.load_state_dict(m.state_dict())
    assert torch.equal(rebuilt.eval()(x), m(x))


def test_rejects_sizes_it_cannot_take():
    with pytest.raises(GancliError):
        Classifier(1, 4, 10)
    with pytest.raises(GancliError):
        Classifier(2, 16, 10)


def test_digits_accuracy(digits, quick_model):
    train, test = digits
    assert train.images.shape[1:] == (1, 16, 16) and len(test) == 297
    acc = evaluate(quick_model, test)
    assert acc >= DIGITS_MIN_ACC, acc


def test_predict_and_features(digits, quick_model):
    _, test = digits
    pred = predict(quick_model, test.images, "cpu", batch_size=100)
    assert pred.dtype == torch.int64 and pred.shape == (len(test),)
    feats = extract_features(quick_model, test.images, "cpu", batch_size=100)
    assert feats.shape == (len(test), quick_model.feature_dim) and feats.dtype == torch.float32
    # Batch size must not change results (eval-mode BatchNorm, no dropout).
    assert torch.allclose(feats, extract_features(quick_model, test.images, "cpu"), atol=1e-5)


def test_training_is_deterministic_for_a_seed(digits):
    small = ImageData(digits[0].images[:256], digits[0].labels[:256], 10, "digits-small")
    a = train_classifier(small, epochs=2, batch_size=64, seed=3)
    b = train_classifier(small, epochs=2, batch_size=64, seed=3)
    for (k, va), vb in zip(a.state_dict().items(), b.state_dict().values()):
        assert torch.equal(va, vb), k


def test_unlabelled_data_is_a_user_error():
    x = torch.zeros(64, 1, 16, 16, dtype=torch.uint8)
    with pytest.raises(GancliError, match="no labels"):
        train_classifier(ImageData(x, None, 0, "blank"), epochs=1)


def test_load_or_train_rejects_unlabelled_sources(monkeypatch, tmp_path):
    from gancli import data as data_mod

    monkeypatch.setenv("GANCLI_CACHE", str(tmp_path))
    monkeypatch.setitem(data_mod.LOADERS, "blank", lambda cfg, split: ImageData(
        torch.zeros(32, 1, 16, 16, dtype=torch.uint8), None, 0, f"blank-{split}"))
    with pytest.raises(GancliError, match="no labels"):
        load_or_train(DataConfig(source="blank", image_size=16, channels=1), epochs=1)


def test_load_or_train_caches(monkeypatch, tmp_path):
    monkeypatch.setenv("GANCLI_CACHE", str(tmp_path))
    model, info = load_or_train(TINY, epochs=1)
    path = Path(info["path"])
    assert info["cached"] is False and path.is_file()
    assert path.parent == tmp_path / "classifiers"
    assert path.name.startswith("digits-train-16px1c-first256-")
    assert info["train_name"] == "digits-train-16px1c-first256"
    assert info["test_name"] == "digits-test-16px1c-first256"
    assert 0.0 <= info["accuracy"] <= 1.0
    with safe_open(str(path), framework="pt") as f:
        meta = {k: json.loads(v) for k, v in f.metadata().items()}
    assert meta["arch"] == model.arch() and meta["n_train"] == 256
    assert meta["accuracy"] == pytest.approx(info["accuracy"]) and "gancli_version" in meta
    assert not [p for p in path.parent.iterdir() if p.name.startswith(".")]  # no temp leftovers

    again, info2 = load_or_train(TINY, epochs=1)
    assert info2["cached"] is True and info2["path"] == info["path"]
    assert info2["accuracy"] == pytest.approx(info["accuracy"])
    test = load_images(TINY, "test")
    assert torch.equal(predict(again, test.images), predict(model, test.images))
    assert torch.allclose(extract_features(again, test.images), extract_features(model, test.images))


@pytest.mark.parametrize("damage", ["garbage", "truncated", "foreign", "bitflip"])
def test_bad_cache_file_is_retrained(monkeypatch, tmp_path, damage):
    monkeypatch.setenv("GANCLI_CACHE", str(tmp_path))
    _, info = load_or_train(TINY, epochs=1)
    path = Path(info["path"])
    if damage == "garbage":
        path.write_bytes(b"not a safetensors file")
    elif damage == "truncated":
        path.write_bytes(path.read_bytes()[:-100])
    elif damage == "bitflip":  # one byte of the last weight: only the checksum sees it
        raw = bytearray(path.read_bytes())
        raw[-3] ^= 0x40
        path.write_bytes(bytes(raw))
    else:  # a sound safetensors file that is not this classifier
        write_safetensors(path, {"w": torch.zeros(3)}, {"arch": json.dumps({"arch": "other"})})
    messages: list[str] = []
    _, info2 = load_or_train(TINY, epochs=1, progress=messages.append)
    assert info2["cached"] is False and any("retraining" in m for m in messages)
    _, info3 = load_or_train(TINY, epochs=1)  # overwritten with a sound file
    assert info3["cached"] is True


def test_balanced_accuracy_is_the_mean_recall():
    labels = torch.tensor([0, 0, 0, 0, 0, 0, 0, 0, 1, 2])
    always_0 = torch.zeros(10, dtype=torch.int64)
    recalls = class_recalls(always_0, labels, 4)
    assert recalls == [1.0, 0.0, 0.0, None]             # class 3 has no images: left out
    assert balanced_accuracy(recalls) == pytest.approx(1 / 3)   # plain accuracy: 0.8
    assert balanced_accuracy(class_recalls(labels, labels, 4)) == 1.0
    assert balanced_accuracy([None, None]) == 0.0


def test_class_weights_only_for_a_skewed_set():
    assert class_weights(torch.arange(30) % 3, 3) is None                # balanced: as before
    assert class_weights(torch.tensor([0, 0, 0, 1, 1, 2, 2]), 3) is None  # 1.5:1, within 2x
    skewed = torch.tensor([0] * 12 + [1] * 3 + [2] * 3)
    w = class_weights(skewed, 4)
    totals = torch.bincount(skewed, minlength=4).float() * w
    assert torch.allclose(totals[:3], torch.full((3,), 6.0)) and w[3] == 0   # equal totals


# Nine colours, one per emoji group: a fake emoji package the classifier can learn in seconds.
COLOURS = [(230, 30, 30), (30, 160, 30), (30, 30, 230), (230, 200, 0), (0, 200, 220),
           (200, 0, 200), (120, 60, 0), (0, 0, 0), (150, 150, 150)]


def colour_emoji(root: Path, train_per_group: int = 6, test_per_group: int = 2,
                 big_group: int = 24) -> Path:
    """emoji.json and 8 px RGBA PNGs (a coloured square on transparency, a little jitter) for
    every group, People & Body with `big_group` training images (skewed, like the real set);
    which emoji are test is the source's own hash split."""
    pkg = root / "emoji-datasource-twitter"
    img = pkg / "img" / "twitter" / "64"
    img.mkdir(parents=True)
    codes = {s: [f"1F{i:03X}" for i in range(4096) if held_out(f"1F{i:03X}") == (s == "test")]
             for s in ("train", "test")}
    entries, rng = [], torch.Generator().manual_seed(0)
    used = {"train": 0, "test": 0}
    for g, group in enumerate(EMOJI_CATEGORIES):
        big = group == "People & Body"
        for split, n in (("train", big_group if big else train_per_group),
                         ("test", test_per_group)):
            mine, used[split] = codes[split][used[split]: used[split] + n], used[split] + n
            for code in mine:
                entries.append({"unified": code, "image": f"{code.lower()}.png",
                                "category": group})
                jitter = torch.randint(-20, 21, (3,), generator=rng).tolist()
                colour = tuple(max(0, min(255, c + j)) for c, j in zip(COLOURS[g], jitter))
                im = Image.new("RGBA", (8, 8), (0, 0, 0, 0))
                im.paste(colour + (255,), (1, 1, 7, 7))
                im.save(img / f"{code.lower()}.png")
    (pkg / "emoji.json").write_text(json.dumps(entries))
    return pkg


def test_colour_emoji_classifier_reports_balanced_accuracy(monkeypatch, tmp_path):
    monkeypatch.setenv("GANCLI_CACHE", str(tmp_path / "cache"))
    cfg = DataConfig(source="emoji", path=str(colour_emoji(tmp_path)), image_size=16,
                     channels=3, num_classes=9)
    model, info = load_or_train(cfg, epochs=30)
    assert (model.channels, model.image_size, model.num_classes) == (3, 16, 9)
    assert info["n_train"] == 8 * 6 + 24 and info["n_test"] == 18
    assert info["class_weighted"] is True                  # 24 against 6: the loss is weighted
    assert info["class_names"] == EMOJI_CATEGORIES
    assert info["test_class_counts"] == [2] * 9 and len(info["recall_per_class"]) == 9
    assert 0.0 <= info["balanced_accuracy"] <= 1.0 and 0.0 <= info["accuracy"] <= 1.0
    # balanced test split: the two figures agree; the colours are easy
    assert info["balanced_accuracy"] == pytest.approx(info["accuracy"])
    assert info["accuracy"] >= 0.8, info
    test = load_images(cfg, "test")
    assert evaluate_classes(model, test)["balanced_accuracy"] == pytest.approx(
        info["balanced_accuracy"])
    again, info2 = load_or_train(cfg, epochs=30)
    assert info2["cached"] is True
    assert {k: info2[k] for k in ("accuracy", "balanced_accuracy", "recall_per_class")} == \
        {k: info[k] for k in ("accuracy", "balanced_accuracy", "recall_per_class")}


def test_a_cache_file_from_before_balanced_accuracy_is_scored_not_retrained(monkeypatch,
                                                                           tmp_path):
    monkeypatch.setenv("GANCLI_CACHE", str(tmp_path))
    _, info = load_or_train(TINY, epochs=1)
    path = Path(info["path"])
    with safe_open(str(path), framework="pt") as f:
        meta = {k: v for k, v in f.metadata().items()
                if k not in ("balanced_accuracy", "recall_per_class", "test_class_counts")}
        tensors = {k: f.get_tensor(k) for k in f.keys()}
    write_safetensors(path, tensors, meta)
    _, old = load_or_train(TINY, epochs=1)
    assert old["cached"] is True
    assert old["balanced_accuracy"] == pytest.approx(info["balanced_accuracy"])
    assert old["recall_per_class"] == info["recall_per_class"]


@pytest.mark.skipif(not (MNIST_RAW.is_dir() and os.environ.get("GANCLI_SLOW") == "1"),
                    reason="needs ../shared/data/MNIST/raw and GANCLI_SLOW=1")
def test_mnist_accuracy(monkeypatch, tmp_path):
    monkeypatch.setenv("GANCLI_CACHE", str(tmp_path))
    cfg = DataConfig(source="mnist", image_size=28, channels=1, num_classes=10,
                     path=str(MNIST_RAW))
    t0 = time.time()
    _, info = load_or_train(cfg)
    print(f"MNIST classifier: test accuracy {info['accuracy']:.4f} in {time.time() - t0:.0f}s")
    assert info["accuracy"] >= 0.985
