"""Stopping real training processes: Ctrl-C, SIGTERM, a second Ctrl-C, SIGKILL, and a signal to
one rank of two. Each process runs in its own session, as a terminal's foreground job would."""

from __future__ import annotations

import json
import os
import random
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from conftest import invoke
from gancli.checkpoint import load_generator, step_dirs
from test_resume import assert_identical, recipe, resume

BIN = Path(sys.executable).parent
ENV = {**os.environ, "OMP_NUM_THREADS": "1"}


def start(tmp_path: Path, out: Path, *extra: str, cmd: list[str] | None = None) -> subprocess.Popen:
    args = (cmd or [str(BIN / "gancli")]) + ["train", "infogan", "--recipe", str(recipe(tmp_path)),
                                             "--out", str(out), "--steps", "100000", "--cpu",
                                             "--no-progress", *extra]
    return subprocess.Popen(args, cwd=tmp_path, env=ENV, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True, start_new_session=True)


def gancli(cwd: Path, *args: object) -> None:
    r = subprocess.run([str(BIN / "gancli"), *map(str, args), "--no-progress"], cwd=cwd, env=ENV,
                       capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stderr


def wait_for(ready, proc: subprocess.Popen, timeout: float = 120) -> None:
    end = time.time() + timeout
    while time.time() < end:
        if ready():
            return
        if proc.poll() is not None:
            raise AssertionError(f"training ended early: {proc.communicate()}")
        time.sleep(0.05)
    proc.kill()
    raise AssertionError("training did not get there in time")


def wait_for_metrics(out: Path, proc: subprocess.Popen, lines: int = 1, timeout: float = 120) -> None:
    f = out / "metrics.jsonl"
    wait_for(lambda: f.is_file() and len(f.read_text().splitlines()) >= lines, proc, timeout)


@pytest.mark.parametrize("sig,code", [(signal.SIGINT, 130), (signal.SIGTERM, 143)])
def test_a_signal_finishes_the_step_checkpoints_and_resumes_exactly(sig, code, tmp_path):
    out = tmp_path / "run"
    proc = start(tmp_path, out)
    wait_for_metrics(out, proc, lines=2)
    os.killpg(proc.pid, sig)
    stdout, stderr = proc.communicate(timeout=120)
    assert proc.returncode == code, stderr
    lines = [line for line in stderr.splitlines() if line.strip()]
    assert len(lines) == 1 and "Traceback" not in stderr, stderr
    m = re.search(r"stopped at step (\d+)", lines[0])
    assert m and f"--resume {out}" in lines[0], lines[0]
    stopped = int(m.group(1))
    assert step_dirs(out)[-1][0] == stopped
    # The stopped run, resumed, is the run that was never stopped (both run as processes of
    # their own: the thread count, which changes float sums, must match).
    gancli(tmp_path, "train", "infogan", "--resume", out, "--steps", stopped + 5)
    straight = tmp_path / "straight"
    gancli(tmp_path, "train", "infogan", "--recipe", recipe(tmp_path), "--out", straight,
           "--steps", stopped + 5, "--cpu")
    assert_identical(straight, out)


def test_a_second_ctrl_c_quits_at_once_and_leaves_a_loadable_run(tmp_path):
    out = tmp_path / "run"
    proc = start(tmp_path, out, "--checkpoint-every", "3")
    wait_for_metrics(out, proc, lines=3)
    os.killpg(proc.pid, signal.SIGINT)
    os.killpg(proc.pid, signal.SIGINT)
    _, stderr = proc.communicate(timeout=120)
    assert proc.returncode == 130 and "Traceback" not in stderr, stderr
    assert load_generator(out).step == step_dirs(out)[-1][0]
    resume(out, step_dirs(out)[-1][0] + 2)


def test_sigkill_at_random_moments_never_leaves_an_unloadable_run(tmp_path):
    """The benchmark (benchmarks/kill_resume.py) does this many times; three kills here."""
    rng = random.Random(0)
    out = tmp_path / "run"
    for _ in range(3):
        extra = ("--checkpoint-every", "1", "--sample-every", "1", "--log-every", "1")
        if step_dirs(out):
            proc = subprocess.Popen([str(BIN / "gancli"), "train", "infogan", "--resume", str(out),
                                     "--steps", "100000", "--no-progress"], cwd=tmp_path, env=ENV,
                                    stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                                    start_new_session=True)
        else:
            proc = start(tmp_path, out, *extra)
        wait_for_metrics(out, proc, lines=1)
        wait_for(lambda: step_dirs(out), proc)     # a checkpoint to load, however slow the disk
        time.sleep(rng.uniform(0, 0.5))
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait()
        r = invoke("sample", out, "--n", "4", "--out", tmp_path / f"s{rng.random()}.png")
        assert r.exit_code == 0, r.output
    last = step_dirs(out)[-1][0]
    resume(out, last + 2)
    assert step_dirs(out)[-1][0] == last + 2


def test_under_two_processes_a_signal_to_one_rank_stops_both_at_the_same_step(tmp_path):
    torchrun = BIN / "torchrun"
    if not torchrun.exists():
        pytest.skip("torchrun is not installed beside this python")
    psutil = pytest.importorskip("psutil")
    out = tmp_path / "run"
    proc = start(tmp_path, out, cmd=[str(torchrun), "--standalone", "--nproc_per_node", "2",
                                     "--no-python", str(BIN / "gancli")])
    wait_for_metrics(out, proc, lines=2, timeout=240)
    workers = [c for c in psutil.Process(proc.pid).children(recursive=True)
               if "gancli" in " ".join(c.cmdline())]
    assert len(workers) == 2
    workers[-1].send_signal(signal.SIGTERM)          # one rank only
    stdout, stderr = proc.communicate(timeout=240)
    m = re.search(r"stopped at step (\d+)", stdout + stderr)
    assert m, stdout[-2000:] + stderr[-2000:]
    stopped = int(m.group(1))
    last = step_dirs(out)[-1]
    assert last[0] == stopped
    state = json.loads((last[1] / "state.json").read_text())
    assert state["rng"]["world_size"] == 2 and state["step"] == stopped
    assert load_generator(out).step == stopped
