"""Every bad input gets one clean line: a non-zero exit, one `error:` line on stderr naming the
problem and the fix, no traceback, and no partial output left behind."""

import errno
import json
import os
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image
from safetensors import safe_open
from safetensors.torch import save_file

from gancli.checkpoint import find_generator
from gancli.errors import GancliError
from gancli.files import (OutputError, atomic_dir, atomic_path, check_target, write_json,
                          write_safetensors)
from gancli.recipes import Config

from conftest import TINY_RECIPE, invoke


def one_line_error(r, *needles: str) -> str:
    """The result failed with exactly one `error:` line (holding every needle), no traceback."""
    assert r.exit_code != 0, r.output
    assert "Traceback" not in r.output, r.output
    lines = r.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: "), r.stderr
    for needle in needles:
        assert needle in lines[0], lines[0]
    return lines[0]


def no_leftovers(folder: Path) -> None:
    """No temporary file or directory of an atomic write is left in `folder`."""
    left = [p.name for p in folder.iterdir() if p.name.startswith(".")]
    assert not left, left


@pytest.fixture
def no_generation(monkeypatch):
    """Fail the test if any image is generated: refusals must come first."""
    import gancli.generate as G

    def boom(*a, **k):
        raise AssertionError("an image was generated before the outputs were checked")
    monkeypatch.setattr(G, "generate", boom)
    monkeypatch.setattr(G, "generate_batches", boom)


# ---------------------------------------------------------------------- 1. OS failures


@pytest.mark.parametrize("out", ["d.png", "d.npz"])
def test_out_is_an_existing_directory(tiny_run, tmp_path, out, no_generation):
    (tmp_path / out).mkdir()
    r = invoke("sample", tiny_run, "--n", 4, "--out", tmp_path / out)
    one_line_error(r, "is a directory", "name a file")
    assert (tmp_path / out).is_dir() and not any((tmp_path / out).iterdir())
    # --overwrite never turns a directory into a file
    r = invoke("sample", tiny_run, "--n", 4, "--out", tmp_path / out, "--overwrite")
    one_line_error(r, "is a directory")


def test_out_whose_parent_is_a_file(tiny_run, tmp_path, no_generation):
    (tmp_path / "afile.txt").write_text("x")
    for cmd in (["sample", tiny_run], ["traverse", tiny_run, "--code", "c1"],
                ["interpolate", tiny_run]):
        r = invoke(*cmd, "--out", tmp_path / "afile.txt" / "x.png")
        one_line_error(r, "afile.txt is a file, not a directory")
    assert (tmp_path / "afile.txt").read_text() == "x"


def test_name_too_long(tiny_run, tmp_path, no_generation):
    r = invoke("sample", tiny_run, "--out", tmp_path / ("a" * 300 + ".png"))
    one_line_error(r, "use a shorter name")
    r = invoke("sample", tiny_run, "--out", tmp_path / ("b" * 300))
    one_line_error(r, "use a shorter name")
    no_leftovers(tmp_path)


def test_name_too_long_at_write_time(tmp_path):
    # past the pre-check too (a writer that never asked): the OS error becomes one line
    with pytest.raises(OutputError, match="cannot write .*File name too long"):
        with atomic_path(tmp_path / ("c" * 300 + ".png")) as tmp:
            tmp.write_text("x")
    no_leftovers(tmp_path)


def test_permission_denied(tiny_run, tmp_path, monkeypatch, no_generation):
    import gancli.files as F

    monkeypatch.setattr(F.os, "access", lambda *a, **k: False)
    r = invoke("sample", tiny_run, "--out", tmp_path / "x.png")
    one_line_error(r, "permission denied", "write somewhere you have permission to")


@pytest.mark.skipif(os.name != "posix" or os.geteuid() == 0, reason="root may write anywhere")
def test_permission_denied_for_real(tiny_run, tmp_path):
    ro = tmp_path / "ro"
    ro.mkdir()
    ro.chmod(0o500)
    try:
        r = invoke("sample", tiny_run, "--out", ro / "x.png")
        one_line_error(r, "permission denied")
    finally:
        ro.chmod(0o700)


def test_permission_denied_at_write_time(tmp_path, monkeypatch):
    import gancli.files as F

    def denied(*a, **k):
        raise PermissionError(errno.EACCES, "Permission denied")
    monkeypatch.setattr(F.tempfile, "mkstemp", denied)
    with pytest.raises(OutputError, match="cannot write .*Permission denied \\(write somewhere"):
        write_json(tmp_path / "x.json", {})


def _disk_full(*a, **k):
    raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))


