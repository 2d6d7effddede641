"""gan, cgan, dcgan and r3gan: shapes, one training step, and train -> sample/traverse through
the CLI."""

import shutil
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image
from torch import nn

from conftest import invoke
from gancli.errors import GancliError
from gancli.models import get_family
from gancli.models.dcgan import size_plan
from gancli.recipes import resolve

FAMILIES = ("gan", "cgan", "dcgan", "r3gan")

TINY = """
description = "tiny digits for family tests"
[data]
source = "digits"
image_size = 16
channels = 1
num_classes = {num_classes}
limit = 64
[train]
batch_size = 8
steps = 2
log_every = 1
sample_every = 2
checkpoint_every = 2
[models.gan]
noise_dim = 8
hidden = 32
[models.cgan]
noise_dim = 8
channels = 8
[models.dcgan]
noise_dim = 8
channels = 8
kernel = 4
[models.r3gan]
noise_dim = 8
width = 8
max_width = 16
group_size = 8
"""

_RUNS: dict[str, Path] = {}


def tiny_recipe(directory: Path, num_classes: int = 10) -> Path:
    p = directory / f"tiny{num_classes}.toml"
    if not p.exists():
        p.write_text(TINY.format(num_classes=num_classes))
    return p


def trained(name: str, tmp_path_factory) -> Path:
    """A 2-step run of family `name` on 16 px digits, trained once per session (shared with
    test_interpolate)."""
    if name not in _RUNS:
        root = tmp_path_factory.mktemp(f"{name}-run")
        run = root / "run"
        r = invoke("train", name, "--recipe", tiny_recipe(root), "--out", run, "--no-progress")
        assert r.exit_code == 0, r.output
        _RUNS[name] = run
    return _RUNS[name]


@pytest.fixture(params=FAMILIES)
def family_run(request, tmp_path_factory) -> tuple[str, Path]:
    return request.param, trained(request.param, tmp_path_factory)


@pytest.fixture
def cgan_run(tmp_path_factory) -> Path:
    return trained("cgan", tmp_path_factory)


def tiny_cfg(name: str, size: int = 16, loss: str = "bce", **args):
    cfg = resolve(name, None, {"steps": 1, "loss": loss})
    small = {"gan": {"hidden": 32}, "cgan": {"channels": 8}, "dcgan": {"channels": 8},
             "r3gan": {"width": 8, "max_width": 16, "group_size": 8}}[name]
    return replace(cfg, data=replace(cfg.data, image_size=size),
                   model_args={**cfg.model_args, **small, **args})


def run_d(name: str, D: nn.Module, x: torch.Tensor, lat: dict) -> torch.Tensor:
    return D(x, lat["label"]) if name == "cgan" else D(x)


# ------------------------------------------------------------------------------ networks


@pytest.mark.parametrize("name,size", [(n, s) for n in FAMILIES for s in (16, 28, 32, 64)])
def test_shapes(name, size):
    cfg = tiny_cfg(name, size)
    fam = get_family(name)
    spec = fam.latent_spec(cfg)
    G, D = fam.build(cfg, spec)
    lat = spec.sample(3, torch.Generator().manual_seed(0))
    x = G(lat)
    assert x.shape == (3, 1, size, size) and x.min() >= -1 and x.max() <= 1
    assert run_d(name, D, x, lat).shape == (3,)
    # in-place activations break DDP with two D forwards
    assert not any(getattr(m, "inplace", False) for m in D.modules())


def test_three_channels():
    for name in FAMILIES:
        cfg = tiny_cfg(name, 16)
        cfg = replace(cfg, data=replace(cfg.data, channels=3))
        fam = get_family(name)
        spec = fam.latent_spec(cfg)
        G, D = fam.build(cfg, spec)
        lat = spec.sample(2)
        assert G(lat).shape == (2, 3, 16, 16)
        assert run_d(name, D, G(lat), lat).shape == (2,)


def test_latent_specs():
    gan = get_family("gan").latent_spec(tiny_cfg("gan"))
    assert (gan.noise_dim, gan.noise, gan.codes) == (64, "normal", ())
    dc = get_family("dcgan").latent_spec(tiny_cfg("dcgan"))
    assert (dc.noise_dim, dc.noise, dc.codes) == (100, "uniform", ())
    cg = get_family("cgan").latent_spec(tiny_cfg("cgan"))
    assert [(c.name, c.size, c.role) for c in cg.codes] == [("label", 10, "label")]


