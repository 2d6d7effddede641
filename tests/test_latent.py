import pytest
import torch

from gancli.errors import GancliError
from gancli.latent import Code, LatentSpec, interpolate, lerp, slerp

SPEC = LatentSpec(noise_dim=5, noise="normal", codes=(
    Code("c1", "categorical", size=10), Code("c2", "continuous"), Code("c3", "continuous")))


def test_sample_shapes_and_ranges():
    lat = SPEC.sample(200, torch.Generator().manual_seed(0))
    assert lat["z"].shape == (200, 5)
    assert lat["c1"].dtype == torch.int64 and lat["c1"].min() >= 0 and lat["c1"].max() <= 9
    assert lat["c2"].shape == (200,) and lat["c2"].abs().max() <= 1.0
    assert len(lat["c1"].unique()) == 10


def test_same_seed_same_latents():
    a = SPEC.sample(4, torch.Generator().manual_seed(3))
    b = SPEC.sample(4, torch.Generator().manual_seed(3))
    assert all(torch.equal(a[k], b[k]) for k in a)


def test_uniform_noise():
    spec = LatentSpec(noise_dim=50, noise="uniform")
    z = spec.sample(100, torch.Generator().manual_seed(0))["z"]
    assert z.min() >= -1 and z.max() <= 1 and z.min() < -0.9


def test_fix_code_and_noise_dimension():
    lat = SPEC.sample(6, torch.Generator().manual_seed(0))
    fixed = SPEC.fix(lat, "c1", 3)
    assert torch.equal(fixed["c1"], torch.full((6,), 3))
    assert torch.equal(fixed["z"], lat["z"]) and not torch.equal(lat["c1"], fixed["c1"])
    fz = SPEC.fix(lat, "z2", 1.5)
    assert torch.all(fz["z"][:, 2] == 1.5) and torch.equal(fz["z"][:, :2], lat["z"][:, :2])
    assert not torch.all(lat["z"][:, 2] == 1.5)  # the input is not modified


def test_unknown_codes_name_the_valid_ones():
    with pytest.raises(GancliError, match="unknown code 'c9'.*c1 \\(categorical, 10 values\\).*z0..z4"):
        SPEC.check_name("c9")
    with pytest.raises(GancliError, match="out of range"):
        SPEC.check_name("z5")
    with pytest.raises(GancliError, match="integers 0..9"):
        SPEC.parse_value("c1", "10")
    with pytest.raises(GancliError, match="not a number"):
        SPEC.parse_value("c2", "abc")


def test_traversal_values():
    assert torch.equal(SPEC.traversal_values("c1"), torch.arange(10))
    v = SPEC.traversal_values("c2", steps=9, value_range=(-2, 2))
    assert torch.allclose(v, torch.linspace(-2, 2, 9))
    lat = SPEC.traversal("c2", rows=3, values=v, generator=torch.Generator().manual_seed(0))
    assert lat["z"].shape == (27, 5)
    # a row holds its noise fixed, the columns walk the code
    assert torch.equal(lat["z"][0], lat["z"][8]) and not torch.equal(lat["z"][0], lat["z"][9])
    assert torch.allclose(lat["c2"][:9], v) and torch.allclose(lat["c2"][9:18], v)


def test_slerp_keeps_norm_and_hits_endpoints():
    g = torch.Generator().manual_seed(0)
    a, b = torch.randn(1, 64, generator=g), torch.randn(1, 64, generator=g)
    b = b / b.norm() * a.norm()
    t = torch.linspace(0, 1, 11)
    path = slerp(a.expand(11, -1), b.expand(11, -1), t)
    assert torch.allclose(path.norm(dim=1), a.norm().expand(11), rtol=1e-5)
    assert torch.allclose(path[0], a[0], atol=1e-5) and torch.allclose(path[-1], b[0], atol=1e-5)
    mid_lerp = lerp(a, b, torch.tensor([0.5]))
    assert mid_lerp.norm() < a.norm() * 0.9   # what slerp avoids


def test_interpolate_holds_codes_unless_walked():
    g = torch.Generator().manual_seed(0)
    s, e = SPEC.sample(2, g), SPEC.sample(2, g)
    out = interpolate(SPEC, s, e, steps=5, method="slerp")
    assert out["z"].shape == (10, 5)
    assert torch.equal(out["c1"], s["c1"].repeat_interleave(5))
    walked = interpolate(SPEC, s, e, steps=5, method="lerp", walk=("c1", "c2"))
    assert walked["c1"].shape == (10, 10)          # soft one-hot
    assert torch.allclose(walked["c2"][4], e["c2"][0])
    assert torch.allclose(walked["z"][4], e["z"][0], atol=1e-6)
    with pytest.raises(GancliError):
        interpolate(SPEC, s, e, steps=5, method="cubic")