@pytest.mark.parametrize("out", ["grid.png", "codes.npz", "files"])
def test_disk_full_on_rename(tiny_run, tmp_path, monkeypatch, out):
    import gancli.files as F

    monkeypatch.setattr(F.os, "replace", _disk_full)
    r = invoke("sample", tiny_run, "--n", 5, "--out", tmp_path / out)
    one_line_error(r, f"cannot write {tmp_path / out}", "No space left on device",
                   "free some space")
    assert not (tmp_path / out).exists()
    no_leftovers(tmp_path)


def test_disk_full_while_writing_the_image(tiny_run, tmp_path, monkeypatch):
    real_save = Image.Image.save

    def half_then_full(self, fp, *a, **k):
        Path(fp).write_bytes(b"\x89PNG half")  # a partial file, then the disk fills up
        _disk_full()
    monkeypatch.setattr(Image.Image, "save", half_then_full)
    r = invoke("sample", tiny_run, "--n", 5, "--out", tmp_path / "grid.png")
    one_line_error(r, "No space left on device")
    assert not (tmp_path / "grid.png").exists()
    no_leftovers(tmp_path)
    monkeypatch.setattr(Image.Image, "save", real_save)


def test_disk_full_halfway_through_a_directory(tiny_run, tmp_path, monkeypatch):
    """`sample --out DIR` goes through one temporary directory: a failure after some files
    leaves no directory at all, and an existing one untouched."""
    real_save = Image.Image.save
    calls = []

    def third_fails(self, fp, *a, **k):
        calls.append(fp)
        if len(calls) == 3:
            _disk_full()
        return real_save(self, fp, *a, **k)
    monkeypatch.setattr(Image.Image, "save", third_fails)
    r = invoke("sample", tiny_run, "--n", 5, "--out", tmp_path / "files")
    one_line_error(r, "No space left on device")
    assert not (tmp_path / "files").exists() and len(calls) == 3
    no_leftovers(tmp_path)
    # over an existing directory (--overwrite): the old one survives the failure whole
    (tmp_path / "old").mkdir()
    (tmp_path / "old" / "keep.txt").write_text("keep")
    calls.clear()
    r = invoke("sample", tiny_run, "--n", 5, "--out", tmp_path / "old", "--overwrite")
    one_line_error(r, "No space left on device")
    assert [p.name for p in (tmp_path / "old").iterdir()] == ["keep.txt"]
    no_leftovers(tmp_path)


def test_disk_full_on_fsync(tmp_path, monkeypatch):
    import gancli.files as F

    monkeypatch.setattr(F.os, "fsync", _disk_full)
    with pytest.raises(OutputError, match="No space left on device"):
        write_safetensors(tmp_path / "t.safetensors", {"a": torch.zeros(3)})
    assert not (tmp_path / "t.safetensors").exists()
    no_leftovers(tmp_path)


def test_writes_are_flushed_before_and_after_the_rename(tmp_path, monkeypatch):
    import gancli.files as F

    events = []
    real_fsync, real_replace = os.fsync, os.replace
    monkeypatch.setattr(F.os, "fsync", lambda fd: (events.append("fsync"), real_fsync(fd))[1])
    monkeypatch.setattr(F.os, "replace",
                        lambda a, b: (events.append("replace"), real_replace(a, b))[1])
    write_json(tmp_path / "a.json", {"x": 1})
    assert events[0] == "fsync" and "replace" in events and events[-1] == "fsync"
    events.clear()
    with atomic_dir(tmp_path / "d") as d:
        (d / "one").write_text("1")
        (d / "two").write_text("2")
    # both files and the directory before the rename, the parent after it
    assert events.index("replace") >= 3 and events[-1] == "fsync"
    assert sorted(p.name for p in (tmp_path / "d").iterdir()) == ["one", "two"]


def test_atomic_dir_replaces_a_directory_as_a_whole(tmp_path):
    (tmp_path / "d").mkdir()
    (tmp_path / "d" / "stale.png").write_text("old")
    with atomic_dir(tmp_path / "d") as d:
        (d / "new.png").write_text("new")
    assert [p.name for p in (tmp_path / "d").iterdir()] == ["new.png"]
    with pytest.raises(ValueError):
        with atomic_dir(tmp_path / "d") as d:
            (d / "half.png").write_text("half")
            raise ValueError("writer failed")
    assert [p.name for p in (tmp_path / "d").iterdir()] == ["new.png"]
    no_leftovers(tmp_path)


