"""gancli fid: the generator wrapper, reference sets, caching, CLI and JSON output.

Inception cannot be downloaded here and runs at a few images per second on a CPU, so these tests
use a small stand-in feature extractor registered with torch-fidelity (a fixed pooling of the
pixels: deterministic, instant). One test uses the real Inception when its weights are present.
"""

from __future__ import annotations

import json
import urllib.error
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from PIL import Image
from torch_fidelity import FeatureExtractorBase, register_feature_extractor
from torch_fidelity.registry import FEATURE_EXTRACTORS_REGISTRY

from conftest import invoke
from gancli import metrics as M
from gancli.errors import GancliError
from gancli.recipes import DataConfig

STANDIN = "gancli-test-pixels"


class PixelFeatures(FeatureExtractorBase):
    """4x4 average pooling of the first channel, in [0, 1]: 16 features (and 10 'logits' for IS)."""

    def __init__(self, name, features_list, **kwargs):
        super().__init__(name, features_list)

    @staticmethod
    def get_provided_features_list():
        return ("pool", "logits")

    @staticmethod
    def get_default_feature_layer_for_metric(metric):
        return "logits" if metric == "isc" else "pool"

    @staticmethod
    def can_be_compiled():
        return False

    @staticmethod
    def get_dummy_input_for_compile():
        return torch.zeros(1, 3, 8, 8, dtype=torch.uint8)

    def forward(self, x):
        assert x.dtype == torch.uint8 and x.shape[1] == 3  # what torch-fidelity promises Inception
        f = F.adaptive_avg_pool2d(x[:, :1].float() / 255.0, 4).flatten(1)
        feats = {"pool": f, "logits": f[:, :10] * 5}
        return tuple(feats[k] for k in self.features_list)


if STANDIN not in FEATURE_EXTRACTORS_REGISTRY:
    register_feature_extractor(STANDIN, PixelFeatures)


def _write_folder(folder: Path, images: np.ndarray) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    for i, im in enumerate(images):
        Image.fromarray(im, mode="L").save(folder / f"{i:04d}.png")
    return folder


@pytest.fixture(scope="module")
def digit_folders(tmp_path_factory):
    from sklearn.datasets import load_digits

    d = (load_digits().images[:120] * (255 / 16)).round().astype(np.uint8)
    root = tmp_path_factory.mktemp("folders")
    a = _write_folder(root / "a", d[:60])
    same = _write_folder(root / "same", d[:60])
    inverted = _write_folder(root / "inverted", 255 - d[60:120])
    return a, same, inverted


def _fid_json(*args):
    r = invoke("fid", *args, "--feature-extractor", STANDIN, "--device", "cpu", "--json")
    assert r.exit_code == 0, r.output
    return json.loads(r.stdout)


def test_generator_wrapper_draws_what_sample_draws(tiny_run):
    from gancli.checkpoint import load_generator
    from gancli.generate import generate

    g = load_generator(tiny_run)
    wrapped = M.GeneratorInput(g.generator, g.spec, 10, seed=3)
    got = torch.cat([wrapped(torch.zeros(4, 1)), wrapped(torch.zeros(6, 1))])
    want = generate(g.generator, g.spec.sample(10, torch.Generator().manual_seed(3)))
    assert got.dtype == torch.uint8 and got.shape == (10, 3, 16, 16)  # grey repeated to RGB
    assert torch.equal(got[:, 0], want[:, 0]) and torch.equal(got[:, 2], want[:, 0])
    fidelity_model = M._fidelity_generator(wrapped)
    assert fidelity_model.num_classes == 0  # conditional wrapping crashes torch-fidelity


