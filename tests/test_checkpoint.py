import json

import pytest
import torch
from safetensors import safe_open

from gancli.checkpoint import find_generator, load_generator
from gancli.errors import GancliError
from gancli.recipes import Config

from conftest import invoke


def test_run_directory_layout(tiny_run):
    assert (tiny_run / "config.json").is_file()
    steps = sorted(p.name for p in (tiny_run / "checkpoints").iterdir())
    assert steps == ["step-0000002", "step-0000004"]
    files = {p.name for p in (tiny_run / "checkpoints" / "step-0000004").iterdir()}
    assert files == {"generator.safetensors", "generator_ema.safetensors",
                     "discriminator.safetensors", "optimizer_g.safetensors",
                     "optimizer_d.safetensors", "training_state.safetensors", "state.json"}
    assert (tiny_run / "samples" / "step-0000004.png").is_file()
    lines = (tiny_run / "metrics.jsonl").read_text().splitlines()
    assert [json.loads(l)["step"] for l in lines] == [2, 4]
    assert {"d_loss", "g_loss", "info_ce", "images_per_s"} <= set(json.loads(lines[-1]))
    # No temporary or hidden files, bar the run lock (kept on purpose: gancli/train/lock.py).
    assert not list(tiny_run.rglob("*.tmp*"))
    assert [p.name for p in tiny_run.rglob(".*")] == [".gancli-lock"]


def test_generator_metadata_round_trip(tiny_run):
    f = find_generator(tiny_run)
    assert f.name == "generator_ema.safetensors" and f.parent.name == "step-0000004"
    with safe_open(str(f), framework="pt") as h:
        meta = h.metadata()
    assert meta["model"] == "infogan" and meta["step"] == "4" and meta["ema"] == "true"
    cfg = Config.from_json(meta["config"])
    run_cfg = Config.from_dict(json.loads((tiny_run / "config.json").read_text())["config"])
    assert cfg == run_cfg
    g = load_generator(f)
    assert g.config == cfg and g.step == 4 and g.ema
    raw = load_generator(tiny_run, ema=False, step=2)
    assert raw.path.name == "generator.safetensors" and raw.step == 2 and not raw.ema


def test_loading_from_run_step_dir_or_file_gives_same_generator(tiny_run):
    step_dir = tiny_run / "checkpoints" / "step-0000004"
    a, b, c = (load_generator(p) for p in (tiny_run, step_dir, step_dir / "generator_ema.safetensors"))
    lat = a.spec.sample(3, torch.Generator().manual_seed(0))
    with torch.no_grad():
        assert torch.equal(a.generator(lat), b.generator(lat))
        assert torch.equal(a.generator(lat), c.generator(lat))


def test_corrupt_and_mismatched_checkpoints(tiny_run, tmp_path):
    bad = tmp_path / "bad.safetensors"
    bad.write_bytes(b"\x10\x00\x00\x00\x00\x00\x00\x00{not json")
    with pytest.raises(GancliError, match="not a readable safetensors"):
        load_generator(bad)
    # a discriminator file is a safetensors file, but not a generator
    with pytest.raises(GancliError, match="not a gancli generator"):
        load_generator(tiny_run / "checkpoints" / "step-0000004" / "discriminator.safetensors")
    # a generator whose tensors do not fit its config
    from gancli.files import write_safetensors
    src = find_generator(tiny_run)
    with safe_open(str(src), framework="pt") as h:
        meta = h.metadata()
        tensors = {k: h.get_tensor(k) for k in h.keys()}
    tensors.pop(next(iter(tensors)))
    write_safetensors(tmp_path / "mismatch.safetensors", tensors, meta)
    with pytest.raises(GancliError, match="does not match"):
        load_generator(tmp_path / "mismatch.safetensors")
    r = invoke("sample", tmp_path / "mismatch.safetensors")
    assert r.exit_code == 2 and "does not match" in r.stderr and "Traceback" not in r.output
    r = invoke("sample", tmp_path / "nothing-here")
    assert r.exit_code == 2 and "no such run" in r.stderr