def test_append_jsonl_failure_is_one_line(tmp_path):
    from gancli.files import append_jsonl

    (tmp_path / "f").write_text("")
    with pytest.raises(OutputError, match="is a file, not a directory"):
        append_jsonl(tmp_path / "f" / "metrics.jsonl", {"a": 1})


# ---------------------------------------------------------------------- 2. existing outputs


def test_explicit_out_that_exists_needs_overwrite(tiny_run, tmp_path, monkeypatch):
    target = tmp_path / "grid.png"
    target.write_bytes(b"mine")
    import gancli.generate as G
    real = G.generate
    monkeypatch.setattr(G, "generate", lambda *a, **k: pytest.fail("generated before refusing"))
    r = invoke("sample", tiny_run, "--n", 4, "--out", target)
    one_line_error(r, f"{target} exists: pass --overwrite to replace it")
    assert target.read_bytes() == b"mine"
    monkeypatch.setattr(G, "generate", real)
    r = invoke("sample", tiny_run, "--n", 4, "--out", target, "--overwrite")
    assert r.exit_code == 0, r.output
    assert Image.open(target).format == "PNG"


@pytest.mark.parametrize("cmd", [["traverse", "--code", "c2", "--steps", "3", "--rows", "2"],
                                 ["interpolate", "--steps", "3"]])
def test_the_gif_beside_the_output_is_checked_first(tiny_run, tmp_path, cmd, no_generation):
    (tmp_path / "walk.gif").write_bytes(b"mine")
    r = invoke(cmd[0], tiny_run, *cmd[1:], "--gif", "--out", tmp_path / "walk.png")
    one_line_error(r, "walk.gif exists: pass --overwrite")
    assert not (tmp_path / "walk.png").exists()   # nothing written: all targets checked first
    assert (tmp_path / "walk.gif").read_bytes() == b"mine"


@pytest.mark.parametrize("cmd", [["traverse", "--code", "c1", "--rows", "2"],
                                 ["interpolate", "--steps", "3"]])
def test_overwrite_replaces_png_and_gif(tiny_run, tmp_path, cmd):
    for p in ("walk.png", "walk.gif"):
        (tmp_path / p).write_bytes(b"mine")
    r = invoke(cmd[0], tiny_run, *cmd[1:], "--gif", "--out", tmp_path / "walk.png", "--overwrite")
    assert r.exit_code == 0, r.output
    assert Image.open(tmp_path / "walk.png").format == "PNG"
    assert Image.open(tmp_path / "walk.gif").format == "GIF"


def test_directory_out(tiny_run, tmp_path):
    empty = tmp_path / "empty"
    empty.mkdir()
    r = invoke("sample", tiny_run, "--n", 3, "--out", empty)   # empty: free to use
    assert r.exit_code == 0, r.output
    assert len(list(empty.glob("*.png"))) == 3
    r = invoke("sample", tiny_run, "--n", 2, "--out", empty)   # now it holds files
    one_line_error(r, "exists: pass --overwrite")
    (empty / "notes.txt").write_text("x")
    r = invoke("sample", tiny_run, "--n", 2, "--out", empty, "--overwrite")
    assert r.exit_code == 0, r.output
    assert sorted(p.name for p in empty.iterdir()) == ["000000.png", "000001.png"]
    no_leftovers(tmp_path)


def test_default_outputs_in_the_run_are_replaced_silently(tiny_run):
    for _ in range(2):
        assert invoke("sample", tiny_run, "--n", 4, "--seed", 3).exit_code == 0
        assert invoke("traverse", tiny_run, "--code", "c1", "--rows", 1, "--gif").exit_code == 0
        assert invoke("interpolate", tiny_run, "--steps", 3).exit_code == 0
    assert (tiny_run / "samples" / "sample-seed3-n4.png").is_file()
    assert (tiny_run / "traversals" / "c1-seed0.gif").is_file()


def test_check_target_directly(tmp_path):
    check_target(tmp_path / "new" / "deeper" / "x.png")    # parents may be created later
    (tmp_path / "f.png").write_text("x")
    with pytest.raises(OutputError, match="exists"):
        check_target(tmp_path / "f.png")
    check_target(tmp_path / "f.png", overwrite=True)
    with pytest.raises(OutputError, match="is a file, not a directory"):
        check_target(tmp_path / "f.png" / "x.png", overwrite=True)


# ---------------------------------------------------------------------- 3. numbers and types


