"""Evaluation while training: train --eval-every writes metrics.jsonl lines and checkpoints/best."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from conftest import TINY_RECIPE, invoke
from gancli.errors import GancliError
from gancli.evaluate import make_evaluator
from gancli.recipes import resolve

# Two steps, an evaluation after each (training is the slow part on a busy CPU).
EVAL_RECIPE = (TINY_RECIPE.replace("steps = 4", "steps = 2")
               .replace("checkpoint_every = 2", "checkpoint_every = 100\neval_samples = 40"))


@pytest.fixture(scope="module")
def eval_recipe(tmp_path_factory) -> Path:
    p = tmp_path_factory.mktemp("eval") / "tiny-eval.toml"
    p.write_text(EVAL_RECIPE)
    return p


@pytest.fixture(scope="module")
def quick_classifier(eval_recipe, tmp_path_factory):
    """Cache a barely trained classifier where the evaluator's load_or_train looks."""
    from gancli.classifier import load_or_train

    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("GANCLI_CACHE", str(tmp_path_factory.getbasetemp() / "cache"))
        return load_or_train(resolve("infogan", str(eval_recipe)).data, "cpu", epochs=0.2)


def _records(run: Path, kind: str) -> list[dict]:
    lines = (run / "metrics.jsonl").read_text().splitlines()
    return [r for r in map(json.loads, lines) if r.get("kind") == kind and r.get("eval")]


def test_train_eval_every_scores_and_keeps_best(tmp_path, eval_recipe, quick_classifier):
    run = tmp_path / "run"
    r = invoke("train", "infogan", "--recipe", eval_recipe, "--out", run, "--eval-every", "1",
               "--no-progress")
    assert r.exit_code == 0, r.output
    recs = _records(run, "score")
    assert [x["step"] for x in recs] == [1, 2]
    assert all(x["key_metric"] == "code_accuracy" and x["n"] == 40 for x in recs)
    assert recs[0]["best"] is True  # the first evaluation is always the best so far
    best = run / "checkpoints" / "best"
    assert (best / "generator.safetensors").is_file() and (best / "state.json").is_file()
    best_step = max((x for x in recs if x["best"]), key=lambda x: x["step"])["step"]
    assert json.loads((best / "state.json").read_text())["step"] == best_step
    assert "eval step 1: code_accuracy=" in r.stdout
    # checkpoint_every is 100: only the final step and best exist, and "latest" ignores best
    assert sorted(p.name for p in (run / "checkpoints").iterdir()) == ["best", "step-0000002"]


def test_train_eval_metric_fid_with_a_stand_in_extractor(tmp_path, eval_recipe, monkeypatch):
    import test_fid  # registers the stand-in pixel extractor with torch-fidelity

    monkeypatch.setenv("GANCLI_FEATURE_EXTRACTOR", test_fid.STANDIN)
    run = tmp_path / "run"
    r = invoke("train", "infogan", "--recipe", eval_recipe, "--out", run, "--eval-every", "1",
               "--eval-metric", "fid", "--no-progress")
    assert r.exit_code == 0, r.output
    recs = _records(run, "fid")
    assert [x["step"] for x in recs] == [1, 2] and all(x["fid"] >= 0 for x in recs)
    assert "-n40-" in recs[0]["reference_cache"]  # the reference is as small as the sample
    assert (run / "checkpoints" / "best" / "generator_ema.safetensors").is_file()


class FakeAccelerator:
    def __init__(self, main: bool) -> None:
        self.is_main_process, self.waits = main, 0
        import torch

        self.device = torch.device("cpu")

    def wait_for_everyone(self) -> None:
        self.waits += 1


def _scripted(monkeypatch, cfg, values):
    ev = make_evaluator(cfg, print_fn=lambda s: None)
    it = iter(values)
    monkeypatch.setattr(ev, "_images", lambda G, device: None)   # made by every process
    monkeypatch.setattr(ev, "_figures", lambda step, G, images, device: {"kind": ev.metric,
                                                                          ev.key: next(it)})
    return ev


