"""The report's pictures, as PNG bytes made in memory: the curves (matplotlib's Agg canvas, no
pyplot state), the sample grids of RUN/samples, and traversals and an interpolation generated from
the latest checkpoint. Nothing is written to disk."""

from __future__ import annotations

import io
import re
import shlex
from pathlib import Path
from typing import Any

from gancli.report.run import Metrics, number

MAX_STRIP = 24                   # sample grids shown over time (evenly spaced, the last included)
MAX_CATEGORIES = 20              # values of a categorical code walked in its traversal
ROWS, STEPS, SEED = 8, 9, 0      # traversals: `gancli traverse RUN --code C` (its defaults)
PAIR_ROWS, PAIR_STEPS = 4, 10    # interpolation: `gancli interpolate RUN --seeds 0,1 --rows 4`
SAMPLE = re.compile(r"^step-(\d+)\.png$")
NOT_CURVES = {"step", "epoch", "time", "images_per_s", "cpu_s", "scaler_skipped", "nan_rollbacks"}
# The schedules' columns (gancli.train.schedules): plotted together, each over its first value,
# since a learning rate of 2e-4 and a beta2 of 0.99 share no scale.
SCHEDULES = ("lr_g", "lr_d", "beta2", "gamma_r1", "gamma_r2", "ema_beta")
# Evaluation figures: (key, name, higher is better)
FIGURES = (("code_accuracy", "code accuracy", True), ("label_agreement", "label agreement", True),
           ("classifier_fd", "classifier Fréchet distance", False), ("fid", "FID", False))


def figure_png(fig: Any) -> bytes:
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=100)
    return buf.getvalue()


def _marks(ax: Any, best: int | None, events: list[dict[str, Any]]) -> None:
    if best is not None:
        ax.axvline(best, color="tab:green", ls="--", lw=1, label=f"best (step {best:,})")
    for i, e in enumerate(events):
        ax.axvline(e["step"], color="tab:red", ls=":", lw=1,
                   label=f"{e.get('event')}" if i == 0 else None)


def curves_png(m: Metrics, best: int | None) -> bytes | None:
    """Losses, D(real)/D(fake), the family's other figures (InfoGAN's Q head) and images/s."""
    from matplotlib.figure import Figure

    keys = list(dict.fromkeys(k for r in m.training for k, v in r.items()
                              if k not in NOT_CURVES and number(v) is not None))
    groups = [("losses", [k for k in keys if k.endswith("loss")]),
              ("D(real) and D(fake): D's mean output on real and generated images",
               [k for k in keys if k in ("d_real", "d_fake")]),
              ("other training figures", [k for k in keys if not k.endswith("loss")
                                          and k not in ("d_real", "d_fake", *SCHEDULES)]),
              ("schedules: each value over its first", [k for k in keys if k in SCHEDULES]),
              ("images/s (all processes)", ["images_per_s"])]
    groups = [(t, ks) for t, ks in groups
              if any(number(r.get(k)) is not None for r in m.training for k in ks)]
    if not groups:
        return None
    fig = Figure(figsize=(11, 2.9 * len(groups)), layout="constrained")
    for ax, (title, ks) in zip(fig.subplots(len(groups), 1, squeeze=False)[:, 0], groups):
        for k in ks:
            pts = sorted((r["step"], v) for r in m.training if (v := number(r.get(k))) is not None)
            if k in SCHEDULES and pts and pts[0][1]:
                pts = [(s, v / pts[0][1]) for s, v in pts]
            ax.plot([p[0] for p in pts], [p[1] for p in pts], lw=1.2, label=k,
                    marker="." if len(pts) < 40 else None)
        _marks(ax, best, m.events)
        ax.set_title(title, fontsize=11, loc="left")
        ax.grid(alpha=0.3)
        ax.legend(fontsize=8, loc="best")
    ax.set_xlabel("step")
    return figure_png(fig)