@pytest.mark.parametrize("args,needle", [
    (["--lr-d", "nan"], "--lr-d must be a finite number, got nan"),
    (["--lr-g", "inf"], "--lr-g must be a finite number"),
    (["--lr-g", "100"], "--lr-g must be at most 10"),
    (["--ema-decay", "nan"], "--ema-decay"),
    (["--epochs", "nan"], "--epochs must be a finite number"),
    (["--batch-size", "1000000"], "--batch-size must be at most 65,536"),
    (["--seed", "-1"], "--seed must be"),
    (["--g-steps", "0"], "--g-steps must be positive"),
    (["--limit", "0"], "--limit must be positive"),
])
def test_train_numbers(args, needle):
    one_line_error(invoke("train", "infogan", *args, "--dry-run"), needle)


def _recipe(tmp_path, replace: dict[str, str], extra: str = "") -> Path:
    text = TINY_RECIPE
    for old, new in replace.items():
        assert old in text
        text = text.replace(old, new)
    p = tmp_path / "r.toml"
    p.write_text(text + extra)
    return p


@pytest.mark.parametrize("replace,extra,needle", [
    ({"batch_size = 16": 'batch_size = "64"'}, "", "batch_size must be an integer, got '64'"),
    ({"lr_g = 1e-3": "lr_g = true"}, "", "lr_g must be a number, got True"),
    ({"steps = 4": "steps = [4]"}, "", "steps must be an integer, got [4]"),
    ({"steps = 4": "steps = 4.5"}, "", "steps must be an integer"),
    ({"image_size = 16": "image_size = 4096"}, "", "data.image_size must be at most 1,024"),
    ({"channels = 1": "channels = 2"}, "", "data.channels must be 1 (grey) or 3 (RGB)"),
    ({"lr_d = 2e-4": "lr_d = nan"}, "", "--lr-d must be a finite number, got nan"),
    ({"[train]": "[train]\nbeta1 = 1.5"}, "", "train.beta1 must be in [0, 1)"),
    ({"categorical = [10]": 'categorical = "ten"'}, "", "infogan: categorical must be a list"),
    ({"categorical = [10]": "categorical = [10, true]"}, "", "infogan: categorical must be"),
    ({"noise_dim = 8": "noise_dim = -1"}, "", "infogan: noise_dim must be an integer in 1..4096"),
    ({"noise_dim = 8": "noise_dim = 8.0"}, "", "infogan: noise_dim must be an integer"),
    ({"continuous = 2": "continuous = 2\nlambda_info = nan"}, "", "lambda_info must be a finite"),
    ({"continuous = 2": "continuous = 2\nlamda_info = 1.0"}, "", "unknown model setting 'lamda_info'"),
    ({"continuous = 2": "continuous = 2\nnoise = 'gauss'"}, "", "noise must be 'normal' or 'uniform'"),
    ({'description = "tiny digits for tests"': "train = 3", "[train]\n": "[models.gan]\n"}, "",
     "[train] must be a table"),
    ({"[train]": "[trian]"}, "", "unknown section trian"),
    ({"source = \"digits\"\n": ""}, "", "[data] needs source"),
])
def test_recipe_values_name_the_key(tmp_path, replace, extra, needle):
    r = invoke("train", "infogan", "--recipe", _recipe(tmp_path, replace, extra), "--dry-run")
    one_line_error(r, needle)


def test_recipe_that_is_not_text(tmp_path):
    p = tmp_path / "bin.toml"
    p.write_bytes(b"\xff\xfe\x00binary")
    one_line_error(invoke("train", "infogan", "--recipe", p, "--dry-run"), "cannot read recipe")


@pytest.mark.parametrize("change,needle", [
    (lambda d: d["train"].update(batch_size="64"), "train.batch_size must be an integer"),
    (lambda d: d["train"].update(lr_g=True), "train.lr_g must be a number"),
    (lambda d: d["data"].update(image_size=16.0), "data.image_size must be an integer"),
    (lambda d: d["train"].update(lr_d=float("nan")), "--lr-d must be a finite number"),
    (lambda d: d.update(data="digits"), "missing or bad field 'data'"),
    (lambda d: d.update(model_args=[1]), "model_args must be an object"),
])
def test_config_from_dict_checks_types(tiny_run, change, needle):
    d = json.loads((tiny_run / "config.json").read_text())["config"]
    change(d)
    with pytest.raises(GancliError, match="not a gancli config") as e:
        Config.from_dict(d)
    assert needle in str(e.value)


