"""Training with little data (issue 13): the same short runs with --augment none, diffaug and ada,
scored by `gancli score`.

Usage: python benchmarks/little_data.py [--data MNIST_RAW_DIR] [--recipe mnist] [--limit 2000]
       [--steps 3000] [--models dcgan,cgan] [--augment none,diffaug,ada] [--seeds 0,1,2]
       [--n 10000] [--device cuda] [--out DIR] [--json] [-- EXTRA TRAIN OPTIONS]

Each (model, augment, seed) trains with `gancli train MODEL --recipe R --limit L --steps S
--augment A --seed s` in its own process, then `gancli score RUN --json` judges its last
checkpoint (EMA generator) with the recipe's classifier: the classifier's Fréchet distance
(lower is better), the smallest class share, the classes under 5%, and cGAN's label agreement.
The table gives each figure per seed and, per augmented policy, on how many seeds its Fréchet
distance is below the unaugmented run's (the issue's bar: clearly lower on at least 2 of 3).
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

GANCLI = [sys.executable, "-m", "gancli"]


def run(cmd: list[str]) -> str:
    r = subprocess.run(cmd, capture_output=True, text=True)
    if r.returncode != 0:
        sys.exit(f"failed: {' '.join(cmd)}\n{r.stderr[-3000:]}")
    return r.stdout


def train_and_score(args: argparse.Namespace, model: str, augment: str, seed: int,
                    out: Path) -> dict:
    run_dir = out / f"{model}-{augment.replace(',', '+')}-s{seed}"
    cmd = [*GANCLI, "train", model, "--recipe", args.recipe, "--limit", str(args.limit),
           "--steps", str(args.steps), "--seed", str(seed), "--augment", augment,
           "--out", str(run_dir), "--checkpoint-every", str(args.steps),
           "--sample-every", str(args.steps), "--no-progress", *args.extra]
    if args.data:
        cmd += ["--data", args.data]
    if args.device == "cpu":
        cmd.append("--cpu")
    run(cmd)
    res = json.loads(run([*GANCLI, "score", str(run_dir), "--json", "--n", str(args.n),
                          "--device", args.device]))
    last = [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()
            if '"step"' in line and '"kind"' not in line][-1]
    return {"model": model, "augment": augment, "seed": seed, "run": str(run_dir),
            "classifier_fd": res["classifier_fd"], "min_share": res["min_share"],
            "classes_under_5pct": res["classes_under_5pct"],
            "label_agreement": res.get("label_agreement"),
            "d_real_positive": last.get("d_real_positive"), "aug_p": last.get("aug_p")}


def table(rows: list[dict], augments: list[str]) -> str:
    lines = [f"{'model':8} {'augment':22} {'seed':>4} {'FD':>9} {'min share':>9} "
             f"{'<5%':>4} {'labels':>7} {'D+ real':>7} {'p':>6}"]
    for r in rows:
        f = lambda v, spec: "-" if v is None else format(v, spec)  # noqa: E731
        lines.append(f"{r['model']:8} {r['augment']:22} {r['seed']:>4} "
                     f"{r['classifier_fd']:>9.3f} {r['min_share']:>9.4f} "
                     f"{r['classes_under_5pct']:>4} {f(r['label_agreement'], '>7.4f')} "
                     f"{f(r['d_real_positive'], '>7.3f')} {f(r['aug_p'], '>6.3f')}")
    lines.append("")
    for model in sorted({r["model"] for r in rows}, key=[r["model"] for r in rows].index):
        base = {r["seed"]: r["classifier_fd"] for r in rows
                if r["model"] == model and r["augment"] == augments[0]}
        for a in augments:
            fds = {r["seed"]: r["classifier_fd"] for r in rows
                   if r["model"] == model and r["augment"] == a}
            wins = sum(fds[s] < base[s] for s in fds if s in base)
            note = "" if a == augments[0] else f"  below {augments[0]} on {wins} of {len(fds)} seeds"
            lines.append(f"{model:8} {a:22} FD median {statistics.median(fds.values()):.3f}{note}")
    return "\n".join(lines)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--recipe", default="mnist")
    ap.add_argument("--data", default=None, help="local copy of the data set (--data of train)")
    ap.add_argument("--limit", type=int, default=2000)
    ap.add_argument("--steps", type=int, default=3000)
    ap.add_argument("--models", default="dcgan,cgan")
    ap.add_argument("--augment", default="none,diffaug,ada",
                    help="policies separated by ';' or ',' (a comma list policy: use ';')")
    ap.add_argument("--seeds", default="0,1,2")
    ap.add_argument("--n", type=int, default=10000, help="samples scored per run")
    ap.add_argument("--device", default="cuda")
    ap.add_argument("--out", default=None, help="where the runs go (default: a temporary dir)")
    ap.add_argument("--json", action="store_true", help="print the rows as JSON")
    ap.add_argument("extra", nargs="*", help="more options for gancli train (after --)")
    args = ap.parse_args()
    augments = [a.strip() for a in args.augment.split(";" if ";" in args.augment else ",")]
    out = Path(args.out or tempfile.mkdtemp(prefix="little-data-"))
    rows = [train_and_score(args, m, a, int(s), out) for m in args.models.split(",")
            for a in augments for s in args.seeds.split(",")]
    print(json.dumps(rows, indent=1) if args.json else table(rows, augments))


if __name__ == "__main__":
    main()
