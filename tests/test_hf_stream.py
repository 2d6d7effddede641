"""HuggingFace data sets too large for memory stream from their memory-mapped Arrow files
(:class:`HFImages`), sharded across ranks like folders; small ones are decoded into memory. Tiny
sets written here with ``datasets`` (save_to_disk, parquet); no network (the hub is
monkeypatched)."""

from __future__ import annotations

import pytest
import torch
from PIL import Image

from gancli import data as gd
from gancli.data import (DeviceBatches, HFImages, ImageData, LazySource, StreamBatches,
                         choose_mode, load_images, make_batches, open_dataset)
from gancli.errors import GancliError
from gancli.recipes import DataConfig, resolve

datasets = pytest.importorskip("datasets")

CPU = torch.device("cpu")
N = 40


def _image(i: int, size=(10, 8)) -> Image.Image:
    # Red names the example (0, 6, ... 234); not square, so the center crop is exercised.
    return Image.new("RGB", size, (6 * i, 255 - 6 * i, 40))


def _ids(x: torch.Tensor) -> list[int]:
    """Example numbers from float batches in [-1, 1] (or uint8 images)."""
    r = x[:, 0, 0, 0]
    if r.dtype != torch.uint8:
        r = (r + 1) * 127.5
    return (r.float() / 6).round().long().tolist()


def _set(n: int = N, offset: int = 0):
    return datasets.Dataset.from_dict(
        {"image": [_image(offset + i) for i in range(n)],
         "label": [offset + i for i in range(n)]}).cast_column("image", datasets.Image())


@pytest.fixture(scope="module")
def saved(tmp_path_factory):
    """A Dataset of 40 examples written by save_to_disk; label i is example i."""
    d = tmp_path_factory.mktemp("hf") / "saved"
    _set().save_to_disk(str(d))
    return d


@pytest.fixture
def hf_cache(tmp_path, monkeypatch):
    # Parquet files are converted into the datasets cache: keep it in the test's folder.
    monkeypatch.setattr(datasets.config, "HF_DATASETS_CACHE", str(tmp_path / "hf-cache"))


def hf_cfg(path, size=4, channels=3, **kw) -> DataConfig:
    return DataConfig(source="hf", image_size=size, channels=channels, path=str(path), **kw)


def test_large_set_streams_from_arrow_files(saved):
    src = open_dataset(hf_cfg(saved), ram_budget=N * 3 * 4 * 4 - 1)    # one byte too few
    assert isinstance(src, HFImages) and isinstance(src, LazySource) and len(src) == N
    assert src.labels.tolist() == list(range(N)) and src.num_classes == N
    assert src.name.endswith("-train-4px3c") and src.ds.cache_files    # still memory-mapped
    x = src[7]
    assert x.dtype == torch.uint8 and x.shape == (3, 4, 4)
    assert x[:, 0, 0].tolist() == [42, 255 - 42, 40]
    assert choose_mode(src, CPU) == "stream"
    b = make_batches(src, 5, CPU, seed=1, num_workers=0)
    assert isinstance(b, StreamBatches) and "from Arrow files" in b.where   # the printed choice
    grey = open_dataset(hf_cfg(saved, size=6, channels=1, stream="stream"))
    assert isinstance(grey, HFImages) and grey[0].shape == (1, 6, 6)


def test_ranks_read_disjoint_slices_that_cover_the_set(saved):
    src = open_dataset(hf_cfg(saved, stream="stream"))
    assert isinstance(src, HFImages)
    for epoch in range(2):
        seen: dict[int, list[int]] = {}
        for rank in range(2):
            b = make_batches(src, 5, CPU, seed=4, rank=rank, world_size=2, num_workers=0)
            b.load_state_dict({"epoch": epoch, "position": 0})
            assert b.steps_per_epoch == 4
            seen[rank] = []
            for _ in range(b.steps_per_epoch):
                x, y = next(b)
                assert x.dtype == torch.float32 and x.shape == (5, 3, 4, 4)
                assert x.min() >= -1 and x.max() <= 1
                assert _ids(x) == y.tolist()                    # labels travel with their images
                seen[rank] += y.tolist()
        assert not set(seen[0]) & set(seen[1])                  # no example read by both ranks
        assert sorted(seen[0] + seen[1]) == list(range(N))      # and together the whole set


def test_small_set_is_decoded_into_memory(saved):
    cfg = hf_cfg(saved)
    mem = open_dataset(cfg, ram_budget=1 << 30)
    assert isinstance(mem, ImageData) and mem.images.shape == (N, 3, 4, 4)
    assert mem.labels.tolist() == list(range(N)) and _ids(mem.images) == list(range(N))
    assert torch.equal(load_images(cfg).images, mem.images)
    lazy = open_dataset(cfg, ram_budget=0)
    assert torch.equal(lazy.load().images, mem.images)         # the same pixels either way
    dev = make_batches(mem, 8, CPU, seed=2, mode="device")
    stream = make_batches(lazy, 8, CPU, seed=2, num_workers=0)
    assert isinstance(dev, DeviceBatches) and stream.mode == "stream"
    for _ in range(7):                                           # across an epoch's end
        a, b = next(dev), next(stream)
        assert torch.equal(a[0], b[0]) and torch.equal(a[1], b[1])
    forced = make_batches(lazy, 8, CPU, mode="device")           # decoded after all
    assert isinstance(forced, DeviceBatches) and forced.images.shape == (N, 3, 4, 4)
    few = open_dataset(hf_cfg(saved, limit=12), ram_budget=0)
    assert len(few) == 12 and few.labels.tolist() == list(range(12))