def test_dcgan_layout():
    assert size_plan(64) == (4, 4) and size_plan(32) == (4, 3) and size_plan(28) == (7, 2)
    with pytest.raises(GancliError, match="s\\*2\\^n"):
        size_plan(27)
    cfg = tiny_cfg("dcgan", 64)
    G, D = get_family("dcgan").build(cfg, get_family("dcgan").latent_spec(cfg))
    ups = [m for m in G.modules() if isinstance(m, nn.ConvTranspose2d)]
    convs = [m for m in D.modules() if isinstance(m, nn.Conv2d)]
    assert len(ups) == 4 and len(convs) == 4          # 4x4 -> 64x64 in four doublings
    assert G.fc.out_features == 4 * 4 * 8 * 8         # FC to 4x4x(8ch), ch = 8 here
    assert ups[0].kernel_size == (5, 5)                # the text's 5x5 (the digits recipe)
    # BN after every D conv but the first
    body = list(D.net)
    assert isinstance(body[1], nn.LeakyReLU) and not isinstance(body[1], nn.BatchNorm2d)
    assert sum(isinstance(m, nn.BatchNorm2d) for m in D.modules()) == 3
    assert G.fc.weight.std().item() == pytest.approx(0.02, rel=0.2)   # N(0, 0.02)
    k4 = get_family("dcgan").build(tiny_cfg("dcgan", 32, kernel=4),
                                   get_family("dcgan").latent_spec(cfg))[0]
    assert k4(get_family("dcgan").latent_spec(cfg).sample(2)).shape == (2, 1, 32, 32)
    with pytest.raises(GancliError, match="kernel"):
        get_family("dcgan").build(tiny_cfg("dcgan", 32, kernel=3), None)


def test_cgan_label_reaches_both_networks():
    cfg = tiny_cfg("cgan")
    fam = get_family("cgan")
    spec = fam.latent_spec(cfg)
    G, D = fam.build(cfg, spec)
    G.eval()
    D.eval()
    lat = spec.sample(4, torch.Generator().manual_seed(0))
    x3 = G(spec.fix(lat, "label", 3))
    x5 = G(spec.fix(lat, "label", 5))
    assert not torch.allclose(x3, x5)
    # a soft one-hot label is the same input as the integer label
    soft = dict(lat, label=torch.nn.functional.one_hot(torch.full((4,), 3), 10).float())
    assert torch.allclose(G(soft), x3, atol=1e-6)
    # projection D: the same image scores differently under different labels
    y3, y5 = torch.full((4,), 3), torch.full((4,), 5)
    assert not torch.allclose(D(x3, y3), D(x3, y5))
    # no BatchNorm in D: one image's score does not depend on the rest of the batch
    assert not any(isinstance(m, nn.modules.batchnorm._BatchNorm) for m in D.modules())
    assert torch.allclose(D(x3[:1], y3[:1]), D(x3, y3)[:1], atol=1e-5)


def test_cgan_needs_labels():
    cfg = tiny_cfg("cgan")
    with pytest.raises(GancliError, match="needs a labelled data set"):
        get_family("cgan").latent_spec(replace(cfg, data=replace(cfg.data, num_classes=0)))
    fam = get_family("cgan")
    spec = fam.latent_spec(cfg)
    G, D = fam.build(cfg, spec)
    lat = spec.sample(2)
    with pytest.raises(GancliError, match="needs labels"):
        fam.d_loss(D, torch.zeros(2, 1, 16, 16), None, G(lat).detach(), lat, cfg)


@pytest.mark.parametrize("name", FAMILIES)
@pytest.mark.parametrize("loss", ["bce", "hinge"])
def test_one_step_moves_the_loss(name, loss):
    torch.manual_seed(0)
    cfg = tiny_cfg(name, loss=loss)
    fam = get_family(name)
    spec = fam.latent_spec(cfg)
    G, D = fam.build(cfg, spec)
    real = torch.rand(8, 1, 16, 16) * 2 - 1
    labels = torch.arange(8) % 10
    lat = spec.sample(8, torch.Generator().manual_seed(1), labels=labels)
    fake = G(lat)
    opt_d = torch.optim.Adam(D.parameters(), lr=1e-3, betas=(0.5, 0.999))
    before, logs = fam.d_loss(D, real, labels, fake.detach(), lat, cfg)
    assert {"d_loss", "d_real", "d_fake"} <= set(logs)
    opt_d.zero_grad()
    before.backward()
    opt_d.step()
    after, _ = fam.d_loss(D, real, labels, fake.detach(), lat, cfg)
    assert after.item() < before.item()
    # G's step: D frozen, gradients reach G only
    D.requires_grad_(False)
    g_loss, g_logs = fam.g_loss(D, fake, lat, cfg)
    g_loss.backward()
    assert "g_loss" in g_logs
    assert all(p.grad is not None for p in G.parameters() if p.requires_grad)


# ------------------------------------------------------------------------------ CLI


