"""Training with little data (issue 13): the same short runs with --augment none, diffaug and ada,
scored by `gancli score`.

Usage: python benchmarks/little_data.py [--data MNIST_RAW_DIR] [--recipe mnist] [--limit 2000]
       [--steps 3000] [--models dcgan,cgan] [--augment none,diffaug,ada] [--seeds 0,1,2]
       [--n 10000] [--device cuda] [--eval-every K] [--parallel P] [--out DIR] [--json]
       [-- EXTRA TRAIN OPTIONS]

Each (model, augment, seed) trains with `gancli train MODEL --recipe R --limit L --steps S
--augment A --seed s` in its own process, then `gancli score RUN --json` judges its last
checkpoint (EMA generator) with the recipe's classifier: the classifier's Fréchet distance
(lower is better), the smallest class share, the classes under 5%, and cGAN's label agreement.
The table gives each figure per seed and, per augmented policy, on how many seeds its Fréchet
distance is below the unaugmented run's (the issue's bar: clearly lower on at least 2 of 3).

--eval-every K also scores every K steps while training (classifier FD against a subset of the
training split, gancli's --eval-every): the table then shows each run's FD along the way, which
tells where the unaugmented run starts to degrade. --score-at S1,S2,... scores the checkpoints
of those steps too (the same runs give the comparison at several lengths of training).
--parallel P trains P runs at once, each with cores / P threads (for CPUs; on one GPU, P runs
share it). A run whose result is already in --out
is not trained again and an interrupted one resumes from its last checkpoint (gancli train
--resume), so a comparison stopped part-way (a time limit, Ctrl-C) continues where it stopped.
A larger --steps (with --score-at on the same checkpoint spacing) continues the runs of --out to
it and judges only the new checkpoints (judging.py keeps each judged one in RUN/judged/).
"""

from __future__ import annotations

import argparse
import json
import math
import os
import shutil
import statistics
import sys
import tempfile
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

from judging import GANCLI, Judge, checkpoint_steps, run, training_records
from judging import records as read_records


