"""Data sources beyond MNIST (image folders, Fashion-MNIST, CIFAR-10, faces, the HF path) and the
streaming batches. Tiny files written here; no network (the hub is monkeypatched)."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from PIL import Image

from gancli import data as gd
from gancli.data import (DeviceBatches, FolderImages, ImageData, StreamBatches, choose_mode,
                         load_images, make_batches, open_dataset)
from gancli.errors import GancliError
from gancli.recipes import DataConfig, resolve

from conftest import invoke
from test_data import fake_mnist

CPU = torch.device("cpu")


def solid(path, size, colour, mode="RGB", fmt=None):
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.new(mode, size, colour).save(path, fmt)


def folder_cfg(path, size=16, channels=3, **kw) -> DataConfig:
    return DataConfig(source="imagefolder", image_size=size, channels=channels, path=str(path), **kw)


@pytest.fixture
def classes(tmp_path):
    """cat/: three RGB images of different sizes and formats; dog/: two grey PNGs; one loose."""
    root = tmp_path / "pets"
    solid(root / "cat" / "a.png", (40, 30), (255, 0, 0))
    solid(root / "cat" / "b.jpg", (50, 50), (255, 0, 0), fmt="JPEG")
    solid(root / "cat" / "c.PNG", (12, 20), (255, 0, 0))
    solid(root / "dog" / "a.png", (20, 20), 200, mode="L")
    solid(root / "dog" / "b.png", (64, 16), 200, mode="L")
    solid(root / "loose.png", (8, 8), (0, 0, 255))
    (root / "dog" / "notes.txt").write_text("not an image")
    return root


def test_imagefolder_class_subfolders(classes):
    d = load_images(folder_cfg(classes))
    assert d.images.shape == (5, 3, 16, 16) and d.images.dtype == torch.uint8
    assert d.class_names == ["cat", "dog"] and d.num_classes == 2
    assert d.labels.tolist() == [0, 0, 0, 1, 1]
    assert (d.images[:3, 0].float().mean() > 250) and d.images[:3, 1:].float().max() < 5  # red
    assert (d.images[3:] == 200).all()                        # grey became three equal channels
    assert any("left out" in n for n in d.notes)              # the loose file


def test_imagefolder_grey_and_flat(classes, tmp_path):
    g = load_images(folder_cfg(classes, size=8, channels=1))
    assert g.images.shape == (5, 1, 8, 8)
    assert abs(int(g.images[0].float().mean()) - 76) <= 1     # 0.299 * 255: ITU-R 601 luma
    flat = tmp_path / "flat"
    for i, size in enumerate([(10, 10), (30, 17), (17, 30)]):
        solid(flat / f"{i}.png", size, (0, 255, 0))
    d = load_images(folder_cfg(flat, size=12))
    assert d.images.shape == (3, 3, 12, 12) and d.labels is None and d.num_classes == 0


def test_center_square_crop_before_resize(tmp_path):
    im = Image.new("RGB", (40, 20), (0, 0, 255))
    im.paste((255, 0, 0), (10, 0, 30, 20))                    # red middle square, blue sides
    im.save(tmp_path / "wide.png")
    d = load_images(folder_cfg(tmp_path, size=8))
    assert (d.images[0, 0] == 255).all() and (d.images[0, 2] == 0).all()


def test_empty_and_unreadable_folders(tmp_path):
    (tmp_path / "empty").mkdir()
    with pytest.raises(GancliError, match="no image files") as e:
        load_images(folder_cfg(tmp_path / "empty"))
    assert "\n" not in str(e.value)
    bad = tmp_path / "bad"
    bad.mkdir()
    for i in range(2):
        (bad / f"{i}.png").write_bytes(b"\x89PNG not really")
    with pytest.raises(GancliError, match="none of the 2 image files") as e:
        load_images(folder_cfg(bad))
    assert "\n" not in str(e.value)


def test_unreadable_files_skipped_and_counted(classes):
    (classes / "cat" / "broken.jpg").write_bytes(b"\xff\xd8\xff garbage")
    (classes / "dog" / "broken.png").write_bytes(b"")
    d = load_images(folder_cfg(classes))
    assert len(d) == 5 and d.skipped == 2 and d.labels.tolist() == [0, 0, 0, 1, 1]
    assert any("skipped 2 unreadable" in n for n in d.notes)


def test_imagefolder_needs_data(tmp_path):
    with pytest.raises(GancliError, match="needs --data DIR"):
        load_images(DataConfig(source="imagefolder", image_size=16, channels=3))
    r = invoke("train", "dcgan", "--recipe", "imagefolder", "--steps", "1", "--no-progress")
    assert r.exit_code != 0 and "needs --data DIR" in r.stderr and "Traceback" not in r.output


def test_splits_and_class_count(classes, tmp_path):
    with pytest.raises(GancliError, match="no test split"):
        load_images(folder_cfg(classes), "test")
    with pytest.raises(GancliError, match="expects 3 classes"):
        load_images(folder_cfg(classes, num_classes=3))
    root = tmp_path / "split"
    for split, n in (("train", 3), ("test", 2)):
        for k in range(n):
            solid(root / split / ("x" if k % 2 else "y") / f"{k}.png", (9, 9), (k, k, k))
    assert len(load_images(folder_cfg(root))) == 3 and len(load_images(folder_cfg(root), "test")) == 2


def test_fashion_mnist_local_env_and_debian(tmp_path, monkeypatch):
    imgs, labels = fake_mnist(tmp_path, True)
    d = load_images(DataConfig(source="fashion-mnist", image_size=28, channels=1, num_classes=10,
                               path=str(tmp_path)))
    assert np.array_equal(d.images[:, 0].numpy(), imgs) and d.class_names[9] == "Ankle boot"
    monkeypatch.setenv("GANCLI_TEST_FASHION", str(tmp_path))
    cfg = DataConfig(source="fashion-mnist", image_size=32, channels=3, env="GANCLI_TEST_FASHION")
    assert load_images(cfg).images.shape == (20, 3, 32, 32)
    monkeypatch.setattr(gd, "DEBIAN_FASHION_MNIST", tmp_path)     # the package's directory
    d = load_images(DataConfig(source="fashion-mnist", image_size=28, channels=1))
    assert np.array_equal(d.labels.numpy(), labels.astype(np.int64))


def test_real_fashion_mnist_from_debian_package():
    if gd.find_idx(gd.DEBIAN_FASHION_MNIST, "t10k-images-idx3-ubyte") is None:
        pytest.skip("apt-get install dataset-fashion-mnist for this test")
    d = load_images(resolve("infogan", "fashion-mnist").data, "test")
    assert d.images.shape == (10000, 1, 28, 28) and torch.bincount(d.labels).tolist() == [1000] * 10


def _offline(monkeypatch):
    import datasets

    def refuse(*a, **k):
        raise ConnectionError("Couldn't reach 'x' on the Hub (LocalEntryNotFoundError)\nmore")
    monkeypatch.setattr(datasets, "load_dataset", refuse)


@pytest.mark.parametrize("recipe", ["cifar10", "faces64", "fashion-mnist", "mnist"])
def test_hub_without_network_is_one_line(recipe, monkeypatch, tmp_path):
    _offline(monkeypatch)
    monkeypatch.setattr(gd, "DEBIAN_FASHION_MNIST", tmp_path / "absent")
    for var in ("GANCLI_FASHION_MNIST_DIR", "GANCLI_CIFAR10_DIR", "GANCLI_FACES_DIR",
                "GANCLI_MNIST_DIR"):
        monkeypatch.delenv(var, raising=False)
    with pytest.raises(GancliError, match="--data") as e:
        load_images(resolve("dcgan", recipe).data)
    assert "\n" not in str(e.value) and "could not download" in str(e.value)


def test_no_network_fails_fast_without_retries(monkeypatch, tmp_path):
    import socket

    import datasets

    def no_dns(*a, **k):
        raise socket.gaierror(-2, "Name or service not known")

    def never(*a, **k):
        raise AssertionError("load_dataset should not be tried")
    monkeypatch.setattr(socket, "getaddrinfo", no_dns)
    monkeypatch.setattr(datasets, "load_dataset", never)
    with pytest.raises(GancliError, match="no network.*--data DIR"):
        load_images(DataConfig(source="cifar10", image_size=32, channels=3,
                               hf_id="gancli-test/not-cached"))


def _hub(monkeypatch, rows: dict, features):
    import datasets

    ds = datasets.Dataset.from_dict(rows, features=features)
    monkeypatch.setattr(gd, "hub_offline_reason", lambda hf_id: None)   # as if online
    monkeypatch.setattr(datasets, "load_dataset", lambda hf_id, split: ds)


def test_hub_cifar10_conversion(monkeypatch):
    import datasets

    names = gd.CIFAR10_CLASSES
    ims = [Image.new("RGB", (32, 32), (10 * i, 0, 0)) for i in range(6)]
    feats = datasets.Features({"img": datasets.Image(), "label": datasets.ClassLabel(names=names)})
    _hub(monkeypatch, {"img": ims, "label": [0, 1, 2, 9, 9, 3]}, feats)
    d = load_images(resolve("dcgan", "cifar10").data)
    assert d.images.shape == (6, 3, 32, 32) and d.labels.tolist() == [0, 1, 2, 9, 9, 3]
    assert d.class_names == names and d.num_classes == 10 and int(d.images[5, 0, 0, 0]) == 50


def test_hub_faces_crop_and_no_labels(monkeypatch):
    import datasets

    ims = []
    for i in range(3):
        im = Image.new("RGB", (128, 128), (0, 0, 255))
        im.paste((0, 255, 0), (16, 16, 112, 112))             # the 96 px middle is green
        ims.append(im)
    feats = datasets.Features({"image": datasets.Image(), "label": datasets.ClassLabel(names=["a"])})
    _hub(monkeypatch, {"image": ims, "label": [0, 0, 0]}, feats)
    d = load_images(resolve("dcgan", "faces64").data)
    assert d.images.shape == (3, 3, 64, 64) and d.labels is None and d.num_classes == 0
    assert (d.images[:, 1] == 255).all() and (d.images[:, 2] == 0).all()   # cropped to the face
    assert "crop96" in d.name


def test_cifar_binary_and_pickle_refused(tmp_path):
    rng = np.random.default_rng(0)
    for f in gd.CIFAR_BIN_FILES["train"] + gd.CIFAR_BIN_FILES["test"]:
        rec = rng.integers(0, 256, size=(2, 3073), dtype=np.uint8)
        rec[:, 0] %= 10
        rec.tofile(tmp_path / f)
    cfg = DataConfig(source="cifar10", image_size=32, channels=3, num_classes=10, path=str(tmp_path))
    assert load_images(cfg).images.shape == (10, 3, 32, 32) and len(load_images(cfg, "test")) == 2
    py = tmp_path / "py" / "cifar-10-batches-py"
    py.mkdir(parents=True)
    (py / "data_batch_1").write_bytes(b"\x80\x04")
    with pytest.raises(GancliError, match="pickle"):
        load_images(DataConfig(source="cifar10", image_size=32, channels=3, path=str(py.parent)))


# ----------------------------------------------------------------------------- batches


@pytest.fixture
def numbered(tmp_path):
    """12 grey images whose value names them (0, 20, ... 220), in two classes."""
    for i in range(12):
        solid(tmp_path / "nums" / ("even" if i % 2 == 0 else "odd") / f"{i:02d}.png", (6, 6),
              20 * i, mode="L")
    return tmp_path / "nums"


def _ids(x: torch.Tensor) -> list[int]:
    return (((x[:, 0, 0, 0] + 1) * 127.5).round() / 20).long().tolist()


def test_stream_mode_interface_and_disjoint_ranks(numbered):
    cfg = folder_cfg(numbered, size=4, channels=1, stream="stream")
    src = open_dataset(cfg)
    assert isinstance(src, FolderImages) and len(src) == 12
    seen = []
    for rank in range(2):
        b = make_batches(src, 3, CPU, seed=5, rank=rank, world_size=2, mode=cfg.stream,
                         num_workers=0)
        assert isinstance(b, StreamBatches) and b.mode == "stream" and b.steps_per_epoch == 2
        for _ in range(2):
            x, y = next(b)
            assert x.dtype == torch.float32 and x.shape == (3, 1, 4, 4)
            assert x.min() >= -1 and x.max() <= 1 and y.dtype == torch.int64
            assert [i % 2 for i in _ids(x)] == y.tolist()     # labels travel with their images
            seen += _ids(x)
    assert sorted(seen) == list(range(12))                    # one epoch, no image twice


def test_stream_matches_device_and_resumes(numbered):
    cfg = folder_cfg(numbered, size=4, channels=1)
    mem = open_dataset(cfg)
    assert isinstance(mem, ImageData)
    dev = make_batches(mem, 4, CPU, seed=2, mode="device")
    lazy = make_batches(open_dataset(cfg, ram_budget=0), 4, CPU, seed=2, num_workers=0)
    assert isinstance(dev, DeviceBatches) and lazy.mode == "stream"
    for _ in range(7):                                        # across epoch ends (3 steps each)
        assert torch.equal(next(dev)[0], next(lazy)[0])
    again = make_batches(mem, 4, CPU, seed=2, mode="stream")
    again.load_state_dict(lazy.state_dict())
    assert again.state_dict() == {"epoch": 2, "position": 1}
    for _ in range(4):
        assert torch.equal(next(again)[0], next(dev)[0])


def test_stream_with_worker_processes(numbered):
    src = open_dataset(folder_cfg(numbered, size=4, channels=1, stream="stream"))
    b = make_batches(src, 4, CPU, seed=0, mode="stream", num_workers=1)
    assert "1 loader worker)" in b.where
    got = sorted(i for _ in range(3) for i in _ids(next(b)[0]))
    assert got == list(range(12))
    b.close()


def test_stream_stands_in_for_unreadable_files(numbered):
    (numbered / "odd" / "99.png").write_bytes(b"broken")
    heard: list[str] = []
    src = open_dataset(folder_cfg(numbered, size=4, channels=1, stream="stream"))
    b = make_batches(src, 13, CPU, mode="stream", num_workers=0, say=heard.append)
    x, y = next(b)
    assert x.shape[0] == 13 and b.skipped == 1 and "99.png" in heard[-1]
    assert [i % 2 for i in _ids(x)] == y.tolist()
    next(b)                                                   # next epoch: same file, no new line
    assert b.skipped == 1 and len(heard) == 1


def test_auto_mode_follows_the_budget(numbered):
    mem = open_dataset(folder_cfg(numbered, size=4, channels=1))
    assert choose_mode(mem, CPU) == "device"                  # 192 bytes fit any budget
    assert choose_mode(mem, CPU, budget=100) == "stream"
    assert choose_mode(mem, CPU, "device", budget=0) == "device"
    assert make_batches(mem, 4, CPU, budget=100).mode == "stream"
    assert make_batches(mem, 4, CPU).mode == "device"
    lazy = open_dataset(folder_cfg(numbered, size=4, channels=1), ram_budget=100)
    assert isinstance(lazy, FolderImages) and choose_mode(lazy, CPU) == "stream"
    forced = make_batches(lazy, 4, CPU, mode="device")        # decoded into memory after all
    assert isinstance(forced, DeviceBatches) and forced.images.shape == (12, 1, 4, 4)


def test_new_recipes_resolve():
    for recipe, size, ch in (("fashion-mnist", 28, 1), ("cifar10", 32, 3), ("faces64", 64, 3),
                             ("imagefolder", 64, 3)):
        cfg = resolve("dcgan", recipe)
        assert (cfg.data.image_size, cfg.data.channels) == (size, ch)
        assert cfg.train.lr_g == 2e-4 and cfg.train.beta1 == 0.5
    assert resolve("infogan", "cifar10").model_args["categorical"] == [10]
    assert resolve("dcgan", "faces64").data.crop == 96
