import math

import pytest
import torch
import torch.nn.functional as F

from gancli.latent import Code, LatentSpec
from gancli.models import get_family
from gancli.models.infogan import HALF_LOG_2PI, info_loss
from gancli.recipes import resolve

SPEC = LatentSpec(noise_dim=4, noise="uniform", codes=(
    Code("c1", "categorical", size=3), Code("c2", "continuous"), Code("c3", "continuous")))


def test_info_loss_by_hand():
    # Q outputs: 3 logits for c1, then means for c2 and c3
    q = torch.tensor([[2.0, 0.0, 0.0, 0.5, -0.5],
                      [0.0, 1.0, 0.0, 0.0, 0.0]])
    lat = {"z": torch.zeros(2, 4), "c1": torch.tensor([0, 2]),
           "c2": torch.tensor([0.5, 1.0]), "c3": torch.tensor([0.0, 0.0])}
    parts, logs = info_loss(SPEC, q, lat)
    lse0, lse1 = math.log(math.exp(2) + 2), math.log(math.e + 2)
    ce = ((lse0 - 2.0) + (lse1 - 0.0)) / 2           # CE on raw logits: no softmax before it
    nll_c2 = (0.5 * 0.0 ** 2 + 0.5 * 1.0 ** 2) / 2 + HALF_LOG_2PI   # fixed std 1
    nll_c3 = (0.5 * 0.5 ** 2 + 0.5 * 0.0 ** 2) / 2 + HALF_LOG_2PI
    assert parts[0].item() == pytest.approx(ce, rel=1e-6)
    assert parts[1].item() == pytest.approx(nll_c2 + nll_c3, rel=1e-6)
    assert logs["c1_acc"].item() == pytest.approx(0.5)


def test_no_double_softmax():
    # Softmax then cross-entropy would squash the loss towards log(K); ours matches F.cross_entropy.
    q = torch.randn(8, 5) * 4
    lat = {"z": torch.zeros(8, 4), "c1": torch.randint(0, 3, (8,)),
           "c2": torch.zeros(8), "c3": torch.zeros(8)}
    parts, _ = info_loss(SPEC, q, lat)
    assert parts[0].item() == pytest.approx(F.cross_entropy(q[:, :3], lat["c1"]).item(), rel=1e-6)


def _tiny_cfg(**ov):
    return resolve("infogan", None, {"steps": 1, **ov}, {"limit": 64})


def test_shapes_and_q_head():
    cfg = _tiny_cfg()
    fam = get_family("infogan")
    spec = fam.latent_spec(cfg)
    assert [c.name for c in spec.codes] == ["c1", "c2", "c3"] and spec.noise_dim == 62
    G, D = fam.build(cfg, spec)
    lat = spec.sample(5, torch.Generator().manual_seed(0))
    x = G(lat)
    s = cfg.data.image_size
    assert x.shape == (5, 1, s, s) and x.min() >= -1 and x.max() <= 1
    logit, q = D(x)
    assert logit.shape == (5,) and q.shape == (5, 12)
    # no in-place activations in D (DDP + BatchNorm + two forwards)
    assert not any(getattr(m, "inplace", False) for m in D.modules())


def test_recipe_sizes_drive_the_codes():
    cfg = resolve("infogan", None, {"steps": 1})
    cfg = cfg.__class__(cfg.model, cfg.recipe, cfg.data, cfg.train,
                        {**cfg.model_args, "categorical": [4, 3], "continuous": 1})
    spec = get_family("infogan").latent_spec(cfg)
    assert [(c.name, c.size) for c in spec.codes] == [("c1", 4), ("c2", 3), ("c3", 0)]


def test_training_steps_move_the_losses():
    torch.manual_seed(0)
    cfg = _tiny_cfg()
    fam = get_family("infogan")
    spec = fam.latent_spec(cfg)
    G, D = fam.build(cfg, spec)
    opt_d = torch.optim.Adam(D.parameters(), lr=2e-4, betas=(0.5, 0.999))
    opt_g = torch.optim.Adam(G.parameters(), lr=1e-3, betas=(0.5, 0.999))
    s = cfg.data.image_size
    real = torch.rand(16, 1, s, s) * 2 - 1
    lat = spec.sample(16, torch.Generator().manual_seed(1))
    first = None
    for _ in range(5):
        fake = G(lat)
        d_loss, logs = fam.d_loss(D, real, None, fake.detach(), lat, cfg)
        opt_d.zero_grad(); d_loss.backward(); opt_d.step()
        D.requires_grad_(False)
        g_loss, _ = fam.g_loss(D, fake, lat, cfg)
        opt_g.zero_grad(); g_loss.backward(); opt_g.step()
        D.requires_grad_(True)
        first = first if first is not None else (d_loss.item(), logs["info_ce"].item())
    # D learns to tell this fixed real batch from fakes, Q learns to read c1
    assert d_loss.item() < first[0]
    assert logs["info_ce"].item() < first[1]
    # Q's parameters were trained in D's step; G's loss did not touch D's gradients
    assert all(p.grad is not None for p in D.q.parameters())