@pytest.mark.parametrize("args,needle", [
    (["sample", "--code", "c1=inf"], "c1 takes integers 0..9"),
    (["sample", "--code", "c1=nan"], "c1 takes integers 0..9"),
    (["sample", "--code", "c1=1e400"], "c1 takes integers 0..9"),
    (["sample", "--code", "c2=nan"], "values must be finite"),
    (["sample", "--code", "z0=-inf"], "values must be finite"),
    (["sample", "--code", "z0=1e30"], "within +-10000"),
    (["sample", "--code", "z99999999999999999999999=1"], "out of range"),
    (["traverse", "--code", "c2", "--fix", "c3=nan"], "--fix c3=nan"),
    (["traverse", "--code", "c2", "--range", "nan", "2"], "--range"),
    (["traverse", "--code", "c2", "--range", "1", "1"], "the start must be below the end"),
    (["traverse", "--code", "c2", "--range", "2", "-2"], "the start must be below the end"),
    (["traverse", "--code", "c2", "--range", "0", "inf"], "values must be finite"),
    (["interpolate", "--fix", "c2=inf"], "--fix c2=inf"),
])
def test_code_values(tiny_run, tmp_path, args, needle, no_generation):
    r = invoke(args[0], tiny_run, *args[1:], "--out", tmp_path / "x.png")
    one_line_error(r, needle)
    assert not (tmp_path / "x.png").exists()


# ---------------------------------------------------------------------- 4. sizes


@pytest.mark.parametrize("args,needle", [
    (["traverse", "--code", "c2", "--steps", "100000"], "--steps must be at most 1,000"),
    (["traverse", "--code", "c2", "--rows", "100000"], "--rows must be at most 10,000"),
    (["traverse", "--code", "c2", "--steps", "1000", "--rows", "20"], "more than the 10,000"),
    (["traverse", "--code", "c2", "--steps", "1"], "--steps must be at least 2"),
    (["traverse", "--code", "c2", "--rows", "0"], "--rows must be positive"),
    (["interpolate", "--steps", "5000"], "--steps must be at most 1,000"),
    (["interpolate", "--steps", "1000", "--rows", "11"], "more than the 10,000"),
    (["interpolate", "--rows", "0"], "--rows must be positive"),
    (["interpolate", "--seeds", "-1,3"], "--seeds (each seed) must be between 0 and"),
    (["sample", "--n", "20000"], "20,000 images is more than the 10,000"),
    (["sample", "--n", "0"], "--n must be positive"),
    (["sample", "--n", "-5"], "--n must be positive"),
    (["sample", "--nrow", "0"], "--nrow must be positive"),
    (["sample", "--nrow", "5000"], "--nrow must be at most 1,000"),
    (["sample", "--seed", str(2 ** 70)], "--seed must be between 0 and 4294967295"),
])
def test_sizes_are_refused_up_front(tiny_run, tmp_path, args, needle, no_generation):
    r = invoke(args[0], tiny_run, *args[1:], "--out", tmp_path / "x.png")
    one_line_error(r, needle)
    assert not (tmp_path / "x.png").exists()


def test_sample_directory_limit(tiny_run, tmp_path, no_generation):
    r = invoke("sample", tiny_run, "--n", 2_000_000, "--out", tmp_path / "many")
    one_line_error(r, "--n must be at most 1,000,000")


def test_npz_over_the_memory_budget(tiny_run, tmp_path, monkeypatch, no_generation):
    import gancli.generate as G

    monkeypatch.setattr(G, "MAX_ARRAY_BYTES", 100_000)
    r = invoke("sample", tiny_run, "--n", 1000, "--out", tmp_path / "x.npz")
    one_line_error(r, "1,000 images and their latents would take", "or --out DIR")


@pytest.mark.parametrize("args,needle", [
    (["fid", "--n", "1"], "--n must be at least 2"),
    (["fid", "--n", "1000000"], "--n must be at most 100,000"),
    (["fid", "--batch-size", "0"], "--batch-size must be positive"),
    (["fid", "--ref-n", "0"], "--ref-n must be at least 2"),
    (["score", "--n", "1"], "--n must be at least 2"),
    (["score", "--n", "10000000"], "--n must be at most 100,000"),
])
def test_metric_sizes(tiny_run, args, needle):
    one_line_error(invoke(args[0], tiny_run, *args[1:]), needle)


def test_sample_directory_streams_in_batches(tiny_run, tmp_path, monkeypatch):
    """A directory never holds all images in memory: `generate` (all at once) is not used, and
    the files are those of the one-shot path, bit for bit."""
    import gancli.generate as G

    assert invoke("sample", tiny_run, "--n", 300, "--seed", 4,
                  "--out", tmp_path / "all.npz").exit_code == 0
    batches = []
    real = G.generate_batches

    def counted(*a, **k):
        for b in real(*a, **k):
            batches.append(len(b))
            yield b
    monkeypatch.setattr(G, "generate", lambda *a, **k: pytest.fail("not streamed"))
    monkeypatch.setattr(G, "generate_batches", counted)
    r = invoke("sample", tiny_run, "--n", 300, "--seed", 4, "--out", tmp_path / "files")
    assert r.exit_code == 0, r.output
    assert batches == [256, 44]
    files = sorted((tmp_path / "files").glob("*.png"))
    assert len(files) == 300
    ref = np.load(tmp_path / "all.npz")["images"]
    assert np.array_equal(np.asarray(Image.open(files[299])), ref[299, 0])


