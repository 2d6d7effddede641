"""What a run directory holds, read for the report: metrics.jsonl sorted into kinds (a torn last
line skipped), the run's length and speed, its checkpoints and the best one."""

from __future__ import annotations

import datetime as dt
import json
import math
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from gancli.errors import GancliError

MAX_METRICS = 256 * 2 ** 20      # a metrics.jsonl larger than this is refused
# A step past 2**53 is not one a float (or a plot's axis) holds exactly: no run gets there, so a
# record claiming one is skipped rather than drawn at the wrong place.
MAX_STEP = 2 ** 53
# Times the calendar can print (1970 to the end of year 9999); others are skipped.
MAX_TIME = 253402300799.0


def number(v: Any) -> float | None:
    """A finite float from a JSON value, or None: bools, strings, tables, NaN/inf and integers
    past a float's range (JSON has no limit on digits) are not figures."""
    if isinstance(v, bool) or not isinstance(v, (int, float)):
        return None
    try:
        f = float(v)
    except OverflowError:
        return None
    return f if math.isfinite(f) else None


def step_of(rec: dict[str, Any]) -> int | None:
    s = rec.get("step")
    return s if isinstance(s, int) and not isinstance(s, bool) and 0 <= s <= MAX_STEP else None


def timestamp(v: Any) -> float | None:
    """A record's `time` when it is one the calendar can print, else None."""
    t = number(v)
    return t if t is not None and 0 <= t <= MAX_TIME else None


def count(v: float) -> str:
    """A rate or count for a sentence: 1,234 below a quadrillion, 1.23e+300 above (not 300
    digits)."""
    return f"{v:,.0f}" if abs(v) < 1e15 else f"{v:.3g}"