def _with_args(cfg, **args):
    return cfg.__class__(cfg.model, cfg.recipe, cfg.data, cfg.train, {**cfg.model_args, **args})


def test_weights_start_at_normal_002_unless_asked():
    from gancli.errors import GancliError

    cfg = _tiny_cfg()
    fam = get_family("infogan")
    spec = fam.latent_spec(cfg)
    torch.manual_seed(0)
    G, D = fam.build(cfg, spec)
    w = G.fc[0].weight
    assert w.std().item() == pytest.approx(0.02, rel=0.05) and abs(w.mean().item()) < 0.002
    assert D.body[0].bias.abs().max().item() == 0.0
    torch.manual_seed(0)
    G2, _ = fam.build(_with_args(cfg, init="default"), spec)
    assert G2.fc[0].weight.std().item() > 0.05   # PyTorch's kaiming-uniform on 76 inputs
    with pytest.raises(GancliError, match="init must be"):
        fam.build(_with_args(cfg, init="xavier"), spec)


def test_q_can_be_kept_off_ds_body():
    cfg = _tiny_cfg()
    fam = get_family("infogan")
    spec = fam.latent_spec(cfg)
    _, D = fam.build(cfg, spec)
    x = torch.randn(4, 1, cfg.data.image_size, cfg.data.image_size)
    _, q = D(x, q_trains_body=False)
    q.square().sum().backward()
    assert all(p.grad is None for p in D.body.parameters())
    assert all(p.grad is not None for p in D.q.parameters())
    D.zero_grad(set_to_none=True)
    _, q = D(x)   # the paper's default: L_I shapes the shared body too
    q.square().sum().backward()
    assert any(p.grad is not None and p.grad.abs().sum() > 0 for p in D.body.parameters())


def test_random_affine_is_identity_at_zero_and_moves_otherwise():
    from gancli.models.infogan import random_affine

    torch.manual_seed(0)
    x = torch.rand(3, 1, 28, 28) * 2 - 1
    same = random_affine(x, degrees=0.0, scale=0.0, shift=0.0)
    assert torch.allclose(same, x, atol=1e-5)
    x.requires_grad_(True)
    moved = random_affine(x)
    assert moved.shape == x.shape and (moved - x).abs().mean() > 0.05
    # each image gets its own transform
    one = x.detach()[:1].expand(4, -1, -1, -1).contiguous()
    out = random_affine(one)
    assert (out[0] - out[1]).abs().max() > 1e-3
    moved.sum().backward()          # G's gradient must pass through it
    assert x.grad is not None and x.grad.abs().sum() > 0


def test_categorical_loss_can_come_from_another_view():
    q = torch.randn(6, 5)
    q_cat = torch.randn(6, 5)
    lat = {"z": torch.zeros(6, 4), "c1": torch.randint(0, 3, (6,)),
           "c2": torch.zeros(6), "c3": torch.zeros(6)}
    parts, logs = info_loss(SPEC, q, lat, q_cat)
    ref, ref_logs = info_loss(SPEC, q, lat)
    assert parts[0].item() == pytest.approx(F.cross_entropy(q_cat[:, :3], lat["c1"]).item())
    assert parts[1].item() == pytest.approx(ref[1].item())        # continuous codes: clean view
    assert logs["c1_acc"].item() == pytest.approx(ref_logs["c1_acc"].item())