# ---------------------------------------------------------------------- --debug


def test_debug_shows_the_traceback(tiny_run):
    r = invoke("sample", tiny_run, "--code", "c1=inf")
    one_line_error(r, "c1 takes integers")
    with pytest.raises(GancliError, match="c1 takes integers"):
        invoke("--debug", "sample", tiny_run, "--code", "c1=inf")


def test_debug_from_the_environment(tiny_run, monkeypatch):
    monkeypatch.setenv("GANCLI_DEBUG", "1")
    with pytest.raises(GancliError):
        invoke("sample", tiny_run, "--code", "c1=inf")
    monkeypatch.setenv("GANCLI_DEBUG", "0")
    one_line_error(invoke("sample", tiny_run, "--code", "c1=inf"))


def test_a_bug_is_one_line_too(tiny_run, monkeypatch):
    import gancli.generate as G

    monkeypatch.setattr(G, "generate", lambda *a, **k: {}["boom"])
    r = invoke("sample", tiny_run, "--n", 2)
    assert r.exit_code == 1
    one_line_error(r, "internal error: KeyError", "rerun with --debug")
    with pytest.raises(KeyError):
        invoke("--debug", "sample", tiny_run, "--n", 2)


def test_error_with_markup_or_newlines_stays_one_line(tmp_path):
    r = invoke("sample", tmp_path / "no[/]such\nrun")
    one_line_error(r, "no such run", "no[/]such run")


# ---------------------------------------------------------------------- 5. untrusted checkpoints


@pytest.fixture
def gen_file(tiny_run, tmp_path) -> Path:
    """A copy of the tiny run's generator file, to damage."""
    dst = tmp_path / "g.safetensors"
    shutil.copy(find_generator(tiny_run), dst)
    return dst


def _header_len(path: Path) -> int:
    return int.from_bytes(path.read_bytes()[:8], "little")


def _meta_and_tensors(path: Path):
    with safe_open(str(path), framework="pt") as f:
        return dict(f.metadata()), {k: f.get_tensor(k) for k in f.keys()}


def _sample_fails(path: Path, tmp_path: Path, *needles: str) -> str:
    line = one_line_error(invoke("sample", path, "--n", 2, "--out", tmp_path / "x.png"), *needles)
    assert not (tmp_path / "x.png").exists()
    return line


def test_a_clean_copy_loads(gen_file, tmp_path):
    assert invoke("sample", gen_file, "--n", 2, "--out", tmp_path / "x.png").exit_code == 0
    meta, _ = _meta_and_tensors(gen_file)
    assert len(json.loads(meta["sha256"])) == 64   # hex, as a JSON string


