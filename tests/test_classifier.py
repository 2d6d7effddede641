import json
import os
import time
from pathlib import Path

import pytest
import torch
from safetensors import safe_open

from gancli.classifier import (Classifier, evaluate, extract_features, load_or_train, predict,
                               train_classifier)
from gancli.data import ImageData, load_images
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
