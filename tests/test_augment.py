"""Training with little data: DiffAugment's ops, ADA's adaptive p, R1, and the loop applying them
to every image D sees."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from conftest import invoke
from gancli.errors import GancliError
from gancli.models import get_family
from gancli.recipes import resolve
from gancli.train import augment as A
from gancli.train import train
from test_resume import recipe


def gen(seed: int = 0) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


def batch(channels: int = 3, dtype=torch.float32, n: int = 6) -> torch.Tensor:
    return (torch.rand(n, channels, 16, 16, generator=gen(99)) * 2 - 1).to(dtype)


@pytest.mark.parametrize("name", list(A.OPS))
@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
def test_each_op_keeps_shape_and_dtype_and_passes_gradients(name, dtype):
    x = batch(dtype=dtype).requires_grad_(True)
    y = A.OPS[name](x, gen())
    assert y.shape == x.shape and y.dtype == dtype
    (y.float() * torch.linspace(-1, 1, y.numel()).view(y.shape)).sum().backward()
    assert x.grad is not None and x.grad.abs().sum() > 0


@pytest.mark.parametrize("name", list(A.OPS))
def test_each_op_is_the_same_for_the_same_seed_and_changes_the_images(name):
    x = batch()
    a, b, c = A.OPS[name](x, gen(1)), A.OPS[name](x, gen(1)), A.OPS[name](x, gen(2))
    assert torch.equal(a, b)
    assert not torch.equal(a, x) and not torch.equal(a, c)


@pytest.mark.parametrize("name,kw", [("brightness", {"strength": 0}), ("saturation", {"strength": 0}),
                                     ("contrast", {"strength": 0}), ("translation", {"ratio": 0}),
                                     ("cutout", {"ratio": 0})])
def test_zero_strength_is_the_identity(name, kw):
    x = batch()
    assert torch.equal(A.OPS[name](x, gen(), **kw), x)


def test_saturation_is_skipped_for_grey_images():
    grey = batch(channels=1)
    assert torch.equal(A.saturation(grey, gen()), grey)
    assert not torch.equal(A.saturation(batch(), gen()), batch())


def test_translation_moves_whole_pixels_and_cutout_blanks_a_square():
    x = torch.arange(16 * 16, dtype=torch.float32).view(1, 1, 16, 16).repeat(8, 1, 1, 1) + 1
    moved = A.translation(x, gen())
    for img in moved[:, 0]:                # every pixel kept is one of x's; the border is 0
        kept = img[img != 0]
        assert set(kept.tolist()) <= set(x[0, 0].flatten().tolist()) and kept.numel() >= 12 * 12
    cut = A.cutout(x, gen())
    zeros = (cut == 0).flatten(1).sum(1)
    assert (zeros > 0).all() and (zeros <= 8 * 8).all()


def test_policies_parse_and_a_bad_one_is_one_line():
    assert A.parse_policy("none") == ((), False)
    ops, adaptive = A.parse_policy("diffaug")
    assert ops == ("brightness", "saturation", "contrast", "translation", "cutout") and not adaptive
    assert A.parse_policy("ada") == (ops, True)
    assert A.parse_policy("translation,cutout") == (("translation", "cutout"), False)
    assert A.parse_policy("color") == (("brightness", "saturation", "contrast"), False)
    for bad in ("bogus", "", "translation,translation", "ada,cutout"):
        with pytest.raises(GancliError) as e:
            A.parse_policy(bad)
        assert "--augment" in str(e.value) and "\n" not in str(e.value)


def test_diffaug_applies_every_op_and_ada_starts_as_the_identity():
    x = batch()
    assert not torch.equal(A.Augment("diffaug", gen())(x), x)
    ada = A.Augment("ada", gen())
    assert float(ada.p) == 0 and torch.equal(ada(x), x)
    ada.p = torch.tensor(1.0)
    assert not torch.equal(ada(x), x)
    assert not A.Augment("none", gen()).active


def test_ada_p_rises_when_d_overfits_and_falls_otherwise():
    ada = A.Augment("ada", gen(), target=0.6, speed_images=1000, interval=4)
    for _ in range(40):                     # D positive on every real: r = 1 > 0.6
        ada.update(torch.tensor(1.0), 10)
    high = float(ada.p)
    assert high == pytest.approx(0.4)       # 10 adjustments of 40 images / 1000
    for _ in range(20):                     # D unsure on reals: r = 0 < 0.6
        ada.update(A.positive_fraction(torch.tensor([1.0, -1.0])), 10)
    assert float(ada.p) == pytest.approx(high - 0.2)
    for _ in range(400):
        ada.update(torch.tensor(0.0), 10)
    assert float(ada.p) == 0                # clamped to [0, 1]


def test_ada_p_follows_every_ranks_reals_and_images():
    def run(reduce_mean, world_size):
        ada = A.Augment("ada", gen(), target=0.6, speed_images=1000, interval=4,
                        reduce_mean=reduce_mean, world_size=world_size)
        for _ in range(8):                  # this rank's D: positive on every real
            ada.update(torch.tensor(1.0), 10)
        return float(ada.p)

    alone = run(None, 1)
    assert alone == pytest.approx(0.08)
    # another rank that agrees: the same sign, twice the images
    assert run(lambda x: x.clone(), 2) == pytest.approx(2 * alone)
    # another rank whose D is positive on no real: the mean r is 0 < 0.6, so p stays at 0
    assert run(lambda x: (x + 0) / 2, 2) == 0


def test_a_rollback_takes_p_back_with_the_weights():
    from gancli.train.guard import LastGood

    ada = A.Augment("ada", gen(), speed_images=1000)
    for _ in range(8):
        ada.update(torch.tensor(1.0), 16)
    kept = ada.state_dict()
    net, opt = torch.nn.Linear(2, 2), {}
    good = LastGood()
    good.take(8, {"n": net}, opt, 0, {"augment": ada})
    for _ in range(40):
        ada.update(torch.tensor(1.0), 16)
    assert ada.state_dict() != kept
    good.restore({"n": net}, opt, {"augment": ada})
    assert ada.state_dict() == kept


def test_ada_state_round_trips():
    ada = A.Augment("ada", gen(), speed_images=1000)
    for _ in range(9):
        ada.update(torch.tensor(0.9), 16)
    state = json.loads(json.dumps(ada.state_dict()))
    again = A.Augment("ada", gen(), speed_images=1000)
    again.load_state_dict(state)
    assert torch.equal(again.p, ada.p) and again.seen == ada.seen == 1
    for a in (ada, again):
        for _ in range(3):
            a.update(torch.tensor(0.9), 16)
    assert torch.equal(again.p, ada.p) and float(ada.p) > 0


def test_r1_on_a_hand_made_discriminator():
    torch.manual_seed(0)
    w = torch.randn(1, 3, 4, 4)

    def D(x):                               # D(x) = <w, x>: grad_x D = w for every image
        return (w * x).sum((1, 2, 3))

    real = torch.randn(5, 3, 4, 4)
    expected = float(w.pow(2).sum())
    assert float(A.r1_penalty(D, real)) == pytest.approx(expected, rel=1e-5)
    r1 = A.R1(gamma=3.0, every=2, D=lambda x: (D(x), x.flatten(1)), conditional=False,
              device=torch.device("cpu"))  # a tuple, as InfoGAN's D returns: its first element
    assert float(r1(0, real, None)) == pytest.approx(2 * 3.0 / 2 * expected, rel=1e-5)
    assert r1(1, real, None) == 0           # lazy: every 2nd step, times 2
    assert float(r1.figures()["r1"]) == pytest.approx(3.0 / 2 * expected, rel=1e-5)
    seen = {}
    cond = A.R1(1.0, 1, lambda x, y: seen.setdefault("y", y) is y and D(x), True, torch.device("cpu"))
    cond(0, real, torch.arange(5))
    assert torch.equal(seen["y"], torch.arange(5))


def test_r1_trains_d_through_autograd_grad():
    lin = torch.nn.Linear(4, 1)
    r1 = A.R1(1.0, 1, lambda x: lin(x).squeeze(-1), False, torch.device("cpu"))
    r1(0, torch.randn(8, 4), None).backward()
    assert lin.weight.grad is not None and lin.weight.grad.abs().sum() > 0


def _tiny(tmp_path: Path, model: str, steps: int, **over) -> Path:
    cfg = resolve(model, str(recipe(tmp_path)), {"steps": steps, "out": str(tmp_path / model),
                                                 "cpu": True, **over})
    return train(cfg, print_fn=lambda s: None, progress=False)


@pytest.mark.parametrize("model", ["dcgan", "cgan"])
def test_the_loop_augments_real_and_fake_in_d_step_and_fake_in_g_step(model, tmp_path, monkeypatch):
    family = get_family(model)
    seen, fed = [], []
    original_call, d_loss, g_loss = A.Augment.__call__, family.d_loss, family.g_loss

    def spy(self, x):
        seen.append(x)
        return original_call(self, x)

    def d_spy(D, real, labels, fake, *a):
        assert isinstance(D, A.AugmentedD)
        fed.extend([real, fake])
        return d_loss(D, real, labels, fake, *a)

    def g_spy(D, fake, *a, **kw):
        assert isinstance(D, A.AugmentedD)
        fed.append(fake)
        return g_loss(D, fake, *a, **kw)

    monkeypatch.setattr(A.Augment, "__call__", spy)
    monkeypatch.setattr(family, "d_loss", d_spy)
    monkeypatch.setattr(family, "g_loss", g_spy)
    _tiny(tmp_path, model, 2, augment="diffaug", checkpoint_every=100)
    assert len(seen) == len(fed) == 6       # per step: D's real, D's fake, G's fake
    assert all(s is f for s, f in zip(seen, fed))


def test_none_leaves_d_unwrapped(tmp_path, monkeypatch):
    family = get_family("gan")
    kinds = []
    original = family.d_loss

    def d_spy(D, *a):
        kinds.append(type(D))
        return original(D, *a)

    monkeypatch.setattr(family, "d_loss", d_spy)
    _tiny(tmp_path, "gan", 1)
    assert A.AugmentedD not in kinds


def test_a_tiny_ada_run_with_r1_logs_p_and_r1_and_saves_p(tmp_path):
    r = invoke("train", "dcgan", "--recipe", recipe(tmp_path), "--out", tmp_path / "ada",
               "--steps", 8, "--augment", "ada", "--r1", "1", "--cpu", "--no-progress")
    assert r.exit_code == 0, r.output
    records = [json.loads(line) for line in (tmp_path / "ada" / "metrics.jsonl").read_text().splitlines()]
    last = records[-1]
    assert {"aug_p", "r1", "d_real_positive"} <= set(last)
    assert 0 <= last["aug_p"] <= 1 and last["r1"] > 0 and 0 <= last["d_real_positive"] <= 1
    state = json.loads((tmp_path / "ada" / "checkpoints" / "step-0000008" / "state.json").read_text())
    assert 0 < state["augment"]["p"] <= 1   # D is positive on reals early on: p has risen


def test_bogus_augment_is_one_error_line(tmp_path):
    r = invoke("train", "dcgan", "--recipe", recipe(tmp_path), "--augment", "bogus", "--dry-run")
    assert r.exit_code == 2 and "--augment" in r.stderr and "bogus" in r.stderr
    assert len(r.stderr.strip().splitlines()) == 1 and "Traceback" not in r.output


@pytest.mark.parametrize("over,flag", [({"ada_target": 1.0}, "--ada-target"),
                                       ({"ada_target": 0}, "--ada-target"),
                                       ({"r1": -1.0}, "--r1"), ({"r1": float("inf")}, "--r1"),
                                       ({"r1_every": 0}, "--r1-every"),
                                       ({"r1_every": 1001}, "--r1-every")])
def test_out_of_range_settings_are_refused(over, flag, tmp_path):
    with pytest.raises(GancliError) as e:
        resolve("dcgan", str(recipe(tmp_path)), over)
    assert flag in str(e.value)


def test_recipes_set_augmentation_per_model(tmp_path):
    p = tmp_path / "r.toml"
    p.write_text(recipe(tmp_path).read_text().replace(
        "[models.dcgan]\n", "[models.dcgan]\naugment = \"ada\"\nada_target = 0.7\nr1 = 0.5\n"))
    cfg = resolve("dcgan", str(p))
    assert (cfg.train.augment, cfg.train.ada_target, cfg.train.r1) == ("ada", 0.7, 0.5)
    assert resolve("gan", str(p)).train.augment == "none"
