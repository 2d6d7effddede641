import gzip
import struct

import numpy as np
import pytest
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
