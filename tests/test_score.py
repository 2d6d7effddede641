"""gancli score: the classifier-based figures on tiny 16px digits models.

The recipe classifier is trained for a couple of steps only (accuracy is not the point here) and
cached where score_generator's load_or_train finds it, so no test pays for a full training.
"""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest
import torch

from conftest import invoke
from gancli.checkpoint import LoadedGenerator, load_generator
from gancli.errors import GancliError
from gancli.models import get_family
from gancli.recipes import resolve
from gancli.score import register_classifier, score_generator


@pytest.fixture(scope="module")
def quick_classifier(tiny_recipe, tmp_path_factory):
    """A barely trained classifier in the tests' cache (the autouse cache fixture is function
    scoped, so set the same directory here)."""
    from gancli.classifier import load_or_train

    cfg = resolve("infogan", str(tiny_recipe))
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("GANCLI_CACHE", str(tmp_path_factory.getbasetemp() / "cache"))
        return load_or_train(cfg.data, "cpu", epochs=0.2)


def _untrained(model: str, recipe: Path) -> LoadedGenerator:
    cfg = resolve(model, str(recipe))
    family = get_family(model)
    spec = family.latent_spec(cfg)
    torch.manual_seed(0)
    G, _ = family.build(cfg, spec)
    return LoadedGenerator(G.eval().requires_grad_(False), spec, cfg, 0, False, Path("."))


def _sane_common(res: dict, n: int) -> None:
    assert res["kind"] == "score" and res["n"] == n
    assert len(res["class_shares"]) == 10
    assert math.isclose(sum(res["class_shares"]), 1, abs_tol=1e-3)
    assert 0 <= res["min_share"] <= 0.1 <= res["max_share"] <= 1
    assert 0 <= res["classes_under_5pct"] <= 10
    assert math.isfinite(res["classifier_fd"]) and res["classifier_fd"] >= -1e-6
    assert 0 <= res["classifier_accuracy"] <= 1


def test_score_infogan_keys_ranges_and_determinism(tiny_run, quick_classifier):
    loaded = load_generator(tiny_run)
    res = score_generator(loaded, n=120, seed=1, device="cpu")
    _sane_common(res, 120)
    assert res["key_metric"] == "code_accuracy" and res["higher_is_better"] is True
    assert res["code"] == "c1"
    assert 0 <= res["code_accuracy"] <= res["code_purity"] <= 1
    assert sorted(res["code_to_class"].values()) == list(range(10))  # one-to-one
    assert len(res["code_table"]) == 10 and sum(sum(r) for r in res["confusion"]) == 120
    assert "label_agreement" not in res
    # the classifier Fréchet distance went through torch-fidelity with the classifier registered
    assert "gancli-classifier-" in res["reference_cache"]
    assert "digits-test-16px1c" in res["reference_cache"]
    clf, info = quick_classifier
    again = score_generator(loaded, n=120, seed=1, device="cpu", classifier=clf,
                            classifier_info=info)
    assert again["code_accuracy"] == res["code_accuracy"]
    assert again["classifier_fd"] == pytest.approx(res["classifier_fd"], rel=1e-5, abs=1e-6)


def test_score_cgan_measures_label_agreement(tiny_recipe, quick_classifier):
    clf, info = quick_classifier
    res = score_generator(_untrained("cgan", tiny_recipe), n=60, seed=0, device="cpu",
                          classifier=clf, classifier_info=info)
    _sane_common(res, 60)
    assert res["key_metric"] == "label_agreement" and 0 <= res["label_agreement"] <= 1
    assert len(res["label_agreement_per_class"]) == 10 and "code_accuracy" not in res


def test_score_plain_gan_ranks_by_frechet_distance(tiny_recipe, quick_classifier):
    clf, info = quick_classifier
    res = score_generator(_untrained("gan", tiny_recipe), n=40, seed=0, device="cpu",
                          classifier=clf, classifier_info=info)
    _sane_common(res, 40)
    assert res["key_metric"] == "classifier_fd" and res["higher_is_better"] is False
    assert "code_accuracy" not in res and "label_agreement" not in res


def test_classifier_registration_is_by_weights(quick_classifier):
    clf, _ = quick_classifier
    import copy

    assert register_classifier(clf) == register_classifier(copy.deepcopy(clf))
    other = copy.deepcopy(clf)
    with torch.no_grad():
        next(other.parameters()).add_(1.0)
    assert register_classifier(other) != register_classifier(clf)


def test_score_cli_json_table_and_metrics_jsonl(tiny_run, quick_classifier):
    r = invoke("score", tiny_run, "--n", "50", "--device", "cpu", "--json")
    assert r.exit_code == 0, r.output
    res = json.loads(r.stdout)
    _sane_common(res, 50)
    assert res["step"] == 4 and res["ema"] is True
    last = json.loads((tiny_run / "metrics.jsonl").read_text().splitlines()[-1])
    assert last["kind"] == "score" and last["step"] == 4
    assert last["code_accuracy"] == res["code_accuracy"]

    r = invoke("score", tiny_run, "--n", "30", "--device", "cpu", "--no-ema")
    assert r.exit_code == 0, r.output
    assert "test accuracy" in r.stdout and "c1 accuracy (one-to-one)" in r.stdout
    assert "value -> class" in r.stdout


def test_score_needs_labels(tmp_path, tiny_recipe):
    unlabelled = tmp_path / "nolabels.toml"
    unlabelled.write_text(tiny_recipe.read_text().replace("num_classes = 10", "num_classes = 0"))
    with pytest.raises(GancliError, match="labels"):
        score_generator(_untrained("gan", unlabelled), n=8)
