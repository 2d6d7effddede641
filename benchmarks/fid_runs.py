"""Real Inception FID and KID of every checkpoint of one or more runs, and a table per run.

    python benchmarks/fid_runs.py RUN [RUN ...] [--every 1000] [--n 2000] [--precision bf16]

Each (run, step) is measured once with `gancli fid RUN --step S --n N --json` (the EMA generator,
the run's recipe data as the reference: the whole training split, its features computed once
and cached) and recorded in the run's metrics.jsonl by `fid` itself; a second invocation only
prints what is recorded (so it resumes an interrupted pass and picks up new checkpoints). Every
run is measured with the same n, seed, reference and precision, so the figures compare; they do
not compare with figures of another n or precision (FID's bias shrinks as n grows; bf16 moved a
real FID by about 1%, docs/performance.md).

Per run it prints FID and KID at each measured step, the best (and its step), the last, and
D's positive fraction on real images over training (from the training records).
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
from pathlib import Path


def records(run: Path) -> list[dict]:
    log = run / "metrics.jsonl"
    if not log.is_file():
        return []
    out = []
    for line in log.read_text().splitlines():
        try:
            out.append(json.loads(line))
        except json.JSONDecodeError:
            continue
    return out


def measured(run: Path, n: int, seed: int, precision: str) -> dict[int, dict]:
    return {r["step"]: r for r in records(run)
            if r.get("kind") == "fid" and not r.get("eval") and r.get("n") == n
            and r.get("seed") == seed and r.get("inception_precision") == precision
            and r.get("ema", True)}


def steps_of(run: Path, every: int) -> list[int]:
    ck = run / "checkpoints"
    steps = sorted(int(p.name.split("-")[1]) for p in ck.glob("step-*") if p.is_dir()) \
        if ck.is_dir() else []
    return [s for s in steps if s % every == 0 or s == steps[-1]]


def measure(run: Path, step: int, n: int, seed: int, precision: str, batch: int) -> None:
    cmd = [sys.executable, "-m", "gancli", "fid", str(run), "--step", str(step), "--n", str(n),
           "--seed", str(seed), "--precision", precision, "--json", "--batch-size", str(batch),
           "--device", "cpu"]
    r = subprocess.run(cmd, capture_output=True, text=True)
    if r.returncode != 0:
        print(f"  {run.name} step {step}: failed: {r.stderr.strip().splitlines()[-1:]}",
              file=sys.stderr)


def d_real_positive(run: Path) -> list[tuple[int, float]]:
    return [(r["step"], r["d_real_positive"]) for r in records(run)
            if "d_real_positive" in r and "kind" not in r]


def table(run: Path, got: dict[int, dict]) -> None:
    print(f"\n{run}")
    if not got:
        print("  nothing measured yet")
        return
    print("  step    FID      KID x1000")
    for s in sorted(got):
        print(f"  {s:<6d}  {got[s]['fid']:7.2f}  {1000 * got[s]['kid']:6.2f} ± "
              f"{1000 * got[s]['kid_std']:.2f}")
    best = min(got, key=lambda s: got[s]["fid"])
    last = max(got)
    print(f"  best FID {got[best]['fid']:.2f} at step {best}; last {got[last]['fid']:.2f} at "
          f"step {last}")
    dp = d_real_positive(run)
    if dp:
        marks = [x for x in dp if x[0] in got or x is dp[-1]]
        print("  D positive on reals: " + ", ".join(f"{s}: {v:.2f}" for s, v in marks))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("runs", nargs="+", type=Path)
    ap.add_argument("--every", type=int, default=1000, help="measure checkpoints at multiples "
                                                            "of this step (and the last)")
    ap.add_argument("--n", type=int, default=2000)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--precision", default="bf16", choices=("fp32", "bf16"))
    ap.add_argument("--batch-size", type=int, default=64)
    ap.add_argument("--report-only", action="store_true", help="measure nothing new")
    args = ap.parse_args()
    for run in args.runs:
        if not args.report_only:
            have = measured(run, args.n, args.seed, args.precision)
            for s in steps_of(run, args.every):
                if s not in have:
                    print(f"measuring {run.name} step {s} ...", file=sys.stderr, flush=True)
                    measure(run, s, args.n, args.seed, args.precision, args.batch_size)
    for run in args.runs:
        table(run, measured(run, args.n, args.seed, args.precision))


if __name__ == "__main__":
    main()