def evals_png(m: Metrics, best: int | None) -> bytes | None:
    """Each evaluation figure over the steps; the checkpoints kept as best marked."""
    from matplotlib.figure import Figure

    found = [(k, name, up) for k, name, up in FIGURES
             if any(number(r.get(k)) is not None for r in m.evals)]
    if not found:
        return None
    fig = Figure(figsize=(11, 2.7 * len(found)), layout="constrained")
    for ax, (k, name, up) in zip(fig.subplots(len(found), 1, squeeze=False)[:, 0], found):
        pts = sorted((r["step"], v, r.get("best") is True) for r in m.evals
                     if (v := number(r.get(k))) is not None)
        ax.plot([p[0] for p in pts], [p[1] for p in pts], marker="o", ms=4, lw=1.2, label=k)
        key = {r.get("key_metric") for r in m.evals} == {k}   # what decides checkpoints/best
        kept = [p for p in pts if p[2] and key]
        if kept:
            ax.scatter([p[0] for p in kept], [p[1] for p in kept], s=90, marker="*",
                       color="tab:green", zorder=3, label="a new best (checkpoints/best)")
        _marks(ax, best, [])
        ax.set_title(f"{name} ({'higher' if up else 'lower'} is better)", fontsize=11, loc="left")
        ax.grid(alpha=0.3)
        ax.legend(fontsize=8, loc="best")
    ax.set_xlabel("step")
    return figure_png(fig)


def sample_grids(run_dir: Path) -> tuple[list[tuple[int, bytes]], int]:
    """The fixed-latent grids written while training, evenly thinned to MAX_STRIP (the last
    kept), and how many there are. A file that is not a whole PNG is left out."""
    from PIL import Image

    folder = run_dir / "samples"
    found = sorted((int(mt.group(1)), p) for p in folder.glob("step-*.png")
                   if (mt := SAMPLE.match(p.name))) if folder.is_dir() else []
    if len(found) > MAX_STRIP:
        picks = {round(i * (len(found) - 1) / (MAX_STRIP - 1)) for i in range(MAX_STRIP)}
        shown = [found[i] for i in sorted(picks)]
    else:
        shown = found
    out = []
    for step, p in shown:
        try:
            png = p.read_bytes()
            Image.open(io.BytesIO(png)).verify()
        except Exception:  # noqa: BLE001 - any unreadable picture is simply not shown
            continue
        out.append((step, png))
    return out, len(found)


def _sheet(images: Any, nrow: int) -> bytes:
    from gancli.viz import grid, to_pil

    buf = io.BytesIO()
    to_pil(grid(images, nrow)).save(buf, format="PNG")
    return buf.getvalue()


def explore(run_dir: Path, device: Any) -> tuple[str, list[tuple[str, str, str, bytes]]]:
    """From the latest checkpoint, in memory: a traversal of every named code and an
    interpolation strip. Returns (which generator, [(title, caption, the command that makes
    the same picture, png)]), all plain text."""
    import torch

    from gancli.checkpoint import load_generator
    from gancli.generate import generate
    from gancli.latent import interpolate

    g = load_generator(run_dir, ema=True, device=device)
    spec, name = g.spec, shlex.quote(str(run_dir))
    which = f"step {g.step:,}" + (" (EMA generator)" if g.ema else "")
    pics = []
    for c in spec.codes:
        values = spec.traversal_values(c.name, STEPS, (-2.0, 2.0))
        note = ""
        if c.categorical and len(values) > MAX_CATEGORIES:
            values = values[:MAX_CATEGORIES]
            note = f" (its first {MAX_CATEGORIES} of {c.size} values)"
        latents = spec.traversal(c.name, ROWS, values, torch.Generator().manual_seed(SEED))
        images = generate(g.generator, latents, device)
        shown = ", ".join(f"{v:g}" for v in values.tolist())
        pics.append((f"traversal of {c.name}",
                     f"{spec.describe(c)}{note}: columns {shown}; each row one noise draw held "
                     f"fixed", f"gancli traverse {name} --code {c.name}",
                     _sheet(images, len(values))))
    pairs = [(r, r + 1) for r in range(PAIR_ROWS)]

    def draws(which_end: int) -> dict[str, torch.Tensor]:
        rows = [spec.sample(1, torch.Generator().manual_seed(p[which_end])) for p in pairs]
        return {k: torch.cat([r[k] for r in rows]) for k in rows[0]}

    latents = interpolate(spec, draws(0), draws(1), PAIR_STEPS, "slerp")
    images = generate(g.generator, latents, device)
    pics.append(("interpolation", f"slerp from seed r's draw to seed r+1's, rows r = "
                                  f"0..{PAIR_ROWS - 1}; codes stay at the first draw's values",
                 f"gancli interpolate {name} --seeds 0,1 --rows {PAIR_ROWS}",
                 _sheet(images, PAIR_STEPS)))
    return which, pics
