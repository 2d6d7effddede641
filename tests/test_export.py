"""`gancli export`: ONNX (checked against torch in onnxruntime) and the lone generator file."""

import builtins
import json
import shutil

import numpy as np
import pytest
import torch

from conftest import invoke
from gancli.checkpoint import load_generator, read_metadata
from gancli.data import to_uint8
from test_families import trained

ALL = ("gan", "cgan", "infogan", "dcgan", "r3gan")


@pytest.fixture(params=ALL)
def family_run(request, tmp_path_factory):
    if request.param == "infogan":   # conftest's tiny InfoGAN: c1 categorical, c2 c3 continuous
        return request.param, request.getfixturevalue("tiny_run")
    return request.param, trained(request.param, tmp_path_factory)


@pytest.fixture
def ort():
    return pytest.importorskip("onnxruntime")


def export(run, *args):
    r = invoke("export", run, *args)
    assert r.exit_code == 0, r.output
    return r.stdout


def session(ort, path):
    return ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])


def test_onnx_matches_torch_for_every_family(family_run, ort, tmp_path):
    import onnx

    name, run = family_run
    g = load_generator(run)                      # the EMA generator, as export takes by default
    names = ["z", *g.spec.names()]
    stdout = export(run, "--out", tmp_path / "u8.onnx")
    assert "max abs difference" in stdout and "batches of 4 and 1" in stdout
    export(run, "--output", "float", "--out", tmp_path / "f.onnx")
    u8, fl = session(ort, tmp_path / "u8.onnx"), session(ort, tmp_path / "f.onnx")

    # inputs named by code, with the promised dtypes, and a dynamic batch axis everywhere
    inputs = {i.name: i for i in u8.get_inputs()}
    assert [i.name for i in u8.get_inputs()] == names
    assert inputs["z"].type == "tensor(float)" and inputs["z"].shape[1] == g.spec.noise_dim
    for c in g.spec.codes:
        assert inputs[c.name].type == ("tensor(int64)" if c.categorical else "tensor(float)")
    for i in u8.get_inputs():
        assert isinstance(i.shape[0], str)
    (out,) = u8.get_outputs()
    assert out.name == "image" and out.type == "tensor(uint8)" and isinstance(out.shape[0], str)
    assert fl.get_outputs()[0].type == "tensor(float)"

    gen = torch.Generator().manual_seed(7)
    for n in (1, 5):
        latents = g.spec.sample(n, gen)
        feed = {k: latents[k].numpy() for k in names}
        with torch.no_grad():
            want = g.generator(latents)
        got8 = u8.run(["image"], feed)[0]
        gotf = fl.run(["image"], feed)[0]
        assert got8.dtype == np.uint8 and got8.shape == (n, *want.shape[1:])
        assert gotf.dtype == np.float32 and gotf.shape == got8.shape
        # one grey level at most (a float difference of 1e-7 can round a pixel the other way)
        assert np.abs(got8.astype(int) - to_uint8(want).numpy().astype(int)).max() <= 1
        assert np.abs(gotf - want.numpy()).max() < 1e-4
        assert gotf.min() >= -1 and gotf.max() <= 1

    # the latent spec and the config travel in the model's metadata
    meta = {p.key: p.value for p in onnx.load(str(tmp_path / "u8.onnx")).metadata_props}
    spec = json.loads(meta["gancli_latent_spec"])
    assert spec["noise_dim"] == g.spec.noise_dim
    assert [c["name"] for c in spec["codes"]] == g.spec.names()
    assert [i["name"] for i in spec["inputs"]] == names
    assert json.loads(meta["gancli_config"])["model"] == name
    assert meta["gancli_model"] == name and meta["gancli_ema"] == "true"
    assert meta["gancli_output"] == "uint8"


def test_default_output_no_ema_and_step(ort, tmp_path, tmp_path_factory):
    import onnx

    run = tmp_path / "run"
    shutil.copytree(trained("dcgan", tmp_path_factory), run)
    stdout = export(run)
    assert (run / "export" / "generator.onnx").is_file() and "dcgan step 2 (EMA)" in stdout
    export(run, "--no-ema", "--step", 2)         # a default output is gancli's own: replaced
    proto = onnx.load(str(run / "export" / "generator.onnx"))
    meta = {p.key: p.value for p in proto.metadata_props}
    assert meta["gancli_ema"] == "false" and meta["gancli_step"] == "2"
    export(run, "--format", "safetensors")
    assert (run / "export" / "generator.safetensors").is_file()
    # a lone generator file exports into export/ beside it
    lone = tmp_path / "lone"
    lone.mkdir()
    shutil.copy(run / "export" / "generator.safetensors", lone / "g.safetensors")
    export(lone / "g.safetensors")
    assert (lone / "export" / "generator.onnx").is_file()


