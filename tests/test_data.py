import gzip
import struct

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
import torch

from gancli.data import DeviceBatches, ImageData, load_images, read_idx
from gancli.errors import GancliError
from gancli.recipes import DataConfig

from conftest import invoke


def write_idx(path, arr: np.ndarray, gz: bool) -> None:
    header = bytes([0, 0, 0x08, arr.ndim]) + b"".join(struct.pack(">I", d) for d in arr.shape)
    data = header + arr.astype(np.uint8).tobytes()
    if gz:
        with gzip.open(str(path) + ".gz", "wb") as f:
            f.write(data)
    else:
        path.write_bytes(data)


def fake_mnist(root, gz: bool, n: int = 20):
    rng = np.random.default_rng(0)
    imgs = rng.integers(0, 256, size=(n, 28, 28), dtype=np.uint8)
    labels = rng.integers(0, 10, size=(n,), dtype=np.uint8)
    write_idx(root / "train-images-idx3-ubyte", imgs, gz)
    write_idx(root / "train-labels-idx1-ubyte", labels, gz)
    return imgs, labels


@pytest.mark.parametrize("gz", [True, False])
def test_idx_gzip_and_raw(tmp_path, gz):
    imgs, labels = fake_mnist(tmp_path, gz)
    d = load_images(DataConfig(source="mnist", image_size=28, channels=1, num_classes=10,
                               path=str(tmp_path)), "train")
    assert d.images.dtype == torch.uint8 and d.images.shape == (20, 1, 28, 28)
    assert np.array_equal(d.images[:, 0].numpy(), imgs)
    assert np.array_equal(d.labels.numpy(), labels.astype(np.int64))


def test_env_variable_names_local_copy(tmp_path, monkeypatch):
    fake_mnist(tmp_path, True)
    monkeypatch.setenv("GANCLI_TEST_MNIST", str(tmp_path))
    d = load_images(DataConfig(source="mnist", image_size=32, channels=1, num_classes=10,
                               env="GANCLI_TEST_MNIST"), "train")
    assert d.images.shape == (20, 1, 32, 32)   # resized to the recipe's size


def test_truncated_idx_is_a_clear_error(tmp_path):
    p = tmp_path / "x-idx3-ubyte"
    p.write_bytes(bytes([0, 0, 8, 3]) + struct.pack(">III", 10, 28, 28) + b"\0" * 100)
    with pytest.raises(GancliError, match="truncated"):
        read_idx(p)
    p.write_bytes(b"PK\x03\x04garbage")
    with pytest.raises(GancliError, match="not an IDX file"):
        read_idx(p)


def test_missing_files_and_directory(tmp_path):
    cfg = DataConfig(source="mnist", image_size=28, channels=1, path=str(tmp_path))
    with pytest.raises(GancliError, match="has no train-images-idx3-ubyte"):
        load_images(cfg)
    with pytest.raises(GancliError, match="data directory not found"):
        load_images(DataConfig(source="mnist", image_size=28, channels=1, path=str(tmp_path / "no")))


def test_cli_missing_data_directory(tmp_path):
    r = invoke("train", "infogan", "--recipe", "mnist", "--data", tmp_path / "nope", "--steps", "1")
    assert r.exit_code == 2
    assert "data directory not found" in r.stderr and "Traceback" not in r.output


def test_embedded_digits():
    d = load_images(DataConfig(source="digits", image_size=32, channels=1, num_classes=10))
    assert d.images.shape == (1500, 1, 32, 32) and d.images.dtype == torch.uint8
    assert d.images.max() == 255 and sorted(d.labels.unique().tolist()) == list(range(10))
    t = load_images(DataConfig(source="digits", image_size=32, channels=1, num_classes=10), "test")
    assert len(t) == 297


def test_real_mnist(mnist_raw):
    d = load_images(DataConfig(source="mnist", image_size=28, channels=1, num_classes=10,
                               path=str(mnist_raw)), "test")
    assert d.images.shape == (10000, 1, 28, 28)
    assert torch.bincount(d.labels).min() > 800


def _tiny(n=40):
    imgs = torch.arange(n, dtype=torch.uint8).view(n, 1, 1, 1).expand(n, 1, 2, 2).contiguous()
    return ImageData(imgs, torch.arange(n) % 10, 10, "tiny")