def test_q_augment_adds_one_view_in_ds_step_only():
    from gancli.errors import GancliError

    cfg = _tiny_cfg()
    fam = get_family("infogan")
    spec = fam.latent_spec(cfg)
    G, D = fam.build(cfg, spec)
    calls = []
    D.register_forward_hook(lambda m, i, o: calls.append(i[0]))
    lat = spec.sample(8, torch.Generator().manual_seed(0))
    fake = G(lat).detach()
    real = torch.rand_like(fake) * 2 - 1
    fam.d_loss(D, real, None, fake, lat, cfg)
    assert len(calls) == 3 and not torch.equal(calls[2], fake)   # real, fake, turned fake
    calls.clear()
    fam.d_loss(D, real, None, fake, lat, _with_args(cfg, q_augment=False))
    assert len(calls) == 2
    calls.clear()
    fam.g_loss(D, G(lat), lat, cfg)
    assert len(calls) == 1                                        # G reads Q on the clean fakes
    with pytest.raises(GancliError, match="q_augment must be"):
        fam.build(_with_args(cfg, q_augment="yes"), spec)


def test_q_view_default_is_the_plain_affine_and_options_widen_it():
    from gancli.models.infogan import q_view, random_affine, random_stroke

    x = torch.rand(8, 1, 28, 28) * 2 - 1
    torch.manual_seed(3)
    ref = random_affine(x[:4])
    torch.manual_seed(3)
    assert torch.equal(q_view(x, {}), ref)          # the default draws exactly what it drew before
    torch.manual_seed(3)
    assert torch.equal(q_view(x, {"q_augment_range": 1.0}), ref)
    torch.manual_seed(3)
    wide = q_view(x, {"q_augment_range": 2.0})
    assert wide.shape == ref.shape and not torch.equal(wide, ref)
    torch.manual_seed(3)
    assert torch.allclose(q_view(x, {"q_augment_range": 0.0}), x[:4], atol=1e-5)


def test_random_stroke_thickens_thins_or_keeps_each_image():
    from gancli.models.infogan import random_stroke

    x = -torch.ones(60, 1, 12, 12)
    x[:, :, 4:8, 5:7] = 1.0                          # a bar two pixels wide
    x.requires_grad_(True)
    out = random_stroke(x)
    ink = (out > 0).flatten(1).sum(1)
    # thicker (6x4 = 24 px), thinner (2x0 = 0 px: a 2-wide bar erodes away) or unchanged (8 px)
    assert set(ink.tolist()) <= {24, 0, 8} and len(set(ink.tolist())) == 3
    out.sum().backward()
    assert x.grad is not None and x.grad.abs().sum() > 0


def test_q_augment_options_are_checked():
    from gancli.errors import GancliError

    cfg = _tiny_cfg()
    fam = get_family("infogan")
    spec = fam.latent_spec(cfg)
    for bad in ({"q_augment_range": -1.0}, {"q_augment_range": 9.0}, {"q_augment_stroke": "yes"}):
        with pytest.raises(GancliError):
            fam.build(_with_args(cfg, **bad), spec)
    G, D = fam.build(_with_args(cfg, q_augment_range=1.5, q_augment_stroke=True), spec)
    lat = spec.sample(8, torch.Generator().manual_seed(0))
    fake = G(lat).detach()
    loss, _ = fam.d_loss(D, torch.rand_like(fake) * 2 - 1, None, fake, lat,
                         _with_args(cfg, q_augment_range=1.5, q_augment_stroke=True))
    assert torch.isfinite(loss)


def test_random_affine_shear_slants_and_zero_shear_draws_as_before():
    from gancli.models.infogan import random_affine

    x = torch.zeros(2, 1, 28, 28)
    x[:, :, 4:24, 13:15] = 1.0                       # an upright bar
    torch.manual_seed(5)
    plain = random_affine(x, degrees=0.0, scale=0.0, shift=0.0)
    torch.manual_seed(5)
    assert torch.equal(random_affine(x, degrees=0.0, scale=0.0, shift=0.0, shear=0.0), plain)
    torch.manual_seed(5)
    slanted = random_affine(x, degrees=0.0, scale=0.0, shift=0.0, shear=0.5)
    # a sheared bar's ink moves sideways in opposite directions at its top and bottom
    cols = torch.arange(28.0)

    def centre(img, rows):
        w = img[0, rows].sum(0)
        return (w * cols).sum() / w.sum()

    for i in range(2):
        top, bottom = centre(slanted[i], slice(4, 8)), centre(slanted[i], slice(20, 24))
        assert abs(float(top - bottom)) > 2.0
        assert abs(float(centre(plain[i], slice(4, 8)) - centre(plain[i], slice(20, 24)))) < 0.1
