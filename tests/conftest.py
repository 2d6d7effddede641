from __future__ import annotations

from pathlib import Path

import pytest
from typer.testing import CliRunner

from gancli.cli import app

REPO = Path(__file__).resolve().parents[1]
MNIST_RAW = REPO.parent / "shared" / "data" / "MNIST" / "raw"

TINY_RECIPE = """
description = "tiny digits for tests"
[data]
source = "digits"
image_size = 16
channels = 1
num_classes = 10
[train]
batch_size = 16
steps = 4
log_every = 2
sample_every = 2
checkpoint_every = 2
[models.infogan]
lr_g = 1e-3
lr_d = 2e-4
noise_dim = 8
categorical = [10]
continuous = 2
"""


@pytest.fixture(autouse=True)
def _isolated_cache(tmp_path_factory, monkeypatch):
    # Nothing a test writes lands in the user's cache.
    monkeypatch.setenv("GANCLI_CACHE", str(tmp_path_factory.getbasetemp() / "cache"))


@pytest.fixture(scope="session")
def tiny_recipe(tmp_path_factory) -> Path:
    p = tmp_path_factory.mktemp("recipes") / "tiny.toml"
    p.write_text(TINY_RECIPE)
    return p


def invoke(*args: str):
    """Run the CLI in-process; returns click's Result (exit_code, stdout, stderr)."""
    return CliRunner().invoke(app, [str(a) for a in args], catch_exceptions=False)


@pytest.fixture(scope="session")
def tiny_run(tiny_recipe, tmp_path_factory) -> Path:
    run = tmp_path_factory.mktemp("runs") / "tiny"
    r = invoke("train", "infogan", "--recipe", tiny_recipe, "--out", run, "--no-progress")
    assert r.exit_code == 0, r.output
    return run


@pytest.fixture
def mnist_raw() -> Path:
    if not (MNIST_RAW / "train-images-idx3-ubyte.gz").is_file():
        pytest.skip("real MNIST not present (../shared/data/MNIST/raw)")
    return MNIST_RAW