def test_batches_ranks_disjoint_and_epoch_covers_data():
    data = _tiny()
    seen = []
    for rank in range(2):
        b = DeviceBatches(data, 5, torch.device("cpu"), seed=1, rank=rank, world_size=2)
        assert b.steps_per_epoch == 4
        for _ in range(4):
            x, y = next(b)
            assert x.min() >= -1 and x.max() <= 1 and x.dtype == torch.float32
            seen.append(((x[:, 0, 0, 0] + 1) * 127.5).round().long())
    allv = torch.cat(seen)
    assert len(allv) == 40 and len(allv.unique()) == 40   # no image twice across ranks in an epoch


def test_batches_resume_from_state():
    data = _tiny()
    a = DeviceBatches(data, 4, torch.device("cpu"), seed=3)
    for _ in range(13):
        next(a)
    b = DeviceBatches(data, 4, torch.device("cpu"), seed=3)
    b.load_state_dict(a.state_dict())
    for _ in range(5):
        xa, _ = next(a)
        xb, _ = next(b)
        assert torch.equal(xa, xb)


def test_too_few_images_for_a_batch():
    with pytest.raises(GancliError, match="fewer than one batch"):
        DeviceBatches(_tiny(10), 16, torch.device("cpu"))


def _skewed():
    # 40 images, labels 0 x 30, 1 x 6, 2 x 3, 3 x 1: a long tail like the emoji groups
    labels = torch.tensor([0] * 30 + [1] * 6 + [2] * 3 + [3] * 1)
    imgs = torch.arange(40, dtype=torch.uint8).view(40, 1, 1, 1).expand(40, 1, 2, 2).contiguous()
    return ImageData(imgs, labels, 4, "skewed")


@settings(max_examples=60, deadline=None)
@given(counts=st.lists(st.integers(1, 30), min_size=1, max_size=6), seed=st.integers(0, 99),
       epoch=st.integers(0, 5))
def test_balanced_order_properties(counts, seed, epoch):
    from gancli.data.batches import epoch_permutation
    classes = torch.cat([torch.full((c,), k) for k, c in enumerate(counts)])
    classes = classes[torch.randperm(len(classes), generator=torch.Generator().manual_seed(7))]
    n = len(classes)
    order = epoch_permutation(seed, epoch, n, classes)
    assert order.shape == (n,) and order.dtype == torch.int64
    assert order.min() >= 0 and order.max() < n
    drawn = torch.bincount(classes[order], minlength=len(counts))
    assert drawn.max() - drawn.min() <= 1                    # every class equally often
    for k, c in enumerate(counts):                          # each class cycles through its images
        per_image = torch.bincount(order[classes[order] == k], minlength=n)[classes == k]
        assert per_image.max() - per_image.min() <= 1
    assert torch.equal(order, epoch_permutation(seed, epoch, n, classes))   # (seed, epoch) alone


def test_balanced_batches_draw_the_tail_as_often_and_resume():
    data = _skewed()
    b = DeviceBatches(data, 8, torch.device("cpu"), seed=2, balance=True)
    labels = torch.cat([next(b)[1] for _ in range(5 * b.steps_per_epoch)])   # 5 epochs
    assert torch.bincount(labels, minlength=4).tolist() == [50, 50, 50, 50]
    plain = DeviceBatches(data, 8, torch.device("cpu"), seed=2)
    plain_labels = torch.cat([next(plain)[1] for _ in range(5 * plain.steps_per_epoch)])
    assert torch.bincount(plain_labels, minlength=4).tolist() == [150, 30, 15, 5]
    # exact resume: a fresh batcher from the state draws the same images
    a = DeviceBatches(data, 8, torch.device("cpu"), seed=2, balance=True)
    for _ in range(7):
        next(a)
    c = DeviceBatches(data, 8, torch.device("cpu"), seed=2, balance=True)
    c.load_state_dict(a.state_dict())
    for _ in range(6):
        xa, ya = next(a)
        xc, yc = next(c)
        assert torch.equal(xa, xc) and torch.equal(ya, yc)


def test_balanced_stream_matches_device():
    from gancli.data import StreamBatches
    data = _skewed()
    dev = DeviceBatches(data, 8, torch.device("cpu"), seed=4, balance=True)
    stream = StreamBatches(data, 8, torch.device("cpu"), seed=4, num_workers=0, balance=True)
    for _ in range(12):
        assert torch.equal(next(dev)[0], next(stream)[0])


def test_balance_needs_labels():
    data = ImageData(_tiny().images, None, 0, "unlabelled")
    with pytest.raises(GancliError, match="needs a labelled data set"):
        DeviceBatches(data, 4, torch.device("cpu"), balance=True)
