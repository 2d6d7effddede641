"""Property-based tests (hypothesis): whatever a user types, gancli answers with a value it can
use or one GancliError, never another exception."""

import json
import math
import os
import tempfile
import typing
from pathlib import Path

import pytest
import torch
from hypothesis import HealthCheck, event, given, settings
from hypothesis import strategies as st

from gancli.errors import GancliError
from gancli.generate import parse_assignments
from gancli.latent import MAX_VALUE, Code, LatentSpec
from gancli.recipes import DATA_KEYS, TRAIN_KEYS, Config, DataConfig, TrainConfig, resolve

# GANCLI_PROPERTY_EXAMPLES=5000 for a longer hunt than the suite's quick pass
SETTINGS = settings(deadline=None,
                    max_examples=int(os.environ.get("GANCLI_PROPERTY_EXAMPLES", "150")),
                    suppress_health_check=[HealthCheck.too_slow])

# ---------------------------------------------------------------------- recipes


def toml_value(v) -> str:
    if isinstance(v, bool):
        return "true" if v else "false"
    if isinstance(v, int):
        return str(v)
    if isinstance(v, float):
        if math.isnan(v):
            return "nan"
        if math.isinf(v):
            return "inf" if v > 0 else "-inf"
        return repr(v)
    if isinstance(v, str):
        # JSON's escapes are TOML's; DEL is the one control character JSON leaves raw
        return json.dumps(v, ensure_ascii=False).replace("\x7f", "\\u007f")
    if isinstance(v, list):
        return "[" + ", ".join(toml_value(x) for x in v) + "]"
    raise TypeError(v)


def toml_table(name: str, d: dict) -> str:
    return f"[{name}]\n" + "".join(f"{k} = {toml_value(v)}\n" for k, v in d.items())


# Values of every TOML-able kind, biased towards ones a field could take.
values = st.one_of(
    st.integers(-3, 300), st.integers(-2 ** 63, 2 ** 63 - 1),
    st.floats(0, 1), st.floats(allow_nan=True, allow_infinity=True),
    st.booleans(), st.sampled_from(["no", "bf16", "bce", "hinge", "score", "stop", "auto"]),
    st.text(max_size=12), st.lists(st.integers(-2, 12), max_size=3),
)


def _mostly(good, bad):
    """`good` four times in five, else `bad` (sampled_from leans to its first entry)."""
    return st.sampled_from([True] * 4 + [False]).flatmap(lambda ok: good if ok else bad)


def _plausible(cls) -> dict:
    """Per field, values of its own type, mostly in range: so that many recipes are accepted."""
    words = st.sampled_from(["no", "bf16", "fp16", "bce", "lsgan", "hinge", "score", "fid",
                             "stop", "skip", "auto", "device", "stream", "digits"])
    by_type = {int: st.integers(0, 200), float: st.floats(0.0, 1.0), bool: st.booleans(),
               str: words}
    out = {}
    for name, tp in typing.get_type_hints(cls).items():
        kinds = [t for t in (typing.get_args(tp) or (tp,)) if t in by_type]
        good = st.one_of(*(by_type[t] for t in kinds))
        out[name] = _mostly(good, values)
    return out


def tables(cls, keys: list[str]):
    plausible = _plausible(cls)

    @st.composite
    def table(draw) -> dict:
        chosen = draw(st.lists(st.sampled_from(keys), max_size=5, unique=True))
        if draw(st.sampled_from([False] * 9 + [True])):
            chosen.append("bogus")
        return {k: draw(plausible.get(k, values)) for k in chosen}
    return table()


train_tables = tables(TrainConfig, sorted(TRAIN_KEYS))
data_tables = tables(DataConfig, sorted(DATA_KEYS - {"source", "image_size", "channels"}))
infogan_args = st.dictionaries(
    st.sampled_from(["noise_dim", "categorical", "continuous", "lambda_info", "lambda_cont",
                     "init", "q_augment", "q_trains_body", "noise", "typo"]),
    _mostly(st.one_of(st.integers(0, 20), st.lists(st.integers(1, 12), max_size=3),
                      st.floats(0, 2), st.booleans(), st.sampled_from(["normal", "uniform",
                                                                      "default"])), values),
    max_size=3)