@pytest.mark.parametrize("keep", [4, 12, "header", "half"])
def test_truncated_checkpoint(gen_file, tmp_path, keep):
    data = gen_file.read_bytes()
    n = {"header": 8 + _header_len(gen_file) // 2, "half": len(data) // 2}.get(keep, keep)
    gen_file.write_bytes(data[:n])
    _sample_fails(gen_file, tmp_path, "copy it again")


def test_flipped_byte_in_the_data(gen_file, tmp_path):
    data = bytearray(gen_file.read_bytes())
    data[8 + _header_len(gen_file) + 100] ^= 0x01
    gen_file.write_bytes(bytes(data))
    _sample_fails(gen_file, tmp_path, "is corrupt", "checksum")


@pytest.mark.parametrize("where", ["structure", "config", "checksum"])
def test_flipped_byte_in_the_header(gen_file, tmp_path, where):
    data = bytearray(gen_file.read_bytes())
    header = data[8: 8 + _header_len(gen_file)]
    pos = {"structure": 0,                           # the opening brace: not JSON any more
           "config": header.index(b"digits") + 5,    # data.source "digits" -> "digitr"
           "checksum": header.index(b"sha256") + 12}[where]
    data[8 + pos] ^= 0x01
    gen_file.write_bytes(bytes(data))
    _sample_fails(gen_file, tmp_path, "copy it again")


def test_huge_header_claimed(tmp_path):
    p = tmp_path / "huge.safetensors"
    p.write_bytes((2 ** 40).to_bytes(8, "little") + b"{}")
    _sample_fails(p, tmp_path, "header claims 1,099,511,627,776 bytes", "16 MiB")


def test_huge_header_for_real(gen_file, tmp_path):
    meta, tensors = _meta_and_tensors(gen_file)
    meta["padding"] = "x" * (17 * 2 ** 20)
    save_file(tensors, str(gen_file), metadata=meta)
    _sample_fails(gen_file, tmp_path, "more than the 16 MiB")


def test_invalid_json_in_metadata(gen_file, tmp_path):
    meta, tensors = _meta_and_tensors(gen_file)
    meta["config"] = '{"model": "infogan", not json'
    write_safetensors(gen_file, tensors, meta)   # a valid checksum: the JSON itself is bad
    _sample_fails(gen_file, tmp_path, "not a gancli config (bad JSON")


def test_huge_config_metadata(gen_file, tmp_path):
    meta, tensors = _meta_and_tensors(gen_file)
    cfg = json.loads(meta["config"])
    cfg["padding"] = "x" * (2 ** 20 + 10)
    meta["config"] = json.dumps(cfg)
    write_safetensors(gen_file, tensors, meta)
    _sample_fails(gen_file, tmp_path, "config metadata is", "more than the 1 MiB")


@pytest.mark.parametrize("change,needle", [
    (lambda c: c["model_args"].update(noise_dim="8"), "infogan: noise_dim must be an integer"),
    (lambda c: c["model_args"].update(categorical=[10, -3]), "infogan: categorical must be"),
    (lambda c: c["model_args"].update(evil=1), "unknown model setting 'evil'"),
    (lambda c: c["data"].update(image_size=10 ** 9), "data.image_size must be at most"),
    (lambda c: c["train"].update(batch_size=True), "train.batch_size must be an integer"),
    (lambda c: c.update(model="nosuchgan"), "model 'nosuchgan'"),
])
def test_bad_config_in_checkpoint_metadata(gen_file, tmp_path, change, needle):
    meta, tensors = _meta_and_tensors(gen_file)
    cfg = json.loads(meta["config"])
    change(cfg)
    meta["config"] = json.dumps(cfg)
    meta["model"] = cfg["model"]
    write_safetensors(gen_file, tensors, meta)
    line = _sample_fails(gen_file, tmp_path, needle)
    assert str(gen_file) in line


def test_newer_gancli_version_in_checkpoint(gen_file, tmp_path):
    meta, tensors = _meta_and_tensors(gen_file)
    meta["gancli_version"] = "99.0.0"
    write_safetensors(gen_file, tensors, meta)
    _sample_fails(gen_file, tmp_path, "written by gancli 99.0.0; this is gancli",
                  "upgrade (pip install -U gancli)")


def test_older_file_without_checksum_is_accepted(gen_file, tmp_path):
    meta, tensors = _meta_and_tensors(gen_file)
    del meta["sha256"]
    save_file(tensors, str(gen_file), metadata=meta)
    assert invoke("sample", gen_file, "--n", 2, "--out", tmp_path / "x.png").exit_code == 0


def test_a_pickle_is_never_unpickled(tmp_path):
    """A torch.save (pickle) file under a safetensors name is refused as unreadable; the
    object in it is never built."""
    p = tmp_path / "generator.safetensors"
    torch.save({"w": torch.zeros(2)}, p)
    _sample_fails(p, tmp_path, "not a readable safetensors file")


# -------------------------------------------------------------- 5. resuming someone else's run


@pytest.fixture
def run_copy(tiny_run, tmp_path) -> Path:
    run = tmp_path / "run"
    shutil.copytree(tiny_run, run)
    return run


def _last_step(run: Path) -> Path:
    return sorted((run / "checkpoints").glob("step-*"))[-1]


def _resume_fails(run: Path, *needles: str) -> str:
    return one_line_error(invoke("train", "infogan", "--resume", run, "--steps", 6,
                                 "--no-progress"), *needles)


def test_resume_newer_config_json(run_copy):
    d = json.loads((run_copy / "config.json").read_text())
    d["gancli_version"] = "1.0"
    (run_copy / "config.json").write_text(json.dumps(d))
    _resume_fails(run_copy, "written by gancli 1.0", "upgrade")


def test_resume_newer_state_json(run_copy):
    f = _last_step(run_copy) / "state.json"
    d = json.loads(f.read_text())
    d["gancli_version"] = "0.99.0"
    f.write_text(json.dumps(d))
    _resume_fails(run_copy, "written by gancli 0.99.0", "upgrade")


def test_resume_corrupt_state_json(run_copy):
    (_last_step(run_copy) / "state.json").write_text("{not json")
    _resume_fails(run_copy, "state.json is missing or corrupt")


def test_resume_optimizer_that_does_not_fit(run_copy):
    f = _last_step(run_copy) / "optimizer_g.safetensors"
    meta, tensors = _meta_and_tensors(f)
    key = next(k for k in tensors if k.endswith("exp_avg") and tensors[k].dim() > 1)
    tensors[key] = tensors[key][:1].clone()   # another model's shapes
    write_safetensors(f, tensors, meta)
    _resume_fails(run_copy, "optimizer state does not match the model")


def test_resume_ema_of_another_model(run_copy):
    f = _last_step(run_copy) / "generator_ema.safetensors"
    meta, tensors = _meta_and_tensors(f)
    tensors.pop(next(iter(tensors)))
    write_safetensors(f, tensors, meta)
    _resume_fails(run_copy, "generator_ema.safetensors does not match")


def test_resume_flipped_byte(run_copy):
    f = _last_step(run_copy) / "discriminator.safetensors"
    data = bytearray(f.read_bytes())
    data[-10] ^= 0x40
    f.write_bytes(bytes(data))
    _resume_fails(run_copy, "discriminator.safetensors is corrupt", "checksum")


def test_resume_missing_optimizer(run_copy):
    (_last_step(run_copy) / "optimizer_d.safetensors").unlink()
    _resume_fails(run_copy, "no optimizer_d.safetensors")


# ---------------------------------------------------------------------- click's own errors


@pytest.mark.parametrize("args,needle", [
    (["sample", "RUN", "--n", "abc"], "Invalid value for '--n'"),
    (["train"], "Missing argument"),
    (["nosuchcommand"], "No such command"),
    (["sample", "RUN", "--bogus"], "No such option: --bogus"),
    (["traverse", "RUN", "--code", "c2", "--range", "1"], "'--range' requires 2 arguments"),
])
def test_usage_errors_are_one_line(tiny_run, args, needle):
    r = invoke(*[tiny_run if a == "RUN" else a for a in args])
    assert r.exit_code == 2
    one_line_error(r, needle)


def test_help_still_shows(tiny_run):
    r = invoke("sample", "--help")
    assert r.exit_code == 0 and "--overwrite" in r.stdout
    r = invoke()
    assert "Usage" in r.output and "sample" in r.output


def test_outputs_get_the_usual_modes(tiny_run, tmp_path):
    assert invoke("sample", tiny_run, "--n", 2, "--out", tmp_path / "d").exit_code == 0
    mask = os.umask(0)
    os.umask(mask)
    assert (tmp_path / "d").stat().st_mode & 0o777 == 0o777 & ~mask
    assert (tmp_path / "d" / "000000.png").stat().st_mode & 0o777 == 0o666 & ~mask


def test_resume_networks_of_another_shape(run_copy):
    step = _last_step(run_copy)
    for name in ("generator", "generator_ema"):
        meta, tensors = _meta_and_tensors(step / f"{name}.safetensors")
        key = next(k for k in tensors if k.endswith("weight") and tensors[k].dim() > 1)
        tensors[key] = tensors[key][:, :1].clone()
        write_safetensors(step / f"{name}.safetensors", tensors, meta)
    _resume_fails(run_copy, "does not match")


def test_resume_a_run_of_another_family(run_copy):
    d = json.loads((run_copy / "config.json").read_text())
    d["config"].update(model="gan", model_args={})
    (run_copy / "config.json").write_text(json.dumps(d))
    r = invoke("train", "gan", "--resume", run_copy, "--steps", 6, "--no-progress")
    one_line_error(r, "does not match")


def test_a_dotdot_path_through_a_missing_folder_cannot_replace_what_it_names(tiny_run, tmp_path):
    taken = tmp_path / "taken"
    taken.mkdir()
    (taken / "keep.png").write_bytes(b"mine")
    r = invoke("sample", tiny_run, "--n", "2", "--out", tmp_path / "missing" / ".." / "taken")
    one_line_error(r, "exists", "--overwrite")
    assert (taken / "keep.png").read_bytes() == b"mine" and not (tmp_path / "missing").exists()
    r = invoke("sample", tiny_run, "--n", "2", "--out", tmp_path / "missing" / ".." / "fresh")
    assert r.exit_code == 0 and len(list((tmp_path / "fresh").iterdir())) == 2
    assert not (tmp_path / "missing").exists()
