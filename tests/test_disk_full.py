"""Full disks and file modes: a write that meets ENOSPC is one line naming the file and the room
it needs, leaves the last complete checkpoint and no temporary file; every file gancli writes
(checkpoints' safetensors included) gets the mode the user's umask gives."""

from __future__ import annotations

import errno
import os
import stat
from pathlib import Path

import pytest
import torch

from conftest import invoke
from gancli import files
from gancli.files import OutputError, append_jsonl, atomic_dir, write_json, write_safetensors

FULL = OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))


def leftovers(root: Path) -> list[str]:
    return [str(p) for p in root.rglob("*") if p.name.startswith(".") and p.name != ".gancli-lock"]


def test_full_disk_mid_training_keeps_last_checkpoint(tiny_recipe, tmp_path, monkeypatch):
    real, calls = files.save_file, []

    def save_file(tensors, name, metadata=None):
        calls.append(name)
        if len(calls) > 6:          # the first checkpoint's six files go through, then full
            with open(name, "wb") as f:
                f.write(b"half")    # a half-written file, as a real full disk leaves it
            raise FULL
        return real(tensors, name, metadata=metadata)

    monkeypatch.setattr(files, "save_file", save_file)
    run = tmp_path / "run"
    r = invoke("train", "infogan", "--recipe", tiny_recipe, "--out", run, "--no-progress")
    assert r.exit_code == 2, r.output
    assert "Traceback" not in r.output
    lines = r.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: cannot write "), r.stderr
    line = lines[0]
    assert "checkpoints/step-0000004/" in line and ".safetensors" in line, line
    assert "No space left" in line and "needs about" in line and "free there" in line, line
    ckpts = sorted(p.name for p in (run / "checkpoints").iterdir())
    assert ckpts == ["step-0000002"], ckpts
    monkeypatch.undo()
    from gancli.checkpoint import load_generator
    load_generator(run / "checkpoints" / "step-0000002")     # whole, checksum and all
    assert leftovers(run) == []


@pytest.mark.parametrize("write", ["json", "jsonl", "png", "dir"])
def test_every_writer_says_full_disk_in_one_line(tmp_path, monkeypatch, write):
    target = tmp_path / "out" / {"json": "a.json", "jsonl": "m.jsonl", "png": "g.png",
                                 "dir": "step"}[write]

    def full(*a, **k):
        raise FULL

    with pytest.raises(OutputError) as e:
        if write == "json":
            monkeypatch.setattr(Path, "write_text", full)
            write_json(target, {"a": 1})
        elif write == "jsonl":
            monkeypatch.setattr(os, "write", full)
            append_jsonl(target, {"step": 1})
        elif write == "png":
            from gancli.viz import save_grid
            monkeypatch.setattr("PIL.Image.Image.save", full)
            save_grid(torch.zeros(4, 1, 8, 8, dtype=torch.uint8), target, nrow=2)
        else:
            with atomic_dir(target) as tmp:
                write_safetensors(tmp / "w.safetensors", {"w": torch.zeros(1000)})
                monkeypatch.setattr(files, "save_file", full)
                write_safetensors(tmp / "x.safetensors", {"x": torch.zeros(1000)})
    monkeypatch.undo()
    msg = str(e.value)
    assert "\n" not in msg and "No space left" in msg and "free some space" in msg, msg
    assert str(target) in msg and ".tmp" not in msg, msg
    if write == "dir":
        assert "needs about" in msg, msg   # what was written plus the failed file
    assert leftovers(tmp_path) == []
    assert not target.exists() or write == "jsonl"


def test_library_write_full_disk_is_one_line():
    from gancli.cli.base import explain

    code, line = explain(OSError(errno.EDQUOT, os.strerror(errno.EDQUOT), "/x/events.out"))
    assert code == 2 and line.startswith("cannot write /x/events.out") and "space" in line


@pytest.mark.parametrize("mask,fmode,dmode", [(0o022, 0o644, 0o755), (0o002, 0o664, 0o775)])
def test_files_follow_the_umask(tmp_path, mask, fmode, dmode):
    old = os.umask(mask)
    try:
        with atomic_dir(tmp_path / "ckpt") as tmp:
            write_safetensors(tmp / "g.safetensors", {"w": torch.ones(3)})
            write_json(tmp / "state.json", {"a": 1})
        write_safetensors(tmp_path / "export.safetensors", {"w": torch.ones(3)})
        append_jsonl(tmp_path / "metrics.jsonl", {"step": 1})
    finally:
        os.umask(old)
    mode = lambda p: stat.S_IMODE(p.stat().st_mode)   # noqa: E731
    assert mode(tmp_path / "ckpt") == dmode
    for p in [tmp_path / "ckpt" / "g.safetensors", tmp_path / "ckpt" / "state.json",
              tmp_path / "export.safetensors", tmp_path / "metrics.jsonl"]:
        assert mode(p) == fmode, (p, oct(mode(p)))


def test_a_trained_run_follows_the_umask(tiny_run):
    # the session's run was written under the test process's umask
    mask = os.umask(0)
    os.umask(mask)
    for p in tiny_run.rglob("*"):
        if p.is_file():
            assert stat.S_IMODE(p.stat().st_mode) == 0o666 & ~mask, p