def test_fid_of_a_run_json_metrics_jsonl_and_cache(tiny_run, monkeypatch):
    res = _fid_json(tiny_run, "--n", "48", "--ref-n", "64", "--metrics", "fid,kid,isc,prc")
    for key in ("fid", "kid", "kid_std", "isc", "precision", "recall"):
        assert np.isfinite(res[key]), key
    assert res["fid"] > 0 and res["kind"] == "fid" and res["step"] == 4 and res["n"] == 48
    assert "digits-train-16px1c" in res["reference_cache"] and "-n64-" in res["reference_cache"]
    last = json.loads((tiny_run / "metrics.jsonl").read_text().splitlines()[-1])
    assert last["kind"] == "fid" and last["step"] == 4 and last["fid"] == res["fid"]
    cached = M.features_cache() / f"{res['reference_cache']}.safetensors"
    assert cached.is_file(), "reference features were not cached (as safetensors) in gancli's cache"
    assert not list(M.cache_dir().rglob("*stat-fid*"))  # torch-fidelity's pickle cache: unused

    # Second time the reference comes from the cache: the data is never opened. Same latents too.
    def no_data(*a, **k):
        raise AssertionError("reference data loaded despite cached statistics")

    monkeypatch.setattr("gancli.data.open_dataset", no_data)
    again = _fid_json(tiny_run, "--n", "48", "--ref-n", "64", "--metrics", "fid")
    assert again["fid"] == pytest.approx(res["fid"], rel=1e-6)


def test_fid_two_folders_identical_is_zero_different_is_not(digit_folders):
    a, same, inverted = digit_folders
    zero = _fid_json(a, "--ref", same, "--metrics", "fid")["fid"]
    far = _fid_json(a, "--ref", inverted, "--metrics", "fid")["fid"]
    assert abs(zero) < 1e-4
    assert far > 0.1


def test_cache_names_differ_with_the_reference(digit_folders, tmp_path):
    base = DataConfig(source="digits", image_size=16, channels=1, num_classes=10)
    names = {
        M.recipe_reference(base, "train").key,
        M.recipe_reference(base, "test").key,
        M.recipe_reference(DataConfig("digits", 32, 1, 10), "train").key,
        M.recipe_reference(DataConfig("digits", 16, 3, 10), "train").key,
        M.recipe_reference(base, "train", n=100).key,
        M.recipe_reference(base, "train", n=200).key,
        M.recipe_reference(DataConfig("digits", 16, 1, 10, limit=500), "train").key,
        M.recipe_reference(DataConfig("mnist", 16, 1, 10), "train").key,
    }
    assert len(names) == 8
    assert M.recipe_reference(base, "train").key == M.recipe_reference(base, "train").key
    assert "16px1c" in M.recipe_reference(base, "train").key

    a, same, _ = digit_folders
    ra, rs = M.folder_reference(a), M.folder_reference(same)
    assert ra.key != rs.key and M.folder_reference(a, n=10).key != ra.key
    changed = _write_folder(tmp_path / "c", np.zeros((3, 8, 8), np.uint8))
    before = M.folder_reference(changed).key
    _write_folder(tmp_path / "c", np.full((4, 8, 8), 9, np.uint8))
    assert M.folder_reference(changed).key != before  # edited folder: no stale statistics

    ref = M.recipe_reference(base)
    assert M.cache_name(ref, "inception-v3-compat") != M.cache_name(ref, "vgg16")


def test_folder_input_needs_ref_and_bad_metrics_are_one_line(digit_folders):
    a, _, _ = digit_folders
    r = invoke("fid", a)
    assert r.exit_code == 2 and "--ref" in r.stderr and "Traceback" not in r.output
    r = invoke("fid", a, "--ref", a, "--metrics", "fid,bogus")
    assert r.exit_code == 2 and "--metrics" in r.stderr


@pytest.fixture
def offline(monkeypatch, tmp_path):
    """No Inception file anywhere and no network (the download raises like urllib does)."""
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "torch"))
    monkeypatch.setenv("GANCLI_CACHE", str(tmp_path / "cache"))   # no converted copy either
    monkeypatch.setattr("gancli.metrics.weights._nvlabs_file", lambda: None)  # no gancli[fid]
    monkeypatch.delenv(M.ENV_INCEPTION, raising=False)
    monkeypatch.delenv(M.ENV_EXTRACTOR, raising=False)

    def no_network(url, dst, *a, **k):
        print(f'Downloading: "{url}" to {dst}')
        raise urllib.error.URLError("[Errno -3] Temporary failure in name resolution")

    monkeypatch.setattr(torch.hub, "download_url_to_file", no_network)
    return tmp_path / "torch" / "hub" / "checkpoints"


