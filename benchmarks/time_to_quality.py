"""Time to quality: seconds of InfoGAN training on MNIST until c1 picks the digit.

Each seed trains `gancli train infogan --recipe mnist` (plus any options after `--`) with
evaluation every `--eval-every` steps: c1's accuracy after one-to-one (Hungarian) matching, judged
by the recipe classifier on `--eval-samples` EMA samples. Training time is summed from the log
windows in metrics.jsonl, so evaluation and start-up are excluded (and reported apart).

    python benchmarks/time_to_quality.py --seeds 0 1 2 [--target 0.95] [--epochs 3]
        [--parallel 2] [--recipe mnist|FILE.toml] [--out DIR]
        [-- --mixed-precision bf16 --batch-size 128]

Prints, per seed, the first evaluated step at or above the target, its training seconds and
epoch, and the accuracy at every evaluation; then the median over seeds.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path

DEFAULT_DATA = Path(__file__).resolve().parents[2] / "shared" / "data" / "MNIST" / "raw"


def read(run: Path) -> dict:
    """The log windows (end step, images/s) and c1 accuracy at each evaluation."""
    windows, evals, per_epoch = [], {}, None
    batch = json.loads((run / "config.json").read_text())["config"]["train"]["batch_size"]
    for line in (run / "metrics.jsonl").read_text().splitlines():
        r = json.loads(line)
        if "images_per_s" in r:
            windows.append((r["step"], r["images_per_s"]))
            if r.get("epoch"):
                per_epoch = r["step"] / r["epoch"]
        elif r.get("eval") and "code_accuracy" in r:
            evals[r["step"]] = r["code_accuracy"]
    return {"windows": windows, "batch": batch, "evals": evals, "steps_per_epoch": per_epoch}


def training_seconds(r: dict, step: int) -> float:
    """Seconds of training up to `step`: whole log windows, then the part of the next one at
    that window's rate."""
    t, start = 0.0, 0
    for end, ips in r["windows"]:
        t += (min(end, step) - start) * r["batch"] / ips
        if end >= step:
            break
        start = end
    return t


def main() -> int:
    argv = sys.argv[1:]
    extra = argv[argv.index("--") + 1:] if "--" in argv else []
    argv = argv[: argv.index("--")] if "--" in argv else argv
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    ap.add_argument("--target", type=float, default=0.95)
    ap.add_argument("--epochs", type=float, default=3)
    ap.add_argument("--eval-every", type=int, default=200)
    ap.add_argument("--eval-samples", type=int, default=2000)
    ap.add_argument("--parallel", type=int, default=1, help="seeds trained at once "
                    "(each with OMP_NUM_THREADS = cores / parallel)")
    ap.add_argument("--data", default=os.environ.get("GANCLI_MNIST_DIR", str(DEFAULT_DATA)))
    ap.add_argument("--recipe", default="mnist", help="the mnist recipe, or a .toml variant of it")
    ap.add_argument("--out", default="runs/ttq")
    a = ap.parse_args(argv)
    gancli = Path(sys.executable).parent / "gancli"
    out = Path(a.out)
    out.mkdir(parents=True, exist_ok=True)
    threads = max(1, (os.cpu_count() or 1) // a.parallel)
    env = {**os.environ, "OMP_NUM_THREADS": str(threads)}
    pending = list(a.seeds)
    running: list[tuple[int, subprocess.Popen]] = []
    started = time.time()
    while pending or running:
        while pending and len(running) < a.parallel:
            s = pending.pop(0)
            run = out / f"seed{s}"
            cmd = [str(gancli), "train", "infogan", "--recipe", a.recipe, "--data", a.data,
                   "--seed", str(s), "--epochs", str(a.epochs), "--eval-every", str(a.eval_every),
                   "--eval-metric", "score", "--out", str(run), "--no-progress",
                   "--checkpoint-every", "100000", *extra]
            if run.exists():
                print(f"seed {s}: {run} exists, read as it is", flush=True)
                continue
            running.append((s, subprocess.Popen(cmd, env=env, stdout=subprocess.DEVNULL,
                                                stderr=subprocess.PIPE, text=True)))
        for s, p in list(running):
            if p.poll() is not None:
                running.remove((s, p))
                if p.returncode:
                    print(f"seed {s} failed: {p.stderr.read()[-1000:]}", file=sys.stderr)
        time.sleep(1)
    results = []
    for s in a.seeds:
        r = read(out / f"seed{s}")
        hit = next((step for step in sorted(r["evals"]) if r["evals"][step] >= a.target), None)
        secs = training_seconds(r, hit) if hit else None
        accs = " ".join(f"{step}:{acc:.3f}" for step, acc in sorted(r["evals"].items()))
        epoch = hit / r["steps_per_epoch"] if hit and r["steps_per_epoch"] else None
        print(f"seed {s}: " + (f"{a.target} at step {hit} (epoch {epoch:.2f}), "
                               f"{secs:.0f} s of training" if hit else f"never reached {a.target}")
              + f"   [{accs}]")
        results.append(secs if secs is not None else float("inf"))
    med = statistics.median(results)
    print(f"median time to c1 accuracy >= {a.target}: "
          + (f"{med:.0f} s" if med != float("inf") else "not reached")
          + f" over seeds {a.seeds}; wall-clock of the whole script {time.time() - started:.0f} s"
          + f" ({a.parallel} at a time, {threads} threads each)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
