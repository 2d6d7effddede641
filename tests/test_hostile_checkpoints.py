"""Generator files and run files from a stranger: a crafted claim is refused with one line, in
well under a second, before anything the size of the claim is allocated."""

from __future__ import annotations

import json
import shutil
import time
import tracemalloc
from pathlib import Path

import pytest
from safetensors import safe_open

from gancli.files import write_safetensors
from conftest import invoke


def _generator(run: Path) -> Path:
    return sorted((run / "checkpoints").glob("step-*"))[-1] / "generator_ema.safetensors"


def _rewrite(file: Path, edit) -> None:
    """Rewrite a generator file's metadata through `edit(meta, config)`, re-signed with gancli's
    own checksum, as a careful forger would."""
    with safe_open(str(file), framework="pt") as f:
        meta = dict(f.metadata())
        tensors = {k: f.get_tensor(k) for k in f.keys()}
    cfg = json.loads(meta["config"])
    edit(meta, cfg)
    meta["config"] = json.dumps(cfg)
    meta.pop("gancli_sha256", None)
    meta = {k: v for k, v in meta.items() if "sha" not in k and "digest" not in k}
    write_safetensors(file, tensors, meta)


@pytest.fixture
def run(tiny_run, tmp_path) -> Path:
    copy = tmp_path / "run"
    shutil.copytree(tiny_run, copy)
    return copy


def _refused(*args, within: float = 1.0) -> str:
    tracemalloc.start()
    t0 = time.perf_counter()
    r = invoke(*args)
    took = time.perf_counter() - t0
    _, peak = tracemalloc.get_traced_memory()
    tracemalloc.stop()
    assert r.exit_code == 2, r.output
    assert "internal error" not in r.output and "Traceback" not in r.output
    assert took < within, took
    assert peak < 200 * 2 ** 20, peak     # python-side allocations stay small
    return r.output


@pytest.mark.parametrize("args", [{"noise_dim": 4096, "continuous": 64},
                                  {"categorical": [1000] * 16}])
def test_huge_claimed_generator_is_refused_before_allocation(run, tmp_path, args):
    def edit(meta, cfg):
        cfg["model_args"].update(args)
        cfg["data"]["image_size"] = 1024
    _rewrite(_generator(run), edit)
    out = _refused("sample", str(run), "--out", str(tmp_path / "s.png"))
    assert "generator_ema.safetensors" in out


def test_width_a_million_is_refused(run, tmp_path):
    def edit(meta, cfg):
        cfg["model_args"]["noise_dim"] = 10 ** 6
    _rewrite(_generator(run), edit)
    out = _refused("sample", str(run), "--out", str(tmp_path / "s.png"))
    assert "noise_dim" in out


def test_the_parameter_bound_itself(run, monkeypatch, tmp_path):
    # a config inside every per-field range whose product is too large: the meta count refuses it
    import gancli.checkpoint as ck
    monkeypatch.setattr(ck, "MAX_GENERATOR_PARAMS", 1000)
    out = _refused("sample", str(run), "--out", str(tmp_path / "s.png"))
    assert "parameters" in out


def test_the_activation_bound_itself(run, monkeypatch, tmp_path):
    import gancli.checkpoint as ck
    monkeypatch.setattr(ck, "MAX_GENERATOR_ACTIVATIONS", 10)
    out = _refused("sample", str(run), "--out", str(tmp_path / "s.png"))
    assert "forward pass" in out


@pytest.mark.parametrize("step", ["9" * 5000, "-3", "1e9", "١٢"])
def test_bad_step_metadata(run, tmp_path, step):
    _rewrite(_generator(run), lambda meta, cfg: meta.__setitem__("step", step))
    out = _refused("sample", str(run), "--out", str(tmp_path / "s.png"))
    assert "'step'" in out


@pytest.mark.parametrize("value", ["9" * 5000, "-1", "Infinity", "1e999", '"64"', "[64]",
                                   "{}"])
def test_bad_config_json_field(run, value):
    f = run / "config.json"
    d = json.loads(f.read_text())
    d["config"]["data"]["image_size"] = "@@"
    f.write_text(json.dumps(d).replace('"@@"', value))  # raw JSON text: 5,000 digits included
    from gancli.checkpoint import read_run_config
    from gancli.errors import GancliError
    with pytest.raises(GancliError, match="config.json"):
        read_run_config(run)


@pytest.mark.parametrize("step", [10 ** 20, -1, "7", 1.5, None])
def test_bad_state_json_step(run, step):
    from gancli.checkpoint import load_training_state
    from gancli.errors import GancliError
    d = sorted((run / "checkpoints").glob("step-*"))[-1]
    s = json.loads((d / "state.json").read_text())
    s["step"] = step
    (d / "state.json").write_text(json.dumps(s))
    with pytest.raises(GancliError, match="state.json"):
        load_training_state(d)