def test_offline_without_inception_weights_says_where_to_put_them(tiny_run, offline):
    r = invoke("fid", tiny_run, "--n", "8", "--device", "cpu")
    assert r.exit_code == 2
    lines = [ln for ln in r.stderr.splitlines() if "error" in ln]
    assert len(lines) == 1 and "Traceback" not in r.output
    assert M.INCEPTION_FILE in lines[0] and str(offline) in lines[0]
    assert "--inception-weights" in lines[0] and "gancli[fid]" in lines[0]

    missing = invoke("fid", tiny_run, "--inception-weights", offline / "nope.pth")
    assert missing.exit_code == 2 and "not found" in missing.stderr


def test_offline_vgg16_for_prc_is_one_line(offline, digit_folders):
    a, same, _ = digit_folders
    with pytest.raises(GancliError, match="vgg16-397923af.pth"):
        M.compute_metrics(M.FolderFiles(M.image_files(a)), M.folder_reference(same), ["prc"])




def test_a_limited_run_is_measured_against_its_images_or_the_whole_split(tiny_recipe, tmp_path):
    run = tmp_path / "limited"
    r = invoke("train", "infogan", "--recipe", tiny_recipe, "--out", run, "--no-progress",
               "--limit", "40")
    assert r.exit_code == 0, r.output
    seen = _fid_json(run, "--n", "32", "--metrics", "fid")
    whole = _fid_json(run, "--n", "32", "--metrics", "fid", "--whole-split")
    assert "first 40" in seen["reference"] and "-first40-" in seen["reference_cache"]
    assert "first" not in whole["reference"] and "first" not in whole["reference_cache"]
    assert seen["fid"] != whole["fid"]


def test_fid_of_one_class_draws_it_and_measures_against_its_images(tiny_recipe, tiny_run, tmp_path):
    from gancli.checkpoint import load_generator
    from gancli.data import open_dataset

    run = tmp_path / "cgan"
    r = invoke("train", "cgan", "--recipe", tiny_recipe, "--out", run, "--no-progress",
               "--steps", "2")
    assert r.exit_code == 0, r.output
    g = load_generator(run)
    plain = M.GeneratorInput(g.generator, g.spec, 12, seed=1)
    three = M.GeneratorInput(g.generator, g.spec, 12, seed=1, label=3)
    assert torch.equal(three.latents["label"], torch.full((12,), 3))
    assert torch.equal(three.latents["z"], plain.latents["z"])   # the same draws, one class

    ref = M.recipe_reference(g.config.data, "train", None, label=3)
    labels = open_dataset(g.config.data, "train").labels
    assert len(ref.dataset) == int((labels == 3).sum()) < len(labels)
    assert "-class3-" in ref.key and ref.key != M.recipe_reference(g.config.data).key

    res = _fid_json(run, "--n", "32", "--metrics", "fid", "--label", "3")
    assert res["label"] == 3 and "class 3" in res["reference"] and res["fid"] > 0
    everything = _fid_json(run, "--n", "32", "--metrics", "fid")
    assert everything["fid"] != res["fid"] and "label" not in everything

    for bad, why in ((["--label", "10"], "0..9"), (["--label", "x"], "not a number")):
        r = invoke("fid", run, "--n", "32", *bad, "--feature-extractor", STANDIN)
        assert r.exit_code == 2 and why in r.output and "Traceback" not in r.output
    r = invoke("fid", tiny_run, "--n", "32", "--label", "1", "--feature-extractor", STANDIN)
    assert r.exit_code == 2 and "conditional" in r.output
