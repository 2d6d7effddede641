"""r3gan's networks, the rpgan loss, R1 + R2, the schedules, and exact resume with all of them.

The family's shapes, one step and the CLI (sample, traverse, interpolate, export, report) run in
the "every family" tests (test_families, test_interpolate, test_export, test_report)."""

from __future__ import annotations

import json
import math
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from torch import nn

from conftest import invoke
from gancli.errors import GancliError
from gancli.models import get_family
from gancli.models.base import d_adversarial, g_adversarial, real_logits_for_g
from gancli.models.r3gan import Block, Down, Plan, Up
from gancli.recipes import resolve
from gancli.train import augment as A
from gancli.train import schedules as S
from test_families import tiny_cfg, tiny_recipe
from test_resume import assert_identical, resume, run

CPU = torch.device("cpu")


def build(cfg):
    fam = get_family("r3gan")
    spec = fam.latent_spec(cfg)
    return (spec, *fam.build(cfg, spec))


# ------------------------------------------------------------------------------ networks


def test_blocks_start_as_the_identity_and_nothing_normalises():
    torch.manual_seed(0)
    block = Block(16, 2, 8, scale=0.5)
    x = torch.randn(3, 16, 8, 8)
    assert torch.equal(block(x), x)                       # the branch's last conv is zero
    assert block.conv.groups == 4                         # 32 inner channels, groups of 8
    spec, G, D = build(tiny_cfg("r3gan", 32))
    for net in (G, D):
        blocks = [m for m in net.modules() if isinstance(m, Block)]
        assert blocks and all(not b.project.weight.any() and not b.project.bias.any()
                              for b in blocks)
        assert not any(isinstance(m, (nn.modules.batchnorm._BatchNorm, nn.GroupNorm,
                                      nn.LayerNorm, nn.InstanceNorm2d)) for m in net.modules())
        assert not any(isinstance(m, (nn.ConvTranspose2d,)) for m in net.modules())
        assert not any(getattr(m, "stride", (1, 1)) != (1, 1) for m in net.modules()
                       if isinstance(m, nn.Conv2d))        # resampling is the [1,2,1] filter's
        assert all(m.negative_slope == 0.2 and not m.inplace for m in net.modules()
                   if isinstance(m, nn.LeakyReLU))


def test_fixup_scale_follows_the_number_of_blocks():
    cfg = tiny_cfg("r3gan", 32, blocks=2)
    plan = Plan(cfg)
    assert plan.sizes == [4, 8, 16, 32] and plan.widths == [16, 16, 16, 8]
    assert plan.scale == pytest.approx((2 * 4) ** -0.25)   # L = 8 blocks, m = 3 layers
    torch.manual_seed(0)
    wide = Block(64, 4, 16, scale=1.0)
    torch.manual_seed(0)
    scaled = Block(64, 4, 16, scale=plan.scale)
    ratio = scaled.expand.weight.detach().std() / wide.expand.weight.detach().std()
    assert float(ratio) == pytest.approx(plan.scale, rel=1e-5)


def test_resampling_is_the_121_filter():
    ramp = torch.arange(4.0).view(1, 1, 1, 4).expand(1, 2, 4, 4).contiguous()
    up = Up(2)(ramp)
    # linear interpolation between neighbours, the last column repeated
    assert up[0, 0, 0].tolist() == [0, 0.5, 1, 1.5, 2, 2.5, 3, 3]
    flat = torch.full((2, 3, 8, 8), 0.7)
    assert torch.allclose(Up(3)(flat), torch.full((2, 3, 16, 16), 0.7))
    assert torch.allclose(Down(3)(flat), torch.full((2, 3, 4, 4), 0.7))    # no dark border
    x = torch.zeros(1, 1, 4, 4)
    x[0, 0, 2, 2] = 16.0
    assert Down(1)(x)[0, 0].tolist() == [[0, 0], [0, 4]]   # 16 * 2 * 2 / 16 at (1, 1)
    assert not list(Up(3).state_dict())                     # the filter is no weight


