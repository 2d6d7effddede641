import json

import pytest

from gancli.errors import GancliError
from gancli.recipes import Config, builtin_recipes, resolve

from conftest import invoke


def test_builtin_recipes_are_packaged():
    names = builtin_recipes()
    assert {"digits", "mnist"} <= set(names)


def test_default_recipe_is_embedded_digits():
    cfg = resolve("infogan")
    assert cfg.recipe == "digits" and cfg.data.source == "digits"
    # the family section of the recipe overrides [train]; model args are kept apart
    assert cfg.train.lr_g == 1e-3 and cfg.train.lr_d == 2e-4
    assert cfg.model_args["noise_dim"] == 62 and cfg.model_args["categorical"] == [10]


def test_cli_overrides_win_and_none_is_ignored():
    cfg = resolve("infogan", "mnist", {"batch_size": 32, "lr_g": None, "steps": 10})
    assert cfg.train.batch_size == 32
    assert cfg.train.lr_g == 2e-3          # recipe value kept: None means "not given"
    assert cfg.train.steps == 10 and cfg.train.epochs is None
    cfg = resolve("infogan", "mnist", {"epochs": 2.5})
    assert cfg.train.epochs == 2.5 and cfg.train.steps is None


def test_data_overrides():
    cfg = resolve("infogan", "mnist", data_overrides={"path": "/x", "limit": 100})
    assert cfg.data.path == "/x" and cfg.data.limit == 100


@pytest.mark.parametrize("ov,msg", [
    ({"batch_size": 0}, "--batch-size must be positive"),
    ({"lr_g": -1.0}, "--lr-g must be positive"),
    ({"mixed_precision": "fp8"}, "--mixed-precision must be one of"),
    ({"compile_mode": "graphs"}, "--compile-mode must be one of"),
    ({"loss": "wasserstein"}, "--loss must be one of"),
    ({"steps": -3}, "--steps must be positive"),
    ({"ema_decay": 1.0}, "--ema-decay"),
])
def test_bad_values_are_one_line_errors(ov, msg):
    with pytest.raises(GancliError, match=msg):
        resolve("infogan", None, ov)


def test_unknown_recipe_names_the_known_ones():
    with pytest.raises(GancliError, match="unknown recipe 'nope'.*digits.*mnist"):
        resolve("infogan", "nope")


def test_recipe_from_path_and_bad_toml(tmp_path, tiny_recipe):
    cfg = resolve("infogan", str(tiny_recipe))
    assert cfg.recipe == "tiny" and cfg.data.image_size == 16
    bad = tmp_path / "bad.toml"
    bad.write_text("[data\nsource=")
    with pytest.raises(GancliError, match="not valid TOML"):
        resolve("infogan", str(bad))
    unknown = tmp_path / "unk.toml"
    unknown.write_text('[data]\nsource="digits"\nimage_size=16\nchannels=1\nresolution=3\n')
    with pytest.raises(GancliError, match="unknown \\[data\\] keys"):
        resolve("infogan", str(unknown))


def test_config_json_round_trip():
    cfg = resolve("infogan", "mnist", {"steps": 5})
    assert Config.from_json(cfg.to_json()) == cfg


def test_dry_run_prints_resolved_config():
    r = invoke("train", "infogan", "--recipe", "mnist", "--batch-size", "7", "--dry-run")
    assert r.exit_code == 0
    d = json.loads(r.stdout)
    assert d["train"]["batch_size"] == 7 and d["recipe"] == "mnist" and d["model"] == "infogan"


def test_wheel_ships_the_recipes(tmp_path):
    """Recipes must be found in a non-editable install: they are package data in the wheel."""
    import subprocess
    import sys
    import zipfile

    from conftest import REPO

    r = subprocess.run([sys.executable, "-m", "pip", "wheel", "-q", "--no-deps",
                        "--no-build-isolation", str(REPO), "-w", str(tmp_path)],
                       capture_output=True, text=True, cwd=tmp_path)
    if r.returncode != 0:
        pytest.skip(f"could not build a wheel here: {r.stderr.strip()[-200:]}")
    wheel = next(tmp_path.glob("gancli-*.whl"))
    names = zipfile.ZipFile(wheel).namelist()
    for recipe in builtin_recipes():
        assert f"gancli/_recipes/{recipe}.toml" in names