def test_safetensors_export_is_accepted_as_run(family_run, tmp_path):
    name, run = family_run
    exported = tmp_path / f"{name}.safetensors"
    stdout = export(run, "--format", "safetensors", "--out", exported)
    assert "generator file" in stdout
    meta = read_metadata(exported)
    assert meta["model"] == name and meta["ema"] == "true" and "sha256" in meta
    assert json.loads(meta["latent_spec"])["noise_dim"] == load_generator(run).spec.noise_dim
    # one generator, no discriminator or optimiser: smaller than the checkpoint directory
    ckpt = max((run / "checkpoints").glob("step-*"))
    assert exported.stat().st_size < sum(f.stat().st_size for f in ckpt.iterdir()) / 2
    for src, out in ((exported, "a.npz"), (run, "b.npz")):
        r = invoke("sample", src, "--n", 6, "--seed", 3, "--out", tmp_path / out)
        assert r.exit_code == 0, r.output
    a, b = np.load(tmp_path / "a.npz"), np.load(tmp_path / "b.npz")
    assert np.array_equal(a["images"], b["images"])
    code = "label" if name == "cgan" else ("c1" if name == "infogan" else "z0")
    r = invoke("traverse", exported, "--code", code, "--rows", 1, "--steps", 3,
               "--out", tmp_path / "t.png")
    assert r.exit_code == 0, r.output


def test_missing_extra_is_one_line(tiny_run, tmp_path, monkeypatch):
    real_import = builtins.__import__

    def no_onnx(name, *args, **kwargs):
        if name.split(".")[0] in ("onnx", "onnxruntime"):
            raise ImportError(f"No module named '{name}'")
        return real_import(name, *args, **kwargs)

    monkeypatch.setattr(builtins, "__import__", no_onnx)
    r = invoke("export", tiny_run, "--out", tmp_path / "g.onnx")
    assert r.exit_code == 2
    assert r.stderr.strip() == ("error: ONNX export needs the export extra: "
                                "pip install 'gancli[export]'")
    assert not (tmp_path / "g.onnx").exists()
    # safetensors needs neither
    r = invoke("export", tiny_run, "--format", "safetensors", "--out", tmp_path / "g.safetensors")
    assert r.exit_code == 0, r.output


def test_existing_out_is_refused_without_overwrite(tiny_run, ort, tmp_path):
    import onnx

    for fmt in ("onnx", "safetensors"):
        target = tmp_path / f"g.{fmt}"
        target.write_bytes(b"keep")
        r = invoke("export", tiny_run, "--format", fmt, "--out", target)
        assert r.exit_code == 2 and "exists: pass --overwrite" in r.stderr
        assert len(r.stderr.strip().splitlines()) == 1 and target.read_bytes() == b"keep"
        export(tiny_run, "--format", fmt, "--out", target, "--overwrite")
    onnx.checker.check_model(onnx.load(str(tmp_path / "g.onnx")))
    assert load_generator(tmp_path / "g.safetensors").config.model == "infogan"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["g.onnx", "g.safetensors"]


def test_a_failed_check_writes_nothing(tiny_run, ort, tmp_path, monkeypatch):
    from gancli import export as E

    monkeypatch.setitem(E.TOLERANCE, "uint8", -1.0)
    r = invoke("export", tiny_run, "--out", tmp_path / "out" / "g.onnx")
    assert r.exit_code == 2 and "differs from the torch generator" in r.stderr
    assert len(r.stderr.strip().splitlines()) == 1
    assert not (tmp_path / "out").exists() or not any((tmp_path / "out").iterdir())


@pytest.mark.parametrize("args,msg", [
    (["--format", "tflite"], "--format must be onnx or safetensors"),
    (["--output", "int16"], "--output must be uint8"),
    (["--format", "safetensors", "--output", "float"], "--output applies to --format onnx only"),
    (["--out", "g.png"], "--format onnx writes a .onnx file"),
    (["--format", "safetensors", "--out", "g.onnx"], "writes a .safetensors file"),
])
def test_bad_options_are_one_line(tiny_run, args, msg):
    r = invoke("export", tiny_run, *args)
    assert r.exit_code == 2 and msg in r.stderr, r.output
    assert len(r.stderr.strip().splitlines()) == 1


def test_no_such_run(tmp_path):
    r = invoke("export", tmp_path / "nothing", "--format", "safetensors")
    assert r.exit_code == 2 and "no such run" in r.stderr