def test_image_sizes_and_widths():
    for size, stages in ((16, 3), (28, 3), (32, 4), (64, 5)):
        plan = Plan(tiny_cfg("r3gan", size))
        assert len(plan.sizes) == stages and plan.sizes[-1] == size
    with pytest.raises(GancliError, match="s\\*2\\^n"):
        Plan(tiny_cfg("r3gan", 27))
    with pytest.raises(GancliError, match="one width per stage"):
        Plan(tiny_cfg("r3gan", 16, widths=[8, 8]))
    with pytest.raises(GancliError, match="multiple of group_size"):
        build(tiny_cfg("r3gan", 16, width=12, group_size=16, max_width=12))
    with pytest.raises(GancliError, match="unknown model setting"):
        build(tiny_cfg("r3gan", 16, channels=8))
    spec, G, D = build(tiny_cfg("r3gan", 16, widths=[24, 16, 8]))
    assert G(spec.sample(2)).shape == (2, 1, 16, 16)


def test_conditional_r3gan_honours_labels():
    cfg = tiny_cfg("r3gan", 16, conditional=True)
    spec, G, D = build(cfg)
    assert [(c.name, c.size, c.role) for c in spec.codes] == [("label", 10, "label")]
    lat = spec.sample(4, torch.Generator().manual_seed(0))
    x3, x5 = G(spec.fix(lat, "label", 3)), G(spec.fix(lat, "label", 5))
    assert x3.shape == (4, 1, 16, 16) and not torch.allclose(x3, x5)
    soft = dict(lat, label=F.one_hot(torch.full((4,), 3), 10).float())
    assert torch.allclose(G(soft), x3, atol=1e-6)
    y3, y5 = torch.full((4,), 3), torch.full((4,), 5)
    assert D(x3, y3).shape == (4,) and not torch.allclose(D(x3, y3), D(x3, y5))
    # no batch statistics: one image's score does not depend on the rest of the batch
    assert torch.allclose(D(x3[:1], y3[:1]), D(x3, y3)[:1], atol=1e-5)
    # unconditional by default, even on labelled data
    spec_u, _, D_u = build(tiny_cfg("r3gan", 16))
    assert spec_u.codes == () and D_u(x3).shape == (4,)
    with pytest.raises(GancliError, match="labelled data set"):
        get_family("r3gan").latent_spec(replace(cfg, data=replace(cfg.data, num_classes=0)))


def test_family_defaults_are_r3gans_and_recipes_and_flags_override(tmp_path):
    t = resolve("r3gan", str(tiny_recipe(tmp_path)), {}).train
    assert (t.loss, t.r1, t.r2, t.beta1, t.beta2) == ("rpgan", 1.0, 1.0, 0.0, 0.99)
    assert resolve("dcgan", str(tiny_recipe(tmp_path)), {}).train.loss == "bce"   # others: theirs
    t = resolve("r3gan", str(tiny_recipe(tmp_path)), {"loss": "hinge", "r2": 0.0}).train
    assert (t.loss, t.r1, t.r2) == ("hinge", 1.0, 0.0)
    rec = tmp_path / "own.toml"
    rec.write_text(tiny_recipe(tmp_path).read_text().replace("[train]\n", "[train]\nr1 = 2.0\n"))
    assert resolve("r3gan", str(rec), {}).train.r1 == 2.0         # the recipe's [train] wins


# ------------------------------------------------------------------------------ losses


def test_rpgan_loss_on_hand_made_logits():
    r = torch.tensor([2.0, -1.0, 0.5])
    f = torch.tensor([0.0, 1.0, 0.5])
    d = [math.log1p(math.exp(-(a - b))) for a, b in zip(r.tolist(), f.tolist())]
    g = [math.log1p(math.exp(-(b - a))) for a, b in zip(r.tolist(), f.tolist())]
    assert float(d_adversarial(r, f, "rpgan")) == pytest.approx(sum(d) / 3, rel=1e-6)
    assert float(g_adversarial(f, "rpgan", r)) == pytest.approx(sum(g) / 3, rel=1e-6)
    # only the differences count, pair by pair
    assert float(d_adversarial(r + 5, f + 5, "rpgan")) == pytest.approx(sum(d) / 3, rel=1e-6)
    with pytest.raises(ValueError, match="needs D's logits"):
        g_adversarial(f, "rpgan")