_RECIPES = Path(tempfile.mkdtemp(prefix="gancli-props-"))


@SETTINGS
@given(train=train_tables, data=data_tables, args=infogan_args,
       size=_mostly(st.sampled_from([16, 32, 8]), values),
       channels=_mostly(st.sampled_from([1, 3]), values),
       model=st.sampled_from(["gan", "infogan", "dcgan"]))
def test_recipes_resolve_or_say_why(train, data, args, size, channels, model):
    text = (toml_table("data", {"source": "digits", "image_size": size, "channels": channels,
                                **data})
            + toml_table("train", {"steps": 10, **train})
            + toml_table(f"models.{model}", args if model == "infogan" else {}))
    path = _RECIPES / "prop.toml"
    path.write_text(text, encoding="utf-8")
    try:
        cfg = resolve(model, str(path))
    except GancliError as e:
        assert str(e)
        event("refused")
        return
    event("accepted")
    # accepted: every number is finite, and the config survives the trip through JSON
    for v in (*vars(cfg.train).values(), *vars(cfg.data).values()):
        assert not isinstance(v, float) or math.isfinite(v)
    assert Config.from_json(cfg.to_json()) == cfg


@SETTINGS
@given(st.dictionaries(st.text(max_size=8), st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats() | st.text(max_size=8),
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=5), inner,
                                                                 max_size=3), max_leaves=8),
    max_size=6))
def test_any_json_config_loads_or_says_why(d):
    """Config.from_dict on anything a file may hold: a Config or a GancliError."""
    try:
        Config.from_dict(d)
    except GancliError:
        pass


def test_known_good_config_round_trips():
    cfg = resolve("infogan", "mnist", {"steps": 5})
    assert Config.from_json(cfg.to_json()) == cfg


# ---------------------------------------------------------------------- --code NAME=VALUE

SPEC = LatentSpec(noise_dim=8, noise="uniform",
                  codes=(Code("c1", "categorical", size=10), Code("c2", "continuous"),
                         Code("label", "categorical", size=3, role="label")))

plausible = st.builds(
    lambda name, sep, value: f"{name}{sep}{value}",
    st.sampled_from(["c1", "c2", "c3", "label", "z0", "z7", "z8", "z", "zz1", " c1 ", "", "c1=c2"]),
    st.sampled_from(["=", "", "==", " = "]),
    st.one_of(st.from_regex(r"[-+]?[0-9]{0,4}(\.[0-9]{0,3})?(e[-+]?[0-9]{1,3})?", fullmatch=True),
              st.sampled_from(["nan", "inf", "-inf", "1e400", "0x10", "1_0", "", "３"]),
              st.floats().map(repr), st.integers().map(str), st.text(max_size=6)))


@SETTINGS
@given(st.lists(st.one_of(plausible, st.text(max_size=20)), max_size=4))
def test_code_assignments_parse_or_say_why(items):
    latents = SPEC.sample(3, torch.Generator().manual_seed(0))
    try:
        for name, text in parse_assignments(items):
            SPEC.check_name(name)
            value = SPEC.parse_value(name, text)
            zi = SPEC.z_index(name)
            if zi is None and SPEC.code(name).categorical:
                assert isinstance(value, int) and 0 <= value < SPEC.code(name).size
            else:
                assert isinstance(value, float) and math.isfinite(value)
                assert abs(value) <= MAX_VALUE
            latents = SPEC.fix(latents, name, value)
            assert all(torch.isfinite(v.float()).all() for v in latents.values())
    except GancliError as e:
        assert str(e)


@SETTINGS
@given(lo=st.floats(allow_nan=True, allow_infinity=True),
       hi=st.floats(allow_nan=True, allow_infinity=True), steps=st.integers(2, 50))
def test_traversal_ranges(lo, hi, steps):
    try:
        values = SPEC.traversal_values("c2", steps, (lo, hi))
    except GancliError:
        assert not (math.isfinite(lo) and math.isfinite(hi) and lo < hi
                    and max(abs(lo), abs(hi)) <= MAX_VALUE)
        return
    assert len(values) == steps and torch.isfinite(values).all()
    assert values[0] == pytest.approx(lo, abs=1e-3) and values[-1] == pytest.approx(hi, abs=1e-3)


