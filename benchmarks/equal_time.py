"""Families compared at equal CPU time (issue 21: r3gan against DCGAN): each run trains until its
process has used --budget CPU seconds, and each is judged at the same CPU times.

Usage: python benchmarks/equal_time.py --recipe R [--data DIR] [--limit L] --models dcgan,r3gan
       [--seeds 0,1,2] --budget SECONDS [--points 4] [--every K] [--judge fid|score] [--n N]
       [--ref-n R] [--parallel P] [--device cpu] [--out DIR] [--json] [-- EXTRA TRAIN OPTIONS]

Why CPU time and not wall time: on a shared machine the wall clock of a run depends on what else
runs; the CPU seconds its process spends do not, or far less (each run gets cores / P threads,
one each for two runs on 2 cores). The loop logs `cpu_s`, the process's CPU seconds per log
window, in metrics.jsonl; a run's CPU time at a step is the sum up to that step. This script
starts `gancli train MODEL --steps <large> --checkpoint-every K --log-every K`, watches those
records, and stops the run cleanly (SIGINT: the loop checkpoints and exits) once it has used the
budget. Then at each of --points CPU times (budget / points, 2 budget / points, ..., budget) it
judges, per run, the last checkpoint reached within that time: FID and KID of the EMA generator
against the whole training split (judging.py; --judge score: the recipe classifier's FD and
class coverage, for the digits). Each family keeps its recipe's schedules (r3gan's cosine decays
run over its recipe's decay_steps: set them to what the budget reaches).

A run stopped part-way (this script killed, a time limit) resumes from its last checkpoint when
the script runs again with the same --out, and judged checkpoints are never judged twice; a
larger --budget continues the runs.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

from judging import GANCLI, Judge, checkpoint_steps, training_records

STEPS = 10 ** 7     # "until stopped": the budget ends each run, not a step count


def cpu_at(run_dir: Path) -> dict[int, float]:
    """Cumulative CPU seconds of training at each logged step."""
    total, out = 0.0, {}
    for r in training_records(run_dir):
        total += float(r.get("cpu_s") or 0.0)
        out[int(r["step"])] = total
    return out


def train(args: argparse.Namespace, model: str, seed: int, run_dir: Path) -> None:
    """Train (or continue) one run until its CPU time reaches the budget."""
    used = max(cpu_at(run_dir).values(), default=0.0) if checkpoint_steps(run_dir) else 0.0
    if used >= args.budget:
        return
    env = {**os.environ, "OMP_NUM_THREADS": str(max(1, (os.cpu_count() or 1) // args.parallel))}
    if checkpoint_steps(run_dir):
        cmd = [*GANCLI, "train", model, "--resume", str(run_dir), "--steps", str(STEPS),
               "--no-progress"]
    else:
        shutil.rmtree(run_dir, ignore_errors=True)   # stopped before its first checkpoint
        cmd = [*GANCLI, "train", model, "--recipe", args.recipe, "--steps", str(STEPS),
               "--seed", str(seed), "--out", str(run_dir), "--checkpoint-every", str(args.every),
               "--log-every", str(args.every), "--sample-every", str(STEPS), "--no-progress",
               *args.extra]
        cmd += ["--data", args.data] if args.data else []
        cmd += ["--limit", str(args.limit)] if args.limit else []
        cmd += ["--cpu"] if args.device == "cpu" else []
    log = (run_dir.parent / f"{run_dir.name}.log").open("a")
    proc = subprocess.Popen(cmd, env=env, stdout=log, stderr=subprocess.STDOUT)
    try:
        while proc.poll() is None:
            time.sleep(1.0)
            if max(cpu_at(run_dir).values(), default=0.0) >= args.budget:
                proc.send_signal(signal.SIGINT)   # a clean stop: checkpoint, then exit
                proc.wait()
    finally:
        if proc.poll() is None:
            proc.kill()
        log.close()
    if max(cpu_at(run_dir).values(), default=0.0) < args.budget:
        sys.exit(f"{run_dir}: training ended before its budget (see {run_dir.name}.log)")


def judged_at(args: argparse.Namespace, judge: Judge, run_dir: Path) -> list[dict]:
    """Per point: the run's last checkpoint within that CPU time, and its figures."""
    cpu, have = cpu_at(run_dir), set(checkpoint_steps(run_dir))
    logged = training_records(run_dir)
    env = {**os.environ, "OMP_NUM_THREADS": str(max(1, (os.cpu_count() or 1) // args.parallel))}
    out = []
    for i in range(1, args.points + 1):
        t = args.budget * i / args.points
        steps = [s for s, c in cpu.items() if c <= t and s in have]
        if not steps:
            out.append({"cpu_s": t, "step": None})
            continue
        step = max(steps)
        last = next(r for r in reversed(logged) if r["step"] <= step)
        out.append({"cpu_s": t, "step": step, "cpu_used": round(cpu[step], 1),
                    "images": step * int(json.loads((run_dir / "config.json").read_text())
                                         ["config"]["train"]["batch_size"]),
                    "d_real_positive": last.get("d_real_positive"),
                    **judge(run_dir, step, env)})
    return out


def table(rows: list[dict], models: list[str]) -> str:
    lines = [f"{'model':8} {'seed':>4} {'CPU s':>8} {'step':>7} {'images':>9} {'FID/FD':>9} "
             f"{'KID':>8} {'D+ real':>7} {'<5%':>4}"]
    for r in rows:
        for p in r["points"]:
            if p["step"] is None:
                lines.append(f"{r['model']:8} {r['seed']:>4} {p['cpu_s']:>8.0f}  (no checkpoint yet)")
                continue
            kid = f"{p['kid']:>8.4f}" if "kid" in p else f"{'-':>8}"
            dpos = "-" if p["d_real_positive"] is None else f"{p['d_real_positive']:.3f}"
            # --judge score: classes under 5% of the samples (the classifier's coverage)
            under = p.get("classes_under_5pct")
            lines.append(f"{r['model']:8} {r['seed']:>4} {p['cpu_s']:>8.0f} {p['step']:>7} "
                         f"{p['images']:>9} {p['fd']:>9.2f} {kid} {dpos:>7} "
                         f"{'-' if under is None else under:>4}")
    lines.append("")
    base = models[0]
    for i, p0 in enumerate(rows[0]["points"]):
        per = {m: [r["points"][i]["fd"] for r in rows if r["model"] == m
                   and r["points"][i]["step"] is not None] for m in models}
        if not all(per.values()):
            continue
        means = {m: statistics.mean(v) for m, v in per.items()}
        spread = {m: (min(v), max(v)) for m, v in per.items()}
        parts = [f"{m} {means[m]:.1f} ({spread[m][0]:.1f}-{spread[m][1]:.1f})" for m in models]
        rel = [f"{m} {100 * (means[m] / means[base] - 1):+.0f}% vs {base}" for m in models[1:]]
        lines.append(f"at {p0['cpu_s']:.0f} CPU s: mean (range) " + ", ".join(parts)
                     + ("; " + ", ".join(rel) if rel else ""))
    return "\n".join(lines)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--recipe", required=True)
    ap.add_argument("--data", default=None)
    ap.add_argument("--limit", type=int, default=None)
    ap.add_argument("--models", default="dcgan,r3gan", help="the first is the baseline")
    ap.add_argument("--seeds", default="0,1,2")
    ap.add_argument("--budget", type=float, required=True, help="CPU seconds per run")
    ap.add_argument("--points", type=int, default=4, help="CPU times judged, evenly spaced")
    ap.add_argument("--every", type=int, default=100, help="checkpoint and log every K steps")
    ap.add_argument("--judge", choices=("score", "fid"), default="fid")
    ap.add_argument("--n", type=int, default=500)
    ap.add_argument("--ref-n", type=int, default=None)
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--parallel", type=int, default=1)
    ap.add_argument("--out", default=None)
    ap.add_argument("--json", action="store_true")
    ap.add_argument("extra", nargs="*", help="more options for gancli train (after --)")
    args = ap.parse_args()
    if not (args.budget > 0 and args.points >= 1 and args.every >= 1):
        sys.exit("--budget, --points and --every must be positive")
    models = [m.strip() for m in args.models.split(",") if m.strip()]
    out = Path(args.out or tempfile.mkdtemp(prefix="equal-time-"))
    out.mkdir(parents=True, exist_ok=True)
    jobs = [(m, int(s)) for s in args.seeds.split(",") for m in models]
    judge = Judge(args.judge, args.n, args.device, args.ref_n)

    def one(job: tuple[str, int]) -> dict:
        model, seed = job
        run_dir = out / f"{model}-s{seed}"
        train(args, model, seed, run_dir)
        return {"model": model, "seed": seed, "run": str(run_dir),
                "points": judged_at(args, judge, run_dir)}

    with ThreadPoolExecutor(max(1, args.parallel)) as pool:
        rows = list(pool.map(one, jobs))
    rows.sort(key=lambda r: (models.index(r["model"]), r["seed"]))
    print(json.dumps(rows, indent=1) if args.json else table(rows, models))


if __name__ == "__main__":
    main()
