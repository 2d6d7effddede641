"""The values that change over a run: learning rates, the penalties' gamma, Adam's beta2, the
EMA's decay (R3GAN, Huang et al., 2024, trains with all four moving).

Every value is a function of the step number and the run's config alone, never of state
carried from step to step: a resumed run computes the same value at the same step, so resume
stays bit-exact with no schedule state in the checkpoint. Each one runs a half cosine from its
start to its end over `decay_steps`, then holds its end (`cosine`):

- lr_g, lr_d: from themselves to `lr_decay_to` of themselves;
- gamma of R1 and R2: from r1/r2 to `gamma_decay_to` of them;
- beta2: from `beta2_start` up to `beta2` (a short memory of the gradients' scale early, when
  it changes fast; a long one later);
- the EMA: with `ema_half_life` (in images), the decay that halves an old weight's share every
  that many images, the half-life capped at `ema_ramp` times the images seen so far, so early
  averages do not drag the random initial weights along.

With `decay_steps = 0` (the default) nothing here touches the optimisers: a run is what it
was before schedules existed. `--on-nan skip` halves the learning rates once per rollback; the
schedule keeps that halving (0.5 ** rollbacks), which the checkpoint's counters carry.
"""

from __future__ import annotations

import math
from typing import Any, Callable

from gancli.recipes import TrainConfig


def cosine(start: float, end: float, step: int, steps: int) -> float:
    """A half cosine from `start` at step 0 to `end` at `steps`, held at `end` after."""
    if steps <= 0:
        return start
    if step >= steps:
        return end
    return end + (start - end) * 0.5 * (1.0 + math.cos(math.pi * step / steps))


def ema_decay(t: TrainConfig, update: int, images_per_step: int) -> float:
    """The EMA decay for the `update`-th update (1-based) with a half-life in images:
    0.5 ** (images per step / half-life), the half-life at most ema_ramp x the images seen."""
    half_life = float(t.ema_half_life)
    if t.ema_ramp > 0:
        half_life = min(half_life, t.ema_ramp * update * images_per_step)
    return 0.5 ** (images_per_step / max(half_life, 1e-8))


class Schedules:
    """The run's schedules. `apply(step, ...)` sets the optimisers' learning rates and betas for
    the update that takes `step` to step + 1; `figures(step)` are the values it used, for
    metrics.jsonl. `images_per_step` counts every process's images (the EMA's half-life is in
    images seen by the whole run)."""

    def __init__(self, t: TrainConfig, images_per_step: int) -> None:
        self.t, self.images_per_step = t, int(images_per_step)
        self.active = t.decay_steps > 0

    def lr(self, step: int) -> tuple[float, float]:
        t = self.t
        f = cosine(1.0, t.lr_decay_to, step, t.decay_steps)
        return t.lr_g * f, t.lr_d * f

    def beta2(self, step: int) -> float:
        t = self.t
        if t.beta2_start is None:
            return t.beta2
        return cosine(t.beta2_start, t.beta2, step, t.decay_steps)

    def gamma_scale(self, step: int) -> float:
        """The factor on r1 and r2 at `step`."""
        return cosine(1.0, self.t.gamma_decay_to, step, self.t.decay_steps)

    def ema_decay_fn(self) -> Callable[[int], float] | None:
        """The EMA's decay per update, or None for the fixed ema_decay (with its warm-up)."""
        if self.t.ema_half_life <= 0:
            return None
        return lambda update: ema_decay(self.t, update, self.images_per_step)

    def apply(self, step: int, opt_g: Any, opt_d: Any, rollbacks: int = 0) -> None:
        """Set lr and betas in both optimisers' parameter groups (nothing when inactive)."""
        if not self.active:
            return
        halved = 0.5 ** rollbacks
        beta2 = self.beta2(step)
        for opt, lr in zip((opt_g, opt_d), self.lr(step)):
            for group in opt.param_groups:
                group["lr"] = lr * halved
                group["betas"] = (group["betas"][0], beta2)

    def figures(self, step: int, rollbacks: int = 0) -> dict[str, float]:
        """The values the update from `step` used (empty when inactive): lr_g, lr_d, beta2,
        and the gamma of each penalty that is on; and the EMA's decay when it has a half-life."""
        out: dict[str, float] = {}
        t = self.t
        if self.active:
            halved = 0.5 ** rollbacks
            lr_g, lr_d = self.lr(step)
            out.update(lr_g=lr_g * halved, lr_d=lr_d * halved, beta2=self.beta2(step))
            scale = self.gamma_scale(step)
            out.update({f"gamma_{k}": g * scale for k, g in (("r1", t.r1), ("r2", t.r2)) if g > 0})
        if t.ema_half_life > 0:
            out["ema_beta"] = ema_decay(t, step + 1, self.images_per_step)
        return {k: float(f"{v:.6g}") for k, v in out.items()}
