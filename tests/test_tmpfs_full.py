"""A real full disk (issue 23): a small tmpfs, mounted for the test where this user may (root in
a container that allows it; skipped elsewhere). `train` refuses a disk without room for a
checkpoint before it starts, and a disk that fills mid-run ends with one line, the last complete
checkpoint whole and no partial file."""

from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path

import pytest

from conftest import TINY_RECIPE, invoke
from gancli import checks
from gancli.recipes import resolve


@pytest.fixture
def tmpfs(tmp_path):
    """mount(size) -> a fresh tmpfs of `size` bytes at a folder under tmp_path."""
    mounted = []

    def mount(size: int) -> Path:
        where = tmp_path / f"tmpfs{len(mounted)}"
        where.mkdir()
        if os.geteuid() != 0 or not shutil.which("mount"):
            pytest.skip("mounting a tmpfs needs root")
        r = subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={size}", "tmpfs", str(where)],
                           capture_output=True, text=True)
        if r.returncode != 0:
            pytest.skip(f"cannot mount a tmpfs here: {r.stderr.strip()[:200]}")
        mounted.append(where)
        return where

    yield mount
    for where in mounted:
        subprocess.run(["umount", "-l", str(where)], capture_output=True)


def one_error(r) -> str:
    assert r.exit_code == 2, r.output
    assert "Traceback" not in r.output
    lines = [x for x in r.stderr.splitlines() if x.strip()]
    assert len(lines) == 1 and lines[0].startswith("error: "), r.stderr
    return lines[0]


def test_a_disk_without_room_is_refused_before_training(tiny_recipe, tmpfs):
    disk = tmpfs(1 << 20)                       # 1 MiB: a tiny InfoGAN checkpoint is ~65 MB
    line = one_error(invoke("train", "infogan", "--recipe", tiny_recipe, "--out", disk / "run"))
    assert "not enough room" in line and "free there" in line
    assert list(disk.iterdir()) == []


def test_a_disk_that_fills_mid_run_keeps_the_last_checkpoint(tmp_path, tmpfs):
    recipe = tmp_path / "six.toml"
    recipe.write_text(TINY_RECIPE.replace("steps = 4", "steps = 6"))
    g, d = checks.model_sizes(resolve("infogan", str(recipe)))
    # Room for the check (two checkpoints) and a little more: the third checkpoint fills it.
    disk = tmpfs(checks.SAFETY * checks.checkpoint_bytes(g, d) + (256 << 10))
    run = disk / "run"
    line = one_error(invoke("train", "infogan", "--recipe", recipe, "--out", run, "--no-progress"))
    assert line.startswith("error: cannot write ") and "step-0000006" in line, line
    assert "No space left" in line and "needs about" in line, line
    assert sorted(p.name for p in (run / "checkpoints").iterdir()) == ["step-0000002",
                                                                        "step-0000004"]
    from gancli.checkpoint import load_generator
    load_generator(run / "checkpoints" / "step-0000004")      # whole, checksum and all
    hidden = [str(p) for p in run.rglob("*") if p.name.startswith(".") and
              p.name != ".gancli-lock"]
    assert hidden == []                                       # no temporary file left
