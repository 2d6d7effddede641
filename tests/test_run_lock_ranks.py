"""The run lock under several processes (issue 23): only the main process takes it; the others
wait for it at the broadcast of the run directory and stop with the main process when it cannot
have it, instead of going on (or reading a checkpoint another train is still writing)."""

from __future__ import annotations

import re
import subprocess
import time

from gancli.train.lock import RunLock
from test_distributed import WORKER, _env, recipe, torchrun  # noqa: F401 - fixtures


def test_two_processes_stop_together_on_a_locked_run(torchrun, recipe, tmp_path):  # noqa: F811
    out = tmp_path / "runs" / "busy"
    out.mkdir(parents=True)
    held = RunLock(out).acquire()        # another train is writing this directory
    try:
        t0 = time.monotonic()
        r = subprocess.run([str(torchrun), "--standalone", "--nproc_per_node", "2", str(WORKER),
                            "train", str(recipe), str(out), "4", "0", str(tmp_path / "digests")],
                           cwd=tmp_path, env=_env(tmp_path), capture_output=True, text=True,
                           timeout=300)
        took = time.monotonic() - t0
    finally:
        held.release()
    log = r.stdout + r.stderr
    assert r.returncode != 0, log[-3000:]
    assert "is being written by" in log, log[-3000:]
    assert "Timeout" not in log and took < 240
    # rank 1 left by itself (exit 2, not killed by torchrun) once told; nothing was written
    assert re.search(r"rank\s*: 1 \(local_rank: 1\)\s*exitcode\s*: 2\b", log), log[-3000:]
    assert sorted(p.name for p in out.iterdir()) == [".gancli-lock"]
    assert not (tmp_path / "digests").exists()