def train_and_score(args: argparse.Namespace, judge: Judge, model: str, augment: str,
                    seed: int, out: Path) -> dict:
    run_dir = out / f"{model}-{augment.replace(',', '+')}-s{seed}"
    done = run_dir / "little_data.json"
    old = json.loads(done.read_text()) if done.exists() else {}
    if set(map(str, args.score_at)) <= set(old.get("at", {})):
        return old
    env = {**os.environ, "OMP_NUM_THREADS": str(max(1, (os.cpu_count() or 1) // args.parallel))}
    trained = max(checkpoint_steps(run_dir), default=None)
    if trained is None and run_dir.exists():
        shutil.rmtree(run_dir)  # an attempt stopped before its first checkpoint: start again
    if trained is None:
        cmd = [*GANCLI, "train", model, "--recipe", args.recipe,
               *(["--limit", str(args.limit)] if args.limit else []),
               "--steps", str(args.steps), "--seed", str(seed), "--augment", augment,
               "--out", str(run_dir), "--checkpoint-every", str(math.gcd(*args.score_at)),
               "--sample-every", str(args.steps), "--no-progress", *args.extra]
        cmd += ["--data", args.data] if args.data else []
        cmd += ["--cpu"] if args.device == "cpu" else []
        cmd += ["--eval-every", str(args.eval_every)] if args.eval_every else []
        run(cmd, env)
    elif trained < args.steps:  # interrupted, or a longer comparison: continue from the last
        run([*GANCLI, "train", model, "--resume", str(run_dir), "--steps", str(args.steps),
             "--no-progress"], env)
    # (a run stopped while being scored is only scored again; steps judged before are kept)
    missing = [s for s in args.score_at if s not in checkpoint_steps(run_dir)]
    if missing:
        sys.exit(f"{run_dir}: no checkpoint at step {missing[0]} (it was trained with another "
                 f"--checkpoint-every): choose --score-at from {checkpoint_steps(run_dir)}")
    records = read_records(run_dir)
    logged = training_records(run_dir)
    at = {}
    for step in args.score_at:
        last = next((r for r in reversed(logged) if r["step"] <= step), {})
        figures = old.get("at", {}).get(str(step)) or judge(run_dir, step, env)
        at[str(step)] = {**figures, "d_real_positive": last.get("d_real_positive"),
                         "aug_p": last.get("aug_p")}
    row = {"model": model, "augment": augment, "seed": seed, "run": str(run_dir),
           **at[str(args.steps)], "at": at,
           "eval_fd": [[r["step"], r["classifier_fd"]] for r in records
                       if r.get("eval") and "classifier_fd" in r]}
    done.write_text(json.dumps(row))
    return row


def table(rows: list[dict], augments: list[str]) -> str:
    fid = "kid" in next(iter(rows[0]["at"].values()))
    f = lambda v, spec: "-" if v is None else format(v, spec)  # noqa: E731
    head = (f"{'FID':>9} {'KID':>8} {'KID std':>8}" if fid
            else f"{'FD':>9} {'min share':>9} {'<5%':>4} {'labels':>7}")
    lines = [f"{'model':8} {'augment':22} {'seed':>4} {'step':>6} {head} {'D+ real':>7} {'p':>6}"]
    steps = list(rows[0]["at"])
    for r in rows:
        for step, x in r["at"].items():
            figs = (f"{x['fd']:>9.2f} {x['kid']:>8.4f} {x['kid_std']:>8.4f}" if fid else
                    f"{x['fd']:>9.3f} {x['min_share']:>9.4f} {x['classes_under_5pct']:>4} "
                    f"{f(x['label_agreement'], '>7.4f')}")
            lines.append(f"{r['model']:8} {r['augment']:22} {r['seed']:>4} {step:>6} {figs} "
                         f"{f(x['d_real_positive'], '>7.3f')} {f(x['aug_p'], '>6.3f')}")
    lines.append("")
    name = "FID" if fid else "FD"
    for model in sorted({r["model"] for r in rows}, key=[r["model"] for r in rows].index):
        for step in steps:
            base = {r["seed"]: r["at"][step]["fd"] for r in rows
                    if r["model"] == model and r["augment"] == augments[0]}
            for a in augments:
                fds = {r["seed"]: r["at"][step]["fd"] for r in rows
                       if r["model"] == model and r["augment"] == a}
                wins = sum(fds[s] < base[s] for s in fds if s in base)
                note = ("" if a == augments[0]
                        else f"  below {augments[0]} on {wins} of {len(fds)} seeds")
                lines.append(f"{model:8} {a:22} step {step:>6}  {name} median "
                             f"{statistics.median(fds.values()):.3f}{note}")
        # Per run: the best measured figure and its step, beside the last.
        for r in rows:
            if r["model"] == model:
                best = min(r["at"], key=lambda k: r["at"][k]["fd"])
                lines.append(f"{model:8} {r['augment']:22} seed {r['seed']}  best {name} "
                             f"{r['at'][best]['fd']:.3f} at step {best}, last "
                             f"{r['at'][steps[-1]]['fd']:.3f}")
    if any(r["eval_fd"] for r in rows):
        lines += ["", "FD while training (against the training split), by step:"]
        for r in rows:
            lines.append(f"{r['model']:8} {r['augment']:22} {r['seed']:>4}  "
                         + " ".join(f"{s}:{fd:.2f}" for s, fd in r["eval_fd"]))
    return "\n".join(lines)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--recipe", default="mnist")
    ap.add_argument("--data", default=None, help="local copy of the data set (--data of train)")
    ap.add_argument("--limit", type=int, default=2000, help="training images (0: all of them)")
    ap.add_argument("--steps", type=int, default=3000)
    ap.add_argument("--models", default="dcgan,cgan")
    ap.add_argument("--augment", default="none,diffaug,ada",
                    help="policies separated by ';' or ',' (a comma list policy: use ';')")
    ap.add_argument("--seeds", default="0,1,2")
    ap.add_argument("--n", type=int, default=10000, help="samples scored per run")
    ap.add_argument("--judge", choices=("score", "fid"), default="score",
                    help="score: the recipe classifier's FD (MNIST); fid: Inception's FID and "
                    "KID against the whole training split (colour data)")
    ap.add_argument("--ref-n", type=int, default=None,
                    help="--judge fid: a fixed random subset of this many reference images "
                    "(default: the whole training split)")
    ap.add_argument("--device", default="cuda")
    ap.add_argument("--eval-every", type=int, default=0, help="score every K steps too")
    ap.add_argument("--parallel", type=int, default=1, help="runs trained at once")
    ap.add_argument("--score-at", default=None, help="steps whose checkpoints are scored, "
                    "comma-separated (default: the last); the last step always is")
    ap.add_argument("--out", default=None, help="where the runs go (default: a temporary dir)")
    ap.add_argument("--json", action="store_true", help="print the rows as JSON")
    ap.add_argument("extra", nargs="*", help="more options for gancli train (after --)")
    args = ap.parse_args()
    args.score_at = sorted({int(x) for x in (args.score_at or "").split(",") if x.strip()}
                           | {args.steps})
    if args.score_at[0] <= 0 or args.score_at[-1] > args.steps:
        sys.exit(f"--score-at: steps between 1 and --steps ({args.steps})")
    augments = [a.strip() for a in args.augment.split(";" if ";" in args.augment else ",")]
    out = Path(args.out or tempfile.mkdtemp(prefix="little-data-"))
    jobs = [(m, a, int(s)) for m in args.models.split(",") for a in augments
            for s in args.seeds.split(",")]
    with ThreadPoolExecutor(max(1, args.parallel)) as pool:
        judge = Judge(args.judge, args.n, args.device, args.ref_n)
        rows = list(pool.map(lambda j: train_and_score(args, judge, *j, out), jobs))
    print(json.dumps(rows, indent=1) if args.json else table(rows, augments))


if __name__ == "__main__":
    main()
