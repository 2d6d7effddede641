"""The report's pictures, as PNG bytes made in memory: the curves (matplotlib's Agg canvas, no
pyplot state), the sample grids of RUN/samples, and traversals and an interpolation generated from
the latest checkpoint. Nothing is written to disk."""

from __future__ import annotations

import contextlib
import io
import math
import re
import shlex
import sys
import warnings
from pathlib import Path
from typing import Any, Iterator

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


MAX_CURVES = 16                  # curves on one axis (the first ones logged); a legend of more
MAX_LABEL = 48                   # characters of a curve's name in a legend
MAX_POINTS = 4000                # points drawn per curve: longer ones keep each bucket's min and max
# Past these magnitudes matplotlib's limits and ticks overflow or underflow (a span of 2e308 is
# inf): an axis whose largest value is outside them is drawn in units of a power of ten.
HUGE, TINY = 1e100, 1e-100


@contextlib.contextmanager
def quiet() -> Iterator[None]:
    """Drawing keeps library warnings off the terminal: the figures are made from finite,
    scaled values, so what matplotlib or numpy might still say about limits is not the user's
    business. Warning options given to Python (-W, PYTHONWARNINGS) are honoured, as the
    warnings module's documentation asks of programs (the tests use them to see any)."""
    if sys.warnoptions:
        yield
        return
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        yield


def figure_png(fig: Any) -> bytes:
    buf = io.BytesIO()
    with quiet():
        fig.savefig(buf, format="png", dpi=100)
    return buf.getvalue()


def label(text: Any) -> str:
    """A name from metrics.jsonl made plain text for matplotlib: shortened, and its `$` escaped
    so a key like `$\\frac` is not parsed as mathtext (which raises on bad TeX)."""
    t = " ".join(str(text).split())
    t = t if len(t) <= MAX_LABEL else t[:MAX_LABEL - 1] + "…"
    return t.replace("$", r"\$")


def thin(pts: list[tuple[Any, ...]]) -> list[tuple[Any, ...]]:
    """At most about MAX_POINTS points, in step order: each of MAX_POINTS // 2 buckets keeps its
    lowest and highest value, so spikes survive the thinning."""
    if len(pts) <= MAX_POINTS:
        return pts
    n = MAX_POINTS // 2
    out = []
    for i in range(n):
        bucket = pts[i * len(pts) // n:(i + 1) * len(pts) // n]
        lo, hi = min(bucket, key=lambda p: p[1]), max(bucket, key=lambda p: p[1])
        out += sorted({id(lo): lo, id(hi): hi}.values(), key=lambda p: p[0])
    return out


def _divide(v: float, e: int) -> float:
    # v / 10**e in two steps, each factor a normal float (10.0**-323 alone is a denormal that
    # is off by 1%, and 10.0**-e for e = -320 overflows).
    return v / 10.0 ** (e // 2) / 10.0 ** (e - e // 2)


def scale(series: list[list[tuple[Any, ...]]]) -> tuple[list[list[tuple[Any, ...]]], str]:
    """One axis's curves, rescaled by a power of ten when their largest magnitude is beyond
    what matplotlib plots safely, and the unit to name on the axis ('' when unscaled)."""
    top = max((abs(p[1]) for pts in series for p in pts), default=0.0)
    if top == 0.0 or TINY <= top <= HUGE:
        return series, ""
    e = math.floor(math.log10(top))
    return [[(p[0], _divide(p[1], e), *p[2:]) for p in pts] for pts in series], f"×1e{e}"


def _marks(ax: Any, best: int | None, events: list[dict[str, Any]]) -> None:
    if best is not None:
        ax.axvline(best, color="tab:green", ls="--", lw=1, label=f"best (step {best:,})")
    for i, e in enumerate(events):
        ax.axvline(e["step"], color="tab:red", ls=":", lw=1,
                   label=label(e.get("event")) if i == 0 else None)


def _legend(ax: Any, points: int) -> None:
    # "best" placement is searched over every point: slow (and warned about) on long runs
    ax.legend(fontsize=8, loc="best" if points <= 1000 else "upper right")


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
        names, series = [], []
        for k in ks[:MAX_CURVES]:
            pts = sorted((r["step"], v) for r in m.training if (v := number(r.get(k))) is not None)
            if k in SCHEDULES and pts and pts[0][1]:
                first = pts[0][1]       # a ratio past a float's range (1e300 / 1e-300) is left out
                pts = [(s, q) for s, v in pts if math.isfinite(q := v / first)]
            if pts:
                names.append(k)
                series.append(thin(pts))
        series, unit = scale(series)
        for k, pts in zip(names, series):
            ax.plot([p[0] for p in pts], [p[1] for p in pts], lw=1.2, label=label(k),
                    marker="." if len(pts) < 40 else None)
        _marks(ax, best, m.events)
        more = f" (the first {MAX_CURVES} of {len(ks)})" if len(ks) > MAX_CURVES else ""
        ax.set_title(title + more + (f"; values {unit}" if unit else ""), fontsize=11, loc="left")
        ax.grid(alpha=0.3)
        _legend(ax, sum(map(len, series)))
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
    # what decides checkpoints/best (a key_metric that is not a string names nothing)
    keys = {r.get("key_metric") if isinstance(r.get("key_metric"), str) else None
            for r in m.evals}
    for ax, (k, name, up) in zip(fig.subplots(len(found), 1, squeeze=False)[:, 0], found):
        pts = sorted((r["step"], v, r.get("best") is True) for r in m.evals
                     if (v := number(r.get(k))) is not None)
        (pts,), unit = scale([thin(pts)])
        ax.plot([p[0] for p in pts], [p[1] for p in pts], marker="o", ms=4, lw=1.2, label=k)
        kept = [p for p in pts if p[2] and keys == {k}]
        if kept:
            ax.scatter([p[0] for p in kept], [p[1] for p in kept], s=90, marker="*",
                       color="tab:green", zorder=3, label="a new best (checkpoints/best)")
        _marks(ax, best, [])
        ax.set_title(f"{name} ({'higher' if up else 'lower'} is better)"
                     + (f"; values {unit}" if unit else ""), fontsize=11, loc="left")
        ax.grid(alpha=0.3)
        _legend(ax, len(pts))
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