def test_train_sample_traverse(family_run, tmp_path):
    name, run = family_run
    assert (run / "checkpoints" / "step-0000002" / "generator_ema.safetensors").is_file()
    assert (run / "samples" / "step-0000002.png").is_file()
    assert (run / "metrics.jsonl").read_text().count("d_loss") == 2
    r = invoke("sample", run, "--n", 6, "--out", tmp_path / "s.npz")
    assert r.exit_code == 0, r.output
    d = np.load(tmp_path / "s.npz")
    assert d["images"].shape == (6, 1, 16, 16) and d["images"].dtype == np.uint8
    walk = "label" if name == "cgan" else "z3"
    r = invoke("traverse", run, "--code", walk, "--rows", 2, "--steps", 3,
               "--out", tmp_path / "t.png")
    assert r.exit_code == 0, r.output
    cols = 10 if name == "cgan" else 3
    assert f"2 rows x {cols} values of {walk}" in r.stdout
    r = invoke("interpolate", run, "--seeds", "3,7", "--steps", 4, "--gif")
    assert r.exit_code == 0, r.output
    assert (run / "interpolations" / "seed3-seed7-slerp.png").is_file()
    assert (run / "interpolations" / "seed3-seed7-slerp.gif").is_file()


@pytest.mark.parametrize("name", FAMILIES)
def test_train_with_no_recipe_uses_embedded_digits(name, tmp_path):
    run = tmp_path / "run"
    r = invoke("train", name, "--steps", 1, "--batch-size", 8, "--limit", 16, "--out", run,
               "--no-progress")
    assert r.exit_code == 0, r.output
    assert "digits" in r.stdout
    from gancli.checkpoint import load_generator
    g = load_generator(run)
    size = resolve(name, None, {"steps": 1}).data.image_size   # the digits recipe's size
    assert g.config.recipe == "digits" and g.config.model == name
    assert g.generator(g.spec.sample(1)).shape == (1, 1, size, size)


def test_cgan_label_and_per_class(cgan_run, tmp_path):
    r = invoke("sample", cgan_run, "--n", 7, "--label", 3, "--out", tmp_path / "l3.npz")
    assert r.exit_code == 0, r.output
    d = np.load(tmp_path / "l3.npz")
    assert d["label"].shape == (7,) and (d["label"] == 3).all()
    # --label is the same as --code label=3
    invoke("sample", cgan_run, "--n", 7, "--code", "label=3", "--out", tmp_path / "c3.npz")
    assert np.array_equal(np.load(tmp_path / "c3.npz")["images"], d["images"])
    r = invoke("sample", cgan_run, "--n", 20, "--per-class", "--out", tmp_path / "pc.npz")
    assert r.exit_code == 0, r.output
    labels = np.load(tmp_path / "pc.npz")["label"]
    assert labels.tolist() == [c for c in range(10) for _ in range(2)]   # one class per row
    r = invoke("sample", cgan_run, "--n", 20, "--per-class", "--out", tmp_path / "pc.png")
    assert r.exit_code == 0 and Image.open(tmp_path / "pc.png").size[1] > 9 * 16
    r = invoke("traverse", cgan_run, "--code", "label", "--rows", 1, "--out", tmp_path / "t.png")
    assert r.exit_code == 0 and "0, 1, 2, 3, 4, 5, 6, 7, 8, 9" in r.stdout


def test_wrong_code_names_list_the_valid_ones(cgan_run, tmp_path_factory):
    r = invoke("traverse", cgan_run, "--code", "c1")
    assert r.exit_code == 2 and "unknown code 'c1'" in r.stderr
    assert "label (categorical, 10 values)" in r.stderr and "z0..z7" in r.stderr
    r = invoke("sample", cgan_run, "--label", 12)
    assert r.exit_code == 2 and "integers 0..9" in r.stderr
    gan = trained("gan", tmp_path_factory)
    r = invoke("sample", gan, "--label", 3)
    assert r.exit_code == 2 and "conditional" in r.stderr
    r = invoke("traverse", gan, "--code", "z8")
    assert r.exit_code == 2 and "z0..z7" in r.stderr


def test_cgan_resumes(cgan_run, tmp_path):
    # D's spectral-norm state (weights and power-iteration vectors) round-trips a checkpoint
    run = tmp_path / "run"
    shutil.copytree(cgan_run, run)
    r = invoke("train", "cgan", "--resume", run, "--steps", 3, "--no-progress")
    assert r.exit_code == 0, r.output
    assert (run / "checkpoints" / "step-0000003").is_dir()


def test_cgan_on_unlabelled_data_is_one_line(tmp_path):
    r = invoke("train", "cgan", "--recipe", tiny_recipe(tmp_path, num_classes=0),
               "--out", tmp_path / "run", "--no-progress")
    assert r.exit_code == 2, r.output
    assert "cgan needs a labelled data set" in r.stderr and "Traceback" not in r.output
    assert len(r.stderr.strip().splitlines()) == 1


def test_list_shows_every_family():
    r = invoke("list")
    assert r.exit_code == 0
    for name in ("gan", "cgan", "infogan", "dcgan", "r3gan"):
        assert any(line.split()[:1] == [name] for line in r.stdout.splitlines())