def test_real_logits_for_g_carry_no_graph_and_only_for_rpgan():
    lin = nn.Linear(4, 1)
    real = torch.randn(5, 4)
    out = real_logits_for_g(lambda x: lin(x).squeeze(-1), real, "rpgan")
    assert out.shape == (5,) and not out.requires_grad
    assert real_logits_for_g(lin, real, "bce") is None
    assert real_logits_for_g(lambda x: (lin(x).squeeze(-1), x), real, "rpgan").shape == (5,)
    with pytest.raises(GancliError, match="no real batch"):
        real_logits_for_g(lin, None, "rpgan")


class Quadratic(nn.Module):
    """D(x) = (w . x)^2 / 2: grad_x D = (w . x) w, so ||grad||^2 = (w . x)^2 ||w||^2."""

    def __init__(self, n: int) -> None:
        super().__init__()
        self.w = nn.Parameter(torch.linspace(-1, 1, n))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return (x.flatten(1) @ self.w) ** 2 / 2

    def expected(self, x: torch.Tensor) -> float:
        with torch.no_grad():
            return float(((x.flatten(1) @ self.w) ** 2 * self.w.pow(2).sum()).mean())


def test_r2_and_r1_equal_hand_computed_gradient_norms():
    torch.manual_seed(0)
    D = Quadratic(12)
    real, fake = torch.randn(4, 3, 2, 2), torch.randn(4, 3, 2, 2)
    r2 = A.Penalties(0.0, 3.0, 1, D, False, CPU)
    want = 3.0 / 2 * D.expected(fake)
    assert float(r2(0, real, None, fake).detach()) == pytest.approx(want, rel=1e-5)
    assert set(r2.figures()) == {"r2"}
    both = A.Penalties(2.0, 3.0, 2, D, False, CPU, scale=lambda s: 0.5)
    want = 2 * 0.5 * (2.0 / 2 * D.expected(real) + 3.0 / 2 * D.expected(fake))   # lazy: x2
    assert float(both(4, real, None, fake).detach()) == pytest.approx(want, rel=1e-5)
    assert both(5, real, None, fake) == 0
    figs = both.figures()
    assert float(figs["r1"]) == pytest.approx(0.5 * D.expected(real), rel=1e-5)
    assert float(figs["r2"]) == pytest.approx(0.5 * 1.5 * D.expected(fake), rel=1e-5)
    # D learns from the penalty (a graph through the gradient)
    both(0, real, None, fake).backward()
    assert D.w.grad is not None and D.w.grad.abs().sum() > 0


def test_r2_gives_a_conditional_d_the_fakes_labels():
    seen = []

    def D(x, y):
        seen.append(y)
        return x.flatten(1).pow(2).sum(1)

    real, fake = torch.randn(2, 1, 2, 2), torch.randn(2, 1, 2, 2)
    real_y, fake_y = torch.tensor([1, 2]), torch.tensor([7, 8])
    pen = A.Penalties(1.0, 1.0, 1, D, True, CPU, label_key="label")
    pen(0, real, real_y, fake, {"label": fake_y, "z": None})
    assert [y.tolist() for y in seen] == [[1, 2], [7, 8]]


def test_r1_alone_is_what_it_was():
    D = Quadratic(4)
    real = torch.randn(3, 4)
    old = A.R1(gamma=2.0, every=3, D=D, conditional=False, device=CPU)
    assert float(old(3, real, None).detach()) == pytest.approx(3 * D.expected(real), rel=1e-5)
    assert old(4, real, None) == 0 and set(old.figures()) == {"r1"}
    assert float(A.r1_penalty(D, real).detach()) == pytest.approx(D.expected(real), rel=1e-5)


# ------------------------------------------------------------------------------ schedules