def test_stream_with_a_worker_process(saved):
    src = open_dataset(hf_cfg(saved, stream="stream"))
    b = make_batches(src, 10, CPU, seed=0, num_workers=1)
    assert "(1 loader worker)" in b.where
    got = sorted(i for _ in range(4) for i in next(b)[1].tolist())
    assert got == list(range(N))
    b.close()


def test_parquet_directory_and_splits(tmp_path, hf_cache):
    d = tmp_path / "pq"
    d.mkdir()
    _set().to_parquet(str(d / "train-00000-of-00001.parquet"))
    _set(8, offset=N - 8).to_parquet(str(d / "test-00000-of-00001.parquet"))
    cfg = hf_cfg(d, stream="stream")
    train, test = open_dataset(cfg), open_dataset(cfg, "test")
    assert isinstance(train, HFImages) and len(train) == N and len(test) == 8
    assert test.labels.tolist() == list(range(N - 8, N)) and _ids(test[0][None]) == [N - 8]
    assert len(load_images(hf_cfg(d), "test")) == 8
    one = open_dataset(hf_cfg(d / "train-00000-of-00001.parquet"), ram_budget=1 << 30)
    assert isinstance(one, ImageData) and len(one) == N


def test_saved_dataset_dict_splits(tmp_path):
    d = tmp_path / "dd"
    datasets.DatasetDict({"train": _set(10), "validation": _set(4, offset=10)}).save_to_disk(str(d))
    cfg = hf_cfg(d, num_classes=10)
    assert len(open_dataset(cfg)) == 10
    with pytest.raises(GancliError, match="expects 10 classes"):
        open_dataset(cfg, "test")                       # validation stands for test: labels 10-13
    assert len(open_dataset(hf_cfg(d), "test")) == 4
    _set(4).save_to_disk(str(tmp_path / "one"))
    with pytest.raises(GancliError, match="one data set, the train split"):
        open_dataset(hf_cfg(tmp_path / "one"), "test")


def test_unreadable_row_stands_in(tmp_path):
    rows = [{"bytes": b"not an image", "path": None}] + [_image(i) for i in range(1, 6)]
    d = tmp_path / "broken"
    datasets.Dataset.from_dict({"image": rows, "label": list(range(6))}).cast_column(
        "image", datasets.Image()).save_to_disk(str(d))
    heard: list[str] = []
    src = open_dataset(hf_cfg(d, stream="stream"))
    b = make_batches(src, 6, CPU, num_workers=0, say=heard.append)
    x, y = next(b)
    assert x.shape[0] == 6 and b.skipped == 1 and "row 0 of" in heard[-1]
    assert _ids(x) == y.tolist() and 0 not in y.tolist()


def test_hf_source_needs_data_and_refuses_other_folders(tmp_path, monkeypatch):
    with pytest.raises(GancliError, match="hf source needs --data"):
        open_dataset(resolve("dcgan", "hf").data)
    (tmp_path / "a.png").write_bytes(b"")
    with pytest.raises(GancliError, match="neither a data set written by save_to_disk"):
        open_dataset(hf_cfg(tmp_path))
    with pytest.raises(GancliError, match="data directory not found"):
        open_dataset(hf_cfg(tmp_path / "absent" / "x" / "y"))

    def refuse(*a, **k):
        raise ConnectionError("Couldn't reach 'x' on the Hub\nmore")
    monkeypatch.setattr(gd, "hub_offline_reason", lambda hf_id: None)
    monkeypatch.setattr(datasets, "load_dataset", refuse)
    with pytest.raises(GancliError, match="could not download 'someone/faces'.*hub id"):
        open_dataset(hf_cfg("someone/faces"))


def _hub(monkeypatch, ds):
    monkeypatch.setattr(gd, "hub_offline_reason", lambda hf_id: None)   # as if online
    monkeypatch.setattr(datasets, "load_dataset", lambda hf_id, split: ds)


def test_hub_downloads_take_the_same_decision(monkeypatch):
    names = gd.CIFAR10_CLASSES
    feats = datasets.Features({"img": datasets.Image(), "label": datasets.ClassLabel(names=names)})
    ds = datasets.Dataset.from_dict({"img": [_image(i, (32, 32)) for i in range(10)],
                                     "label": list(range(10))}, features=feats)
    _hub(monkeypatch, ds)
    cfg = resolve("dcgan", "cifar10").data
    lazy = open_dataset(cfg, ram_budget=0)
    assert isinstance(lazy, HFImages) and lazy.class_names == names and lazy.num_classes == 10
    mem = open_dataset(cfg, ram_budget=1 << 30)
    assert isinstance(mem, ImageData) and mem.name == "cifar10-train-32px3c"
    assert torch.equal(lazy.load().images, mem.images) and torch.equal(lazy[3], mem.images[3])

    faces = datasets.Dataset.from_dict({"image": [_image(i, (128, 128)) for i in range(6)],
                                        "label": [0] * 6}).cast_column("image", datasets.Image())
    _hub(monkeypatch, faces)
    lazy = open_dataset(resolve("dcgan", "faces64").data, ram_budget=0)
    assert isinstance(lazy, HFImages) and lazy.labels is None and lazy[0].shape == (3, 64, 64)
    assert "crop96" in lazy.name