def test_best_follows_the_metric_direction_and_survives_resume(tmp_path, monkeypatch, eval_recipe):
    import torch

    G = torch.nn.Linear(1, 1)
    saved: list[int] = []

    def checkpoint(step, name=None):
        assert name == "best"
        saved.append(step)
        (tmp_path / "checkpoints" / "best").mkdir(parents=True, exist_ok=True)
        return tmp_path / "checkpoints" / "best"

    monkeypatch.setenv("GANCLI_FEATURE_EXTRACTOR", "anything")  # no Inception check for fid
    fid_cfg = resolve("infogan", str(eval_recipe), {"eval_metric": "fid", "eval_every": 1})
    ev = _scripted(monkeypatch, fid_cfg, [5.0, 7.0, 3.0])
    acc = FakeAccelerator(main=True)
    for step in (1, 2, 3):
        ev(step=step, generator=G, checkpoint=checkpoint, accelerator=acc, run_dir=tmp_path)
    assert saved == [1, 3] and acc.waits == 3  # lower FID is better
    assert G.training  # the training mode is put back

    # a resumed run remembers the best FID (3.0) from metrics.jsonl
    ev2 = _scripted(monkeypatch, fid_cfg, [4.0, 2.0])
    for step in (4, 5):
        ev2(step=step, generator=G, checkpoint=checkpoint, accelerator=acc, run_dir=tmp_path)
    assert saved == [1, 3, 5]

    score_cfg = resolve("infogan", str(eval_recipe), {"eval_every": 1})
    ev3 = _scripted(monkeypatch, score_cfg, [0.2, 0.1, 0.5])
    assert ev3.key == "code_accuracy" and ev3.higher
    saved.clear()
    (tmp_path / "checkpoints" / "best").rmdir()
    for step in (1, 2, 3):
        ev3(step=step, generator=G, checkpoint=checkpoint, accelerator=acc, run_dir=tmp_path)
    assert saved == [1, 3]  # higher accuracy is better


def test_other_processes_make_their_share_then_wait(tmp_path, eval_recipe, monkeypatch):
    """A non-main process takes part in generating the images (generate_shared), then waits:
    it scores nothing, writes nothing and keeps no checkpoint."""
    import gancli.generate
    from gancli.models import get_family

    cfg = resolve("infogan", str(eval_recipe), {"eval_every": 1})
    family = get_family("infogan")
    G, _ = family.build(cfg, family.latent_spec(cfg))
    made = []
    real = gancli.generate.generate_shared
    monkeypatch.setattr(gancli.generate, "generate_shared",
                        lambda *a, **k: made.append(1) or real(*a, **k))
    ev = make_evaluator(cfg)
    monkeypatch.setattr(ev, "_figures", lambda *a: pytest.fail("a non-main process scored"))
    acc = FakeAccelerator(main=False)

    def never(*a, **k):
        raise AssertionError("a non-main process wrote a checkpoint")

    ev(step=1, generator=G, checkpoint=never, accelerator=acc, run_dir=tmp_path)
    assert made == [1] and acc.waits == 1 and not (tmp_path / "metrics.jsonl").exists()
    assert G.training   # its training mode is put back


def test_evaluator_refuses_before_training(tmp_path, eval_recipe, monkeypatch):
    import urllib.error

    import torch

    unlabelled = tmp_path / "u.toml"
    unlabelled.write_text(EVAL_RECIPE.replace("num_classes = 10", "num_classes = 0"))
    with pytest.raises(GancliError, match="labels"):
        make_evaluator(resolve("gan", str(unlabelled), {"eval_every": 1}))

    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "torch"))
    monkeypatch.setenv("GANCLI_CACHE", str(tmp_path / "cache"))
    monkeypatch.setattr("gancli.metrics.weights._nvlabs_file", lambda: None)  # no gancli[fid]
    monkeypatch.delenv("GANCLI_INCEPTION_WEIGHTS", raising=False)
    monkeypatch.delenv("GANCLI_FEATURE_EXTRACTOR", raising=False)

    def no_network(*a, **k):
        raise urllib.error.URLError("offline")

    monkeypatch.setattr(torch.hub, "download_url_to_file", no_network)
    with pytest.raises(GancliError, match="weights-inception-2015-12-05-6726825d.pth"):
        make_evaluator(resolve("infogan", str(eval_recipe),
                               {"eval_every": 1, "eval_metric": "fid"}))