def latest_branch(records: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """The records of the training that went on, in file order. A resume from an earlier
    checkpoint logs its steps again; when the step goes back, the earlier records from that
    step on belong to a branch that was left, so the later ones replace them (gancli's own
    resume also drops them from the file; older or edited files still hold them)."""
    out: list[dict[str, Any]] = []
    for r in records:
        while out and out[-1]["step"] >= r["step"]:
            out.pop()
        out.append(r)
    return out


@dataclass
class Metrics:
    training: list[dict[str, Any]] = field(default_factory=list)
    evals: list[dict[str, Any]] = field(default_factory=list)     # written while training
    results: list[dict[str, Any]] = field(default_factory=list)   # every kind score/fid record
    events: list[dict[str, Any]] = field(default_factory=list)
    skipped: int = 0                                               # unreadable lines

    @property
    def times(self) -> list[float]:
        return [t for r in self.training + self.evals if (t := timestamp(r.get("time"))) is not None]


def read_metrics(path: Path) -> Metrics:
    """metrics.jsonl sorted into kinds; an unreadable line (the last one of a run being written,
    mid-write) is counted and skipped."""
    m = Metrics()
    if not path.is_file():
        return m
    if path.stat().st_size > MAX_METRICS:
        raise GancliError(f"{path} is over {MAX_METRICS // 2 ** 20} MiB: not a gancli metrics file")
    for line in path.read_bytes().splitlines():
        if not line.strip():
            continue
        try:
            rec = json.loads(line)
        except (ValueError, RecursionError):
            m.skipped += 1
            continue
        if not isinstance(rec, dict):
            m.skipped += 1
            continue
        if rec.get("kind") in ("score", "fid"):
            m.results.append(rec)
        if step_of(rec) is None:
            continue
        if "event" in rec:
            m.events.append(rec)
        elif rec.get("eval") is True:
            m.evals.append(rec)
        elif "kind" not in rec:
            m.training.append(rec)
    m.training = latest_branch(m.training)
    return m


def _state(step_dir: Path) -> dict[str, Any]:
    from gancli.checkpoint import read_json_file

    try:
        return read_json_file(step_dir / "state.json", f"{step_dir}")
    except GancliError:
        return {}


def planned_steps(cfg: Any, training: list[dict[str, Any]]) -> int | None:
    """The run's length in steps: --steps, or --epochs times the steps per epoch that the
    records show (step / epoch)."""
    if cfg.train.steps is not None:
        return int(cfg.train.steps)
    for r in reversed(training):
        e = number(r.get("epoch"))
        if e and e > 0 and r["step"] > 0:
            per_epoch = r["step"] / e          # inf for an epoch of 1e-320
            if math.isfinite(per_epoch) and per_epoch <= MAX_STEP:
                return max(1, math.ceil(float(cfg.train.epochs) * round(per_epoch)))
    return None


def _duration(seconds: float) -> str:
    s = int(round(seconds))
    if s < 60:
        return f"{s} s"
    if s < 3600:
        return f"{s // 60} min {s % 60:02d} s"
    return f"{s // 3600} h {s % 3600 // 60:02d} min"


def _when(t: float) -> str:
    return dt.datetime.fromtimestamp(t, dt.timezone.utc).strftime("%Y-%m-%d %H:%M:%S UTC")


def _regularised(t: Any) -> str:
    """The penalties and schedules of the run, when it has any ('' otherwise)."""
    parts = [f"{name} {g:g}" for name, g in (("R1", t.r1), ("R2", t.r2)) if g > 0]
    text = (", " + " + ".join(parts) + (f" every {t.r1_every} steps" if t.r1_every > 1 else "")
            if parts else "")
    if t.decay_steps:
        moves = [f"lr to x{t.lr_decay_to:g}"] + (
            [f"gamma to x{t.gamma_decay_to:g}"] if parts else []) + (
            [f"beta2 {t.beta2_start:g} to {t.beta2:g}"] if t.beta2_start is not None else [])
        text += f"; cosine schedules over {t.decay_steps:,} steps: {', '.join(moves)}"
    if t.ema_half_life:
        text += f"; EMA half-life {t.ema_half_life:,.0f} images" + (
            f" (ramp {t.ema_ramp:g})" if t.ema_ramp else "")
    return text


def _args(d: Any) -> str:
    return ", ".join(f"{k}={v}" for k, v in sorted(dict(d).items())) or "defaults"


def summary(run_dir: Path, cfg: Any, spec: Any, m: Metrics, ckpts: list[int],
            best: int | None) -> list[tuple[str, str]]:
    """(name, value) rows: what was trained on what, how far, how fast."""
    d, t = cfg.data, cfg.train
    done = max([r["step"] for r in m.training] + ckpts + [0])
    planned = planned_steps(cfg, m.training)
    where = f"{done:,} of {planned:,}" if planned else f"{done:,} (of {t.epochs:g} epochs)"
    if planned and done >= planned:
        where += " (finished)"
    elif planned:
        where += f" ({100 * done / planned:.0f}%: still training, or stopped)"
    state = _state(run_dir / "checkpoints" / f"step-{ckpts[-1]:07d}") if ckpts else {}
    batches = state.get("batches")
    world = batches.get("world_size") if isinstance(batches, dict) else None
    data = (f"{d.source}: {d.image_size}x{d.image_size} px, {d.channels} channel"
            f"{'s' if d.channels > 1 else ''}, {d.num_classes or 'no'} classes"
            + (f", first {d.limit:,} images" if d.limit else "")
            + (f", from {d.path}" if d.path else ""))
    rows = [("model", f"{cfg.model}  ({_args(cfg.model_args)})"), ("recipe", cfg.recipe),
            ("data set", data), ("latent", spec.describe_names()),
            ("steps done / planned", where),
            ("training", f"batch {t.batch_size}, lr G {t.lr_g:g} / D {t.lr_d:g}, loss {t.loss}, "
                         f"G steps {t.g_steps}, seed {t.seed}, EMA "
                         + (f"{t.ema_decay:g}" if t.ema else "off") + _regularised(t)),
            ("precision", t.mixed_precision + ("" if t.mixed_precision != "auto" else
                                               " (resolved at start; printed in the log)")),
            ("processes", str(world) if isinstance(world, int)
             else "not recorded (no checkpoint yet)")]
    timed = sorted((t_, r["step"]) for r in m.training + m.evals
                   if (t_ := timestamp(r.get("time"))) is not None)
    if len(timed) >= 2:
        (lo, s0), (hi, s1) = timed[0], timed[-1]
        rows.append(("wall-clock", f"{_duration(hi - lo)} from the first record (step {s0:,}, "
                                   f"{_when(lo)}) to the last (step {s1:,}, {_when(hi)}); "
                                   f"pauses between resumes included"))
    speeds = sorted(v for r in m.training if (v := number(r.get("images_per_s"))) is not None)
    if speeds:
        rows.append(("images/s", f"median {count(speeds[len(speeds) // 2])}, last "
                                 f"{count(number(m.training[-1].get('images_per_s')) or 0)} "
                                 f"(all processes)"))
    rows.append(("checkpoints", (", ".join(f"{s:,}" for s in ckpts[-12:])
                                 + (f" ({len(ckpts)} in all)" if len(ckpts) > 12 else ""))
                 if ckpts else "none yet"))
    if best is not None:
        rows.append(("best checkpoint", f"step {best:,} (checkpoints/best)"))
    if m.times:
        rows.append(("last record", f"{_when(max(m.times))}, "
                                    f"{_duration(max(0.0, time.time() - max(m.times)))} ago"))
    return rows


def best_step(run_dir: Path, m: Metrics) -> int | None:
    best = run_dir / "checkpoints" / "best"
    if best.is_dir():
        s = step_of(_state(best))
        if s is not None:
            return s
    marked = [r["step"] for r in m.evals if r.get("best") is True]
    return marked[-1] if marked else None
