"""Cheap checks before costly work (issue 23): `train`, `fid` and `score` refuse an output or
cache they cannot write, a disk without room for a checkpoint, a missing evaluation split and an
image size the model cannot take, with one `error:` line and exit 2, in well under a second,
before any model is built or data loaded, and with nothing written. Each test builds its own
hostile setting."""

from __future__ import annotations

import json
import os
import shutil
import time
from collections import namedtuple
from pathlib import Path

import pytest

import gancli.checks as checks
from conftest import invoke

Usage = namedtuple("Usage", "total used free")


@pytest.fixture(scope="module", autouse=True)
def _warm(tmp_path_factory):
    # Imports (torch, the families) are paid once, before anything is timed.
    r = invoke("train", "dcgan", "--out", tmp_path_factory.mktemp("warm") / "run", "--dry-run")
    assert r.exit_code == 0, r.output


def no_work(monkeypatch) -> None:
    """Any model build on a real device or data load fails the test: the checks come first."""
    import gancli.train.loop as loop

    def boom(*a, **k):
        raise AssertionError("costly work started before the checks")
    monkeypatch.setattr(loop, "open_dataset", boom)
    monkeypatch.setattr(loop, "_networks", boom)


def refused(args, needle: str) -> float:
    t0 = time.perf_counter()
    r = invoke(*args)
    took = time.perf_counter() - t0
    assert r.exit_code == 2, r.output
    lines = [x for x in r.stderr.splitlines() if x.strip()]
    assert len(lines) == 1 and lines[0].startswith("error:") and needle in lines[0], r.stderr
    assert "Traceback" not in r.output
    # no_work() is what proves the order; the time only guards against a hang (a loaded CI
    # machine makes even a quick refusal slow, so no tight bound: speed belongs in benchmarks)
    assert took < 20.0, f"took {took:.2f} s"
    return took


def test_unwritable_out_parent(tiny_recipe, tmp_path, monkeypatch):
    no_work(monkeypatch)
    parent = tmp_path / "locked"
    parent.mkdir()
    out = parent / "run"
    if os.geteuid() == 0:     # root writes anywhere: simulate the permission the check asks for
        real = os.access
        monkeypatch.setattr(checks.os, "access",
                            lambda p, m: False if Path(p) == parent else real(p, m))
    else:
        parent.chmod(0o500)
    try:
        refused(("train", "infogan", "--recipe", tiny_recipe, "--out", out), "is not writable")
        refused(("train", "infogan", "--recipe", tiny_recipe, "--out", out, "--dry-run"),
                "is not writable")
    finally:
        parent.chmod(0o700)
    assert not out.exists() and list(parent.iterdir()) == []


def test_out_under_a_regular_file(tiny_recipe, tmp_path, monkeypatch):
    no_work(monkeypatch)
    f = tmp_path / "a-file"
    f.write_text("x")
    refused(("train", "infogan", "--recipe", tiny_recipe, "--out", f / "run"), "is a file")


def test_disk_without_room_for_a_checkpoint(tiny_recipe, tmp_path, monkeypatch):
    no_work(monkeypatch)
    monkeypatch.setattr(checks.shutil, "disk_usage", lambda p: Usage(10 ** 9, 10 ** 9, 50_000))
    out = tmp_path / "run"
    refused(("train", "infogan", "--recipe", tiny_recipe, "--out", out), "not enough room")
    assert not out.exists()
    # the estimate: G + EMA + D + Adam's two moments of each, fp32
    g, d = checks.model_sizes(__import__("gancli.recipes", fromlist=["resolve"]).resolve(
        "infogan", str(tiny_recipe), {}))
    assert checks.checkpoint_bytes(g, d) == 4 * (4 * g + 3 * d)


def test_wrong_image_size(tmp_path, monkeypatch):
    no_work(monkeypatch)
    out = tmp_path / "run"
    refused(("train", "dcgan", "--image-size", "31", "--out", out), "image size")
    refused(("train", "infogan", "--image-size", "30", "--out", out, "--dry-run"),
            "divisible by 4")
    assert not out.exists()


FOLDER_RECIPE = """
[data]
source = "imagefolder"
image_size = 16
channels = 3
num_classes = 2
[train]
batch_size = 4
steps = 2
"""


def test_missing_evaluation_split(tmp_path, monkeypatch):
    no_work(monkeypatch)
    data = tmp_path / "pictures"
    for c in ("cats", "dogs"):          # class folders, but no train/ and test/
        (data / c).mkdir(parents=True)
    recipe = tmp_path / "folder.toml"
    recipe.write_text(FOLDER_RECIPE)
    out = tmp_path / "run"
    refused(("train", "cgan", "--recipe", recipe, "--data", data, "--out", out,
             "--eval-every", "2", "--eval-metric", "score"), "has no test split")
    assert not out.exists()
    # with splits in place the same command passes its checks (shown by --dry-run)
    for s in ("train", "test"):
        for c in ("cats", "dogs"):
            (data / s / c).mkdir(parents=True)
    for c in ("cats", "dogs"):
        (data / c).rmdir()
    r = invoke("train", "cgan", "--recipe", recipe, "--data", data, "--out", out,
               "--eval-every", "2", "--eval-metric", "score", "--dry-run")
    assert r.exit_code == 0, r.output
    assert "imagefolder test split present" in r.stderr and "cache writable" in r.stderr


def test_dry_run_says_what_it_checked(tiny_recipe, tmp_path):
    r = invoke("train", "dcgan", "--recipe", tiny_recipe, "--out", tmp_path / "run", "--dry-run")
    assert r.exit_code == 0, r.output
    assert json.loads(r.stdout)["model"] == "dcgan"          # stdout is still the config
    line = r.stderr.strip()
    assert line.startswith("checks: output writable,") and " free, needs ~" in line
    assert "per checkpoint; image size 16 suits dcgan" in line
    assert not (tmp_path / "run").exists()


def test_fid_and_score_check_their_cache_first(tiny_run, tmp_path, monkeypatch):
    f = tmp_path / "a-file"
    f.write_text("x")
    monkeypatch.setenv("GANCLI_CACHE", str(f / "cache"))
    import gancli.classifier as classifier

    def boom(*a, **k):
        raise AssertionError("classifier work started before the checks")
    monkeypatch.setattr(classifier, "load_or_train", boom)
    before = (tiny_run / "metrics.jsonl").read_bytes()
    for args in (("score", tiny_run, "--n", "20"), ("fid", tiny_run, "--n", "20")):
        r = invoke(*args)
        assert r.exit_code == 2, r.output
        lines = [x for x in r.stderr.splitlines() if x.strip()]
        assert len(lines) == 1 and "cannot write the cache" in lines[0] and "is a file" in lines[0]
    assert (tiny_run / "metrics.jsonl").read_bytes() == before