def test_cosine_and_schedule_values_at_given_steps():
    assert S.cosine(1.0, 0.25, 0, 100) == 1.0
    assert S.cosine(1.0, 0.25, 50, 100) == pytest.approx(0.625)
    assert S.cosine(1.0, 0.25, 100, 100) == 0.25 == S.cosine(1.0, 0.25, 10 ** 6, 100)
    quarter = 0.25 + 0.75 * (1 + math.cos(math.pi / 4)) / 2
    assert S.cosine(1.0, 0.25, 25, 100) == pytest.approx(quarter)
    assert S.cosine(3.0, 0.0, 7, 0) == 3.0            # no length: constant
    cfg = resolve("r3gan", None, {"steps": 10, "decay_steps": 100, "lr_g": 4e-4,
                                  "lr_d": 2e-4, "r1": 1.0, "r2": 0.5, "gamma_decay_to": 0.1})
    sched = S.Schedules(cfg.train, 64)
    t = cfg.train
    assert (t.beta2_start, t.lr_decay_to, t.gamma_decay_to) == (0.9, 0.25, 0.1)
    assert sched.lr(0) == (4e-4, 2e-4)
    assert sched.lr(50) == pytest.approx((4e-4 * 0.625, 2e-4 * 0.625))
    assert sched.beta2(0) == 0.9 and sched.beta2(100) == 0.99
    assert sched.beta2(50) == pytest.approx(0.945)
    assert sched.gamma_scale(100) == pytest.approx(0.1)
    figs = sched.figures(50)
    assert figs["lr_g"] == pytest.approx(2.5e-4) and figs["gamma_r1"] == pytest.approx(0.55)
    assert figs["gamma_r2"] == pytest.approx(0.275) and figs["beta2"] == pytest.approx(0.945)
    assert sched.figures(50, rollbacks=1)["lr_d"] == pytest.approx(2e-4 * 0.625 / 2)
    opt_g = torch.optim.Adam([nn.Parameter(torch.zeros(2))], lr=1.0, betas=(0.0, 0.5))
    opt_d = torch.optim.Adam([nn.Parameter(torch.zeros(2))], lr=1.0, betas=(0.0, 0.5))
    sched.apply(100, opt_g, opt_d, rollbacks=2)
    assert opt_g.param_groups[0]["lr"] == pytest.approx(4e-4 * 0.25 / 4)
    assert opt_d.param_groups[0]["betas"] == (0.0, 0.99)
    off = S.Schedules(resolve("dcgan", None, {"steps": 1}).train, 64)
    opt_g.param_groups[0]["lr"] = 0.123
    off.apply(5, opt_g, opt_d)
    assert opt_g.param_groups[0]["lr"] == 0.123 and off.figures(5) == {}


def test_ema_half_life_and_its_ramp():
    t = resolve("r3gan", None, {"steps": 1, "ema_half_life": 6400.0, "ema_ramp": 0.5}).train
    assert S.ema_decay(t, 1000, 64) == pytest.approx(0.5 ** (64 / 6400))   # past the ramp
    assert S.ema_decay(t, 10, 64) == pytest.approx(0.5 ** (64 / 320))      # 0.5 x 640 images
    flat = replace(t, ema_ramp=0.0)
    assert S.ema_decay(flat, 10, 64) == pytest.approx(0.5 ** 0.01)
    assert S.Schedules(flat, 64).ema_decay_fn()(3) == pytest.approx(0.5 ** 0.01)
    assert S.Schedules(replace(t, ema_half_life=0.0), 64).ema_decay_fn() is None


@pytest.mark.parametrize("flags,what", [
    (["--r2", "-1"], "--r2"),
    (["--loss", "wgan"], "--loss"),
])
def test_bad_values_are_one_line(flags, what, tmp_path):
    r = invoke("train", "r3gan", "--recipe", tiny_recipe(tmp_path), *flags, "--out",
               tmp_path / "r", "--no-progress")
    assert r.exit_code == 2 and what in r.stderr and "Traceback" not in r.output
    assert len(r.stderr.strip().splitlines()) == 1


@pytest.mark.parametrize("extra,what", [("lr_decay_to = 0.5", "decay_steps"),
                                        ("beta2_start = 0.9", "decay_steps"),
                                        ("ema_ramp = 0.1", "ema_half_life"),
                                        ("decay_steps = -3", "decay_steps"),
                                        ("gamma_decay_to = 2.0", "gamma_decay_to"),
                                        ("conditional = 3", "conditional")])
def test_bad_schedule_settings_are_one_line(extra, what, tmp_path):
    rec = tmp_path / "bad.toml"
    rec.write_text(tiny_recipe(tmp_path).read_text().replace("[models.r3gan]\n",
                                                             f"[models.r3gan]\n{extra}\n"))
    r = invoke("train", "r3gan", "--recipe", rec, "--out", tmp_path / "r", "--no-progress")
    assert r.exit_code == 2 and what in r.stderr and "Traceback" not in r.output
    assert len(r.stderr.strip().splitlines()) == 1