# ---------------------------------------------------------------------- latent specifications


@st.composite
def specs(draw) -> LatentSpec:
    cats = draw(st.lists(st.integers(2, 12), max_size=3))
    n_cont = draw(st.integers(0, 3))
    codes = [Code(f"c{i + 1}", "categorical", size=k) for i, k in enumerate(cats)]
    codes += [Code(f"c{len(cats) + i + 1}", "continuous") for i in range(n_cont)]
    if draw(st.booleans()):
        codes.append(Code("label", "categorical", size=draw(st.integers(2, 10)), role="label"))
    return LatentSpec(noise_dim=draw(st.integers(1, 64)),
                      noise=draw(st.sampled_from(["normal", "uniform"])), codes=tuple(codes))


@SETTINGS
@given(spec=specs(), n=st.integers(1, 20), seed=st.integers(0, 2 ** 32 - 1))
def test_sample_shapes_and_dtypes(spec, n, seed):
    lat = spec.sample(n, torch.Generator().manual_seed(seed))
    assert set(lat) == {"z", *spec.names()}
    assert lat["z"].shape == (n, spec.noise_dim) and lat["z"].dtype == torch.float32
    if spec.noise == "uniform":
        assert lat["z"].abs().max() <= 1
    for c in spec.codes:
        v = lat[c.name]
        assert v.shape == (n,)
        if c.categorical:
            assert v.dtype == torch.int64 and 0 <= v.min() and v.max() < c.size
        else:
            assert v.dtype == torch.float32 and c.low <= v.min() and v.max() <= c.high
    # same seed, same draw
    again = spec.sample(n, torch.Generator().manual_seed(seed))
    assert all(torch.equal(lat[k], again[k]) for k in lat)


@SETTINGS
@given(spec=specs(), n=st.integers(1, 10), data=st.data())
def test_fix_sets_exactly_one_column_or_code(spec, n, data):
    lat = spec.sample(n, torch.Generator().manual_seed(1))
    name = data.draw(st.sampled_from(spec.names() + [f"z{i}" for i in range(spec.noise_dim)]))
    zi = spec.z_index(name)
    if zi is None and spec.code(name).categorical:
        value = data.draw(st.integers(0, spec.code(name).size - 1))
    else:
        value = data.draw(st.floats(-MAX_VALUE, MAX_VALUE))
    fixed = spec.fix(lat, name, value)
    for k in lat:
        assert fixed[k].shape == lat[k].shape and fixed[k].dtype == lat[k].dtype
        if k not in ("z", name):
            assert torch.equal(fixed[k], lat[k])
    if zi is None:
        assert (fixed[name] == torch.as_tensor(value, dtype=fixed[name].dtype)).all()
        assert torch.equal(fixed["z"], lat["z"])
    else:
        others = [i for i in range(spec.noise_dim) if i != zi]
        assert torch.equal(fixed["z"][:, others], lat["z"][:, others])
        assert (fixed["z"][:, zi] == torch.tensor(value, dtype=torch.float32)).all()
    assert torch.equal(lat["z"], spec.sample(n, torch.Generator().manual_seed(1))["z"])  # no aliasing


@SETTINGS
@given(spec=specs(), rows=st.integers(1, 5), steps=st.integers(2, 9), data=st.data())
def test_traversal_grid(spec, rows, steps, data):
    name = data.draw(st.sampled_from(spec.names() + ["z0"]))
    values = spec.traversal_values(name, steps, (-2.0, 2.0))
    cols = len(values)
    if spec.z_index(name) is None and spec.code(name).categorical:
        assert torch.equal(values, torch.arange(spec.code(name).size))
    else:
        assert cols == steps
    lat = spec.traversal(name, rows, values, torch.Generator().manual_seed(2))
    assert lat["z"].shape == (rows * cols, spec.noise_dim)
    walked = lat["z"][:, 0] if name == "z0" else lat[name]
    assert torch.allclose(walked.float().view(rows, cols), values.float().expand(rows, cols))
    # everything else is constant along a row (one noise draw per row)
    for k, v in lat.items():
        grid = v.view(rows, cols, -1)
        if k == "z" and name == "z0":
            grid = grid[:, :, 1:]
        if k != name:
            assert (grid == grid[:, :1]).all()
