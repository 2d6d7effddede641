"""What R1 + R2 cost r3gan's training step (issue 21): images/s with both penalties every step,
lazily every k steps (times k), and with none; and a DCGAN step beside them for scale.

    python benchmarks/r3gan_penalties.py [--data DIR] [--recipe emoji] [--batch-size 32]
        [--repeats 12] [--every 1,4,16] [--no-dcgan] [--mixed-precision no|bf16]
        [--threads N] [--set KEY=VALUE ...] [--json]

A shared, loaded machine drifts by more than these effects within minutes (measured here: the
same configuration at 1 and at 29 images/s ten minutes apart), so whole runs one after the other
cannot be compared. This script alternates single training steps instead: a step without the
penalties ("plain"), a step with R1 + R2 as the loop computes them (reals and fakes in two calls
of D: "separate"), the same with reals and fakes in one call ("joined", possible for r3gan's D,
which has no batch statistics; the loop does not, having measured it no faster here), and
DCGAN's step at the recipe's width, in a rotating order, `--repeats` times each; each kind's
median time is its cost. A lazy run every
k steps pays one penalty step and k - 1 plain ones, so its images/s is
batch * k / (penalty + (k - 1) * plain); without penalties, batch / plain.

Each step is the loop's: the recipe's networks (channels_last, fused Adam, the family's own
d_loss/g_loss with the rpgan loss, gancli.train.augment.Penalties, the EMA update) on batches
of the recipe's real images; only the loop's bookkeeping (logging, checkpoints) is left out.
`--set group_size=64` (repeatable) changes one of r3gan's model settings (a TOML value).
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import statistics
import sys
import time
import tomllib
from pathlib import Path
from typing import Any, Callable

DEFAULT_DATA = Path(__file__).resolve().parents[2] / "shared" / "data" / "emoji" / \
    "emoji-datasource-twitter"


def stepper(model: str, a: argparse.Namespace, penalty: str | None = None) -> Callable[[], None]:
    """One training step of `model` at the recipe's settings: plain, or with R1 + R2
    (`penalty` "joined" or "separate")."""
    import torch

    from gancli.data import make_batches, open_dataset
    from gancli.models import get_family
    from gancli.recipes import resolve
    from gancli.train import fast
    from gancli.train.augment import Penalties
    from gancli.train.ema import EMA

    over = {"steps": 1, "batch_size": a.batch_size}
    cfg = resolve(model, a.recipe, over, {"path": a.data} if a.data else None)
    if model == "r3gan" and a.set:
        from dataclasses import replace

        cfg = replace(cfg, model_args={**cfg.model_args, **a.set})
    t = cfg.train
    fam = get_family(model)
    spec = fam.latent_spec(cfg)
    G, D = fam.build(cfg, spec)
    layout = fast.memory_format(True, G, D)
    G, D = G.to(memory_format=layout), D.to(memory_format=layout)
    cpu = torch.device("cpu")
    opt_g = fast.adam(G.parameters(), "auto", cpu, lr=t.lr_g, betas=(t.beta1, t.beta2))
    opt_d = fast.adam(D.parameters(), "auto", cpu, lr=t.lr_d, betas=(t.beta1, t.beta2))
    ema = EMA(G, t.ema_decay)
    batches = make_batches(open_dataset(cfg.data, "train"), t.batch_size, cpu, seed=0,
                           say=lambda s: None)
    gen = torch.Generator().manual_seed(0)
    label = spec.label_code.name if spec.label_code is not None else None
    gamma = t.r1 or 0.1
    pen = (Penalties(gamma, gamma, 1, D, label is not None, cpu, label_key=label or "label")
           if penalty == "separate" else None)

    def joined(real: Any, fake: Any, labels: Any, latents: Any) -> Any:
        """R1 + R2 over one call of D on cat(real, fake) (each image's logit is its own)."""
        args = (torch.cat([labels, latents[label]]),) if label else ()
        both = torch.cat([real, fake.detach()])
        n = real.shape[0]
        x = both.detach().requires_grad_(True)
        (grad,) = torch.autograd.grad(D(x, *args).float().sum(), x, create_graph=True)
        per = grad.float().pow(2).flatten(1).sum(1)
        return gamma / 2 * (per[:n].mean() + per[n:].mean())

    autocast = (lambda: torch.autocast("cpu", dtype=torch.bfloat16)) \
        if a.mixed_precision == "bf16" else contextlib.nullcontext

    def step() -> None:
        real, labels = next(batches)
        real = real.contiguous(memory_format=layout)
        latents = spec.sample(real.shape[0], gen, labels=labels)
        with autocast():
            fake = G(latents)
            d_loss, _ = fam.d_loss(D, real, labels, fake.detach(), latents, cfg)
            if penalty == "separate":
                d_loss = d_loss + pen(0, real, labels, fake.detach(), latents)
            elif penalty == "joined":
                d_loss = d_loss + joined(real, fake, labels, latents)
        opt_d.zero_grad(set_to_none=True)
        d_loss.backward()
        opt_d.step()
        D.requires_grad_(False)
        with autocast():
            g_loss, _ = fam.g_loss(D, fake, latents, cfg, real=real, labels=labels)
        opt_g.zero_grad(set_to_none=True)
        g_loss.backward()
        opt_g.step()
        D.requires_grad_(True)
        ema.update(G)

    return step


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--data", help="the recipe's data (emoji: GANCLI_EMOJI_DIR or "
                    "../shared/data/emoji/emoji-datasource-twitter)")
    ap.add_argument("--recipe", default="emoji")
    ap.add_argument("--batch-size", type=int, default=32)
    ap.add_argument("--repeats", type=int, default=12, help="timed steps of each kind")
    ap.add_argument("--every", default="1,4,16", help="lazy intervals to report")
    ap.add_argument("--no-dcgan", action="store_true", help="leave DCGAN's step out")
    ap.add_argument("--mixed-precision", default="no", choices=("no", "bf16"))
    ap.add_argument("--threads", type=int, help="torch threads (default: torch's)")
    ap.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                    help="an r3gan model setting, e.g. group_size=64 (repeatable)")
    ap.add_argument("--json", action="store_true")
    a = ap.parse_args()
    try:
        a.set = {k: tomllib.loads(f"v = {v}")["v"] for k, v in (x.split("=", 1) for x in a.set)}
    except (ValueError, tomllib.TOMLDecodeError) as e:
        print(f"--set takes KEY=VALUE with a TOML value ({e})", file=sys.stderr)
        return 2
    if a.data is None and a.recipe == "emoji":
        a.data = os.environ.get("GANCLI_EMOJI_DIR", str(DEFAULT_DATA))
    try:
        intervals = [int(x) for x in a.every.split(",")]
    except ValueError:
        print(f"--every must be a comma list of integers, got {a.every!r}", file=sys.stderr)
        return 2
    import torch

    if a.threads:
        torch.set_num_threads(a.threads)
    kinds: dict[str, Callable[[], None]] = {
        "plain": stepper("r3gan", a), "joined": stepper("r3gan", a, "joined"),
        "separate": stepper("r3gan", a, "separate")}
    if not a.no_dcgan:
        kinds["dcgan"] = stepper("dcgan", a)
    for f in kinds.values():     # the first steps pay for allocations and kernel choices
        f()
        f()
    times: dict[str, list[float]] = {k: [] for k in kinds}
    names = list(kinds)
    for r in range(a.repeats):
        for name in names[r % len(names):] + names[: r % len(names)]:
            start = time.perf_counter()
            kinds[name]()
            times[name].append(time.perf_counter() - start)
    med = {k: statistics.median(v) for k, v in times.items()}
    b = a.batch_size
    ips: dict[str, float] = {"none": b / med["plain"]}
    for k in intervals:
        for how in ("joined", "separate"):
            ips[f"every {k} ({how})"] = b * k / (med[how] + (k - 1) * med["plain"])
    if "dcgan" in med:
        ips["dcgan (its recipe, no penalty)"] = b / med["dcgan"]
    out: dict[str, Any] = {"recipe": a.recipe, "settings": a.set, "batch_size": b,
                           "repeats": a.repeats,
                           "mixed_precision": a.mixed_precision, "threads": torch.get_num_threads(),
                           "median_step_s": med, "images_per_s": ips,
                           "relative_to_none": {k: v / ips["none"] for k, v in ips.items()},
                           "step_s": times}
    if a.json:
        print(json.dumps(out, indent=1))
    else:
        print(f"{a.recipe} {a.set or ''}, batch {b}, {a.mixed_precision}, {out['threads']} "
              f"threads, median of {a.repeats} alternated steps each")
        for k, v in med.items():
            print(f"  step {k:9s} {v:7.3f} s  (spread {min(times[k]):.3f}..{max(times[k]):.3f})")
        for k, v in ips.items():
            print(f"  {k:32s} {v:7.2f} images/s  {v / ips['none']:.2f}x of none")
    return 0


if __name__ == "__main__":
    sys.exit(main())