# ------------------------------------------------------------------------------ the loop

RESUME = """
description = "r3gan resume"
[data]
source = "digits"
image_size = 16
channels = 1
num_classes = 10
limit = 64
[train]
batch_size = 8
steps = 18
log_every = 4
sample_every = 6
checkpoint_every = 6
[models.r3gan]
noise_dim = 8
width = 8
max_width = 16
group_size = 8
conditional = {conditional}
r1 = 0.5
r2 = 0.25
r1_every = 3
beta2_start = 0.9
decay_steps = 12
lr_decay_to = 0.25
gamma_decay_to = 0.1
ema_half_life = 200.0
ema_ramp = 0.5
"""


def resume_recipe(tmp_path: Path, conditional: bool = False) -> Path:
    p = tmp_path / f"r3gan-{conditional}.toml"
    p.write_text(RESUME.format(conditional=str(conditional).lower()))
    return p


def records(run_dir: Path) -> list[dict]:
    return [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]


def test_resume_is_bit_exact_with_schedules_and_lazy_penalties(tmp_path):
    rec = resume_recipe(tmp_path)
    straight = run("r3gan", rec, tmp_path / "straight", 18)
    parted = run("r3gan", rec, tmp_path / "parted", 11)
    resume(parted, 18)
    assert_identical(straight, parted)
    a, b = records(straight), records(parted)
    keys = ("step", "lr_g", "lr_d", "beta2", "gamma_r1", "gamma_r2", "ema_beta")
    # (the parted run also logged its last step before the stop, 11)
    assert [[r[k] for k in keys] for r in a] == [[r[k] for k in keys] for r in b
                                                 if r["step"] != 11]
    # the values are the schedule's at the step each logged update used
    sched = S.Schedules(resolve("r3gan", str(rec), {}).train, 8)
    for r in a:
        assert r["lr_g"] == pytest.approx(sched.lr(r["step"] - 1)[0], rel=1e-5)
        assert r["gamma_r2"] == pytest.approx(0.25 * sched.gamma_scale(r["step"] - 1), rel=1e-5)
    assert a[0]["beta2"] < a[-1]["beta2"] == 0.99 and a[-1]["lr_g"] == pytest.approx(5e-5)
    assert {"r1", "r2", "d_loss", "g_loss"} <= set(a[-1])
    state = json.loads((parted / "checkpoints" / "step-0000018" / "state.json").read_text())
    group = state["optimizers"]["optimizer_g"]["param_groups"][0]
    assert group["betas"] == [0.0, 0.99] and group["lr"] == pytest.approx(5e-5)


def test_a_conditional_r3gan_run_samples_by_label(tmp_path):
    out = run("r3gan", resume_recipe(tmp_path, conditional=True), tmp_path / "c", 4,
              checkpoint_every=4)
    r = invoke("sample", out, "--n", 6, "--label", 3, "--out", tmp_path / "l3.npz")
    assert r.exit_code == 0, r.output
    d = np.load(tmp_path / "l3.npz")
    assert d["images"].shape == (6, 1, 16, 16) and (d["label"] == 3).all()
    r = invoke("traverse", out, "--code", "label", "--rows", 1, "--out", tmp_path / "t.png")
    assert r.exit_code == 0 and "0, 1, 2, 3, 4, 5, 6, 7, 8, 9" in r.stdout


@pytest.mark.parametrize("model", ["gan", "cgan", "infogan", "dcgan"])
def test_the_other_families_train_with_rpgan_and_r2(model, tmp_path):
    from test_resume import recipe

    out = run(model, recipe(tmp_path), tmp_path / model, 3, loss="rpgan", r1=0.5, r2=0.5,
              log_every=3, checkpoint_every=3)
    last = records(out)[-1]
    assert last["step"] == 3 and last["r1"] > 0 and last["r2"] > 0
    assert all(math.isfinite(last[k]) for k in ("d_loss", "g_loss"))
    from gancli.checkpoint import read_run_config

    assert read_run_config(out).train.loss == "rpgan"
