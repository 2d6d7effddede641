"""Kill a real training run with SIGKILL at random moments, many times, and check it survives.

One run directory is trained, killed, resumed, killed again, and so on. After every kill the
script checks what a user would do next: `gancli sample RUN` must load the newest checkpoint and
`--resume` must continue (the next round's training is that check). Checkpoints are written every
step by default, so many kills land in the middle of a write.

    python benchmarks/kill_resume.py --kills 20 [--model infogan] [--recipe digits] [--out DIR]

Prints one line per kill and a summary; exits non-zero if any run could not be loaded or resumed.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

BIN = Path(sys.executable).parent
ENV = {**os.environ, "OMP_NUM_THREADS": "1"}


def gancli(*args: object, timeout: float = 600) -> subprocess.CompletedProcess:
    return subprocess.run([str(BIN / "gancli"), *map(str, args)], env=ENV, capture_output=True,
                          text=True, timeout=timeout)


def newest_step(run: Path) -> int | None:
    steps = [int(p.name[5:]) for p in (run / "checkpoints").glob("step-*") if p.is_dir()]
    return max(steps) if steps else None


def leftovers(run: Path) -> int:
    """Temporary files and directories an interrupted writer left (resume removes them)."""
    return sum(1 for folder in (run, run / "checkpoints", run / "samples") if folder.is_dir()
               for p in folder.iterdir() if p.name.startswith("."))


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--kills", type=int, default=20)
    ap.add_argument("--model", default="infogan")
    ap.add_argument("--recipe", default="digits")
    ap.add_argument("--checkpoint-every", type=int, default=1)
    ap.add_argument("--max-delay", type=float, default=10.0,
                    help="kill within this many seconds of the start (start-up included)")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--out", help="run directory (default: a temporary one, removed after)")
    a = ap.parse_args()

    rnd = random.Random(a.seed)
    tmp = Path(tempfile.mkdtemp(prefix="gancli-kill-"))
    run = Path(a.out) if a.out else tmp / "run"
    stats = {"kills": 0, "before_first_checkpoint": 0, "sample_ok": 0, "resume_ok": 0,
             "leftovers_seen": 0, "failures": 0}
    for i in range(a.kills):
        before = newest_step(run)
        if run.joinpath("config.json").is_file():
            cmd = ["train", a.model, "--resume", run, "--steps", 10 ** 7]
        else:
            cmd = ["train", a.model, "--recipe", a.recipe, "--out", run, "--steps", 10 ** 7,
                   "--checkpoint-every", a.checkpoint_every, "--sample-every", 5,
                   "--log-every", 5, "--cpu", "--seed", a.seed]
        proc = subprocess.Popen([str(BIN / "gancli"), *map(str, cmd), "--no-progress"], env=ENV,
                                stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True,
                                start_new_session=True)
        delay = rnd.uniform(0.5, a.max_delay)
        time.sleep(delay)
        if proc.poll() is not None:       # it failed by itself: a resume that could not load
            stats["failures"] += 1
            print(f"kill {i + 1}: training exited before the kill: {proc.stderr.read().strip()}")
            continue
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait()
        stats["kills"] += 1
        if before is not None:
            stats["resume_ok"] += 1     # it trained past start-up from the previous kill's state
        step = newest_step(run)
        left = leftovers(run)
        stats["leftovers_seen"] += bool(left)
        if step is None:
            stats["before_first_checkpoint"] += 1
            verdict = "no checkpoint yet (resume starts from step 0)"
        else:
            r = gancli("sample", run, "--n", 4, "--out", tmp / f"sample-{i}.png")
            if r.returncode == 0:
                stats["sample_ok"] += 1
                verdict = f"sample loads step {step}"
            else:
                stats["failures"] += 1
                verdict = f"SAMPLE FAILED: {r.stderr.strip()}"
        print(f"kill {i + 1}: after {delay:.2f} s, newest checkpoint {step}, "
              f"{left} temporary leftovers: {verdict}", flush=True)
    # The last kill's state must resume too.
    last = newest_step(run) or 0
    r = gancli("train", a.model, "--resume", run, "--steps", last + 3, "--no-progress")
    final_ok = r.returncode == 0 and newest_step(run) == last + 3
    stats["resume_ok"] += final_ok
    stats["failures"] += not final_ok
    stats["leftovers_after_resume"] = leftovers(run)
    print(("final resume: ok, step " + str(last + 3)) if final_ok else
          f"final resume FAILED: {r.stderr.strip()}")
    print(json.dumps(stats))
    if not a.out:
        shutil.rmtree(tmp, ignore_errors=True)
    return 1 if stats["failures"] else 0


if __name__ == "__main__":
    sys.exit(main())
