"""Commands without RUN take the newest run under ./runs and say which one."""

from __future__ import annotations

import os
import shutil
import time

import pytest

from conftest import invoke


def test_no_run_says_how_to_train_one(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    for cmd in (["sample"], ["traverse", "--code", "c1"], ["score"], ["fid"], ["interpolate"]):
        r = invoke(*cmd)
        assert r.exit_code == 2, (cmd, r.output)
        assert "no run under ./runs" in r.stderr and "gancli train" in r.stderr
        assert "Traceback" not in r.output


def test_the_newest_run_is_used_and_named(tiny_run, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "runs").mkdir()
    old, new = tmp_path / "runs" / "b-old", tmp_path / "runs" / "a-new"
    shutil.copytree(tiny_run, old)
    shutil.copytree(tiny_run, new)
    (tmp_path / "runs" / "not-a-run").mkdir()            # no config.json: ignored
    past = time.time() - 3600
    for root, dirs, files in os.walk(old):
        for f in dirs + files:
            os.utime(os.path.join(root, f), (past, past))
    os.utime(old, (past, past))
    r = invoke("sample", "--n", "4", "--out", tmp_path / "s.png")
    assert r.exit_code == 0, r.output
    assert "using the newest run: runs/a-new" in r.stderr
    assert (tmp_path / "s.png").is_file()
    # a named RUN is used as given, silently
    r = invoke("sample", old, "--n", "4", "--out", tmp_path / "t.png")
    assert r.exit_code == 0 and "newest" not in r.stderr


@pytest.mark.parametrize("cmd", [["traverse", "--code", "c1"], ["interpolate"]])
def test_explore_commands_default_to_the_newest_run(tiny_run, tmp_path, monkeypatch, cmd):
    monkeypatch.chdir(tmp_path)
    shutil.copytree(tiny_run, tmp_path / "runs" / "only")
    r = invoke(*cmd, "--out", tmp_path / "x.png")
    assert r.exit_code == 0, r.output
    assert "using the newest run: runs/only" in r.stderr
