"""Runs that share a directory: one writer per run (an flock a killed holder drops), no run
inside a foreign non-empty directory, and nothing left behind by a run that fails in set-up."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest

from conftest import invoke
from gancli.train.lock import LOCK_NAME

pytestmark = pytest.mark.skipif(sys.platform == "win32", reason="flock is POSIX")

HOLD = """
import sys, time
from pathlib import Path
from gancli.train.lock import RunLock
RunLock(Path(sys.argv[1])).acquire()
print("held", flush=True)
time.sleep(600)
"""


def one_error(r) -> str:
    assert r.exit_code == 2, r.output
    assert "Traceback" not in r.output
    lines = r.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: "), r.stderr
    return lines[0]


def hold(run: Path) -> subprocess.Popen:
    """Another process holding the run's lock, as a `gancli train` writing it does."""
    run.mkdir(parents=True, exist_ok=True)
    p = subprocess.Popen([sys.executable, "-c", HOLD, str(run)], stdout=subprocess.PIPE,
                         text=True, env={**os.environ, "OMP_NUM_THREADS": "1"})
    assert p.stdout.readline().strip() == "held"
    return p


def test_second_train_refuses_then_runs_once_holder_is_killed(tiny_recipe, tmp_path):
    run = tmp_path / "shared"
    holder = hold(run)
    try:
        line = one_error(invoke("train", "infogan", "--recipe", tiny_recipe, "--out", run,
                                "--no-progress", "--steps", "2"))
        assert f"pid {holder.pid}" in line and "being written" in line, line
        assert sorted(os.listdir(run)) == [LOCK_NAME]       # the refused run wrote nothing
    finally:
        holder.send_signal(signal.SIGKILL)
        holder.wait()
    # killed: the kernel dropped the lock, and the directory holds only the lock file: free
    r = invoke("train", "infogan", "--recipe", tiny_recipe, "--out", run, "--no-progress",
               "--steps", "2")
    assert r.exit_code == 0, r.output
    assert (run / "checkpoints" / "step-0000002" / "generator.safetensors").is_file()


def test_resume_of_a_run_being_trained_refuses(tiny_run):
    holder = hold(tiny_run)
    try:
        before = sorted(p.name for p in (tiny_run / "checkpoints").iterdir())
        line = one_error(invoke("train", "infogan", "--resume", tiny_run, "--steps", "8",
                                "--no-progress"))
        assert f"pid {holder.pid}" in line, line
        assert sorted(p.name for p in (tiny_run / "checkpoints").iterdir()) == before
    finally:
        holder.kill()
        holder.wait()


def test_foreign_non_empty_out_is_refused_and_untouched(tiny_recipe, tmp_path):
    data = tmp_path / "photos"
    data.mkdir()
    (data / "cat.jpg").write_bytes(b"not mine")
    line = one_error(invoke("train", "infogan", "--recipe", tiny_recipe, "--out", data,
                            "--no-progress"))
    assert "not a gancli run" in line and "cat.jpg" in line, line
    assert sorted(os.listdir(data)) == ["cat.jpg"]
    afile = tmp_path / "notes.txt"
    afile.write_text("x")
    assert "is a file" in one_error(invoke("train", "infogan", "--recipe", tiny_recipe,
                                           "--out", afile, "--no-progress"))


def test_failed_set_up_leaves_nothing(tiny_recipe, tmp_path, monkeypatch):
    from gancli.errors import GancliError
    from gancli.train import loop

    def refuse(*a, **k):
        raise GancliError("a set-up check failed")

    # after the directory is claimed and config.json written: what a late set-up failure meets
    monkeypatch.setattr(loop.trackers, "start", refuse)
    run = tmp_path / "new" / "run"
    args = ("train", "infogan", "--recipe", tiny_recipe, "--no-progress", "--steps", "2")
    assert "set-up check" in one_error(invoke(*args, "--out", run))
    assert not run.exists()
    empty = tmp_path / "empty"
    empty.mkdir()
    one_error(invoke(*args, "--out", empty))
    assert set(os.listdir(empty)) <= {LOCK_NAME}      # an empty folder given stays empty
    monkeypatch.undo()
    assert invoke(*args, "--out", run).exit_code == 0   # the same --out, free again
