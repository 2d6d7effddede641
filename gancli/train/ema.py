"""The generator's exponential moving average, the weights sampling uses by default."""

from __future__ import annotations

import copy
from typing import Callable

import torch
from torch import nn


class EMA:
    """An exponential moving average of the generator's weights (buffers are copied), in fp32.

    The decay warms up as min(decay, (1 + n) / (10 + n)) so that short runs are not dominated by
    the random initial weights; `decay_at(n)`, when given, is the decay of the n-th update
    instead (a half-life schedule: gancli.train.schedules)."""

    def __init__(self, model: nn.Module, decay: float,
                 decay_at: Callable[[int], float] | None = None) -> None:
        self.model = copy.deepcopy(model).float().eval().requires_grad_(False)
        self.decay, self.updates, self.decay_at = decay, 0, decay_at

    @torch.no_grad()
    def update(self, model: nn.Module) -> None:
        self.updates += 1
        if self.decay_at is not None:
            d = self.decay_at(self.updates)
        else:
            d = min(self.decay, (1 + self.updates) / (10 + self.updates))
        ema_p = list(self.model.parameters())
        torch._foreach_lerp_(ema_p, [p.detach().float() for p in model.parameters()], 1.0 - d)
        for b_ema, b in zip(self.model.buffers(), model.buffers()):
            b_ema.copy_(b)
