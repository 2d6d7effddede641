"""When training stops early, and how: signals (Ctrl-C, SIGTERM) and numerical faults.

The training loop asks two questions after every step — has someone asked us to stop, and has a
loss gone non-finite — and both answers must be the same on every process, or one rank waits
forever in a collective the others have left. This module owns both answers, so the loop's body
stays the story of a step.
"""

from __future__ import annotations

import copy
import math
import signal
import threading
from typing import Any, Callable

import torch
from torch import nn

from gancli.errors import GancliError


class Stopped(GancliError):
    """Training stopped on a signal after writing a checkpoint. Exit status 128 + signal, as a
    shell reports a process a signal ended; asked for, so not labelled an error."""

    label = ""

    def __init__(self, message: str, signum: int, quiet: bool = False) -> None:
        super().__init__(message)
        self.exit_code = 128 + signum
        self.quiet = quiet


class NonFinite(GancliError):
    """A loss or weight went non-finite and --on-nan stop (the default) ended the run."""

    exit_code = 3


def any_rank(accelerator: Any, flag: bool) -> bool:
    """True on every process when `flag` is true on any (one all-reduce; none in one process)."""
    if accelerator.num_processes == 1:
        return flag
    t = torch.tensor([1.0 if flag else 0.0], device=accelerator.device)
    return bool(accelerator.reduce(t, "sum").item() > 0)


class StopSignals:
    """A context in which SIGINT and SIGTERM ask for a graceful stop: the step under way
    finishes, the loop writes a checkpoint and leaves. A second Ctrl-C raises KeyboardInterrupt
    at once (atomic writes keep the files whole either way). A SIGTERM after the first signal is
    ignored: launchers such as torchrun answer a Ctrl-C by also sending SIGTERM to their workers,
    and that must not turn a graceful stop into an abrupt one."""

    def __init__(self, say: Callable[[str], None] = print) -> None:
        self.signum: int | None = None
        self._say = say
        self._old: dict[int, Any] = {}

    def __enter__(self) -> "StopSignals":
        # Signal handlers can only be set from the main thread (not, e.g., in a test runner's
        # worker thread); elsewhere the loop runs without graceful stopping.
        if threading.current_thread() is threading.main_thread():
            for s in (signal.SIGINT, signal.SIGTERM):
                self._old[s] = signal.signal(s, self._handle)
        return self

    def __exit__(self, *exc: Any) -> None:
        for s, old in self._old.items():
            signal.signal(s, old)
        self._old.clear()

    def _handle(self, signum: int, frame: Any) -> None:
        if self.signum is None:
            self.signum = signum
            again = "Ctrl-C again quits at once" if signum == signal.SIGINT else "SIGINT quits at once"
            self._say(f"{signal.Signals(signum).name}: stopping after this step and writing a "
                      f"checkpoint ({again})")
        elif signum == signal.SIGINT:
            raise KeyboardInterrupt

    # Several processes must agree, which costs an all-reduce and a read-back: they do so every
    # this many steps (a stop then comes at most this many steps after the signal).
    AGREE_EVERY = 10

    def requested(self, accelerator: Any, step: int) -> bool:
        """Whether to stop after `step`, agreed by every process."""
        if accelerator.num_processes == 1:
            return self.signum is not None
        return step % self.AGREE_EVERY == 0 and any_rank(accelerator, self.signum is not None)

    def agreed_signum(self) -> int:
        return self.signum if self.signum is not None else int(signal.SIGTERM)


class FaultWatch:
    """Spots a non-finite figure without reading it back every step.

    ``observe`` runs on the device each step and remembers the first step whose figures were not
    all finite; ``check`` reads that once, at log intervals and before checkpoints."""

    NONE = 2 ** 62

    def __init__(self, device: torch.device) -> None:
        self.device = device
        self.first_bad = torch.full((), self.NONE, dtype=torch.int64, device=device)

    def observe(self, step: int, figures: dict[str, torch.Tensor]) -> None:
        vals = torch.stack([v.detach().float().reshape(()) for v in figures.values()])
        bad = ~torch.isfinite(vals).all()
        here = torch.full((), step, dtype=torch.int64, device=self.device)
        self.first_bad = torch.where(bad & (self.first_bad == self.NONE), here, self.first_bad)

    def check(self, accelerator: Any) -> int | None:
        """The first bad step since the last reset, on any process (or None)."""
        first = self.first_bad
        if accelerator.num_processes > 1:
            first = accelerator.gather(first.reshape(1)).min()
        value = int(first.item())
        return None if value == self.NONE else value

    def reset(self) -> None:
        self.first_bad.fill_(self.NONE)


def weights_finite(*modules: nn.Module) -> bool:
    """Whether every parameter and floating buffer of the modules is finite (one read back)."""
    flags = [torch.isfinite(t).all() for m in modules
             for t in list(m.parameters()) + [b for b in m.buffers() if b.is_floating_point()]]
    return bool(torch.stack(flags).all().item()) if flags else True


def describe(figures: dict[str, float]) -> str:
    """'d_loss=nan, g_loss=inf' for the figures that are not finite (all of them if none)."""
    bad = {k: v for k, v in figures.items() if not math.isfinite(v)} or figures
    return ", ".join(f"{k}={v}" for k, v in bad.items())


class LastGood:
    """An in-memory copy of everything a step changes (weights, EMA, optimiser state), taken
    whenever the figures are known to be finite; ``--on-nan skip`` rolls back to it."""

    def __init__(self) -> None:
        self.step: int | None = None
        self._state: dict[str, Any] = {}

    def take(self, step: int, modules: dict[str, nn.Module],
             optimizers: dict[str, torch.optim.Optimizer], ema_updates: int,
             others: dict[str, Any] | None = None) -> None:
        self.step = step
        self._state = {"modules": {k: {n: t.detach().clone() for n, t in m.state_dict().items()}
                                   for k, m in modules.items()},
                       "optimizers": {k: copy.deepcopy(o.state_dict()) for k, o in optimizers.items()},
                       "others": {k: copy.deepcopy(o.state_dict()) for k, o in (others or {}).items()},
                       "ema_updates": ema_updates}

    def restore(self, modules: dict[str, nn.Module],
                optimizers: dict[str, torch.optim.Optimizer],
                others: dict[str, Any] | None = None) -> int:
        """Load the copy back (learning rates are left as they are now); returns EMA updates."""
        for k, o in (others or {}).items():
            o.load_state_dict(copy.deepcopy(self._state["others"][k]))
        for k, m in modules.items():
            m.load_state_dict(self._state["modules"][k])
        for k, o in optimizers.items():
            lrs = [g["lr"] for g in o.param_groups]
            o.load_state_dict(copy.deepcopy(self._state["optimizers"][k]))
            for g, lr in zip(o.param_groups, lrs):
                g["lr"] = lr
        return int(self._state["ema_updates"])


MAX_ROLLBACKS = 8   # --on-nan skip gives up after this many (the learning rates are then 1/256)


class Guard:
    """The --on-nan policy. ``healthy`` is asked at log steps and before checkpoints: under
    ``stop`` a fault raises :class:`NonFinite` naming the first bad step and figures and the last
    good checkpoint; under ``skip`` it rolls back to the last good state, halves the learning
    rates, logs an event and answers False (the figures of the window are void)."""

    def __init__(self, on_nan: str, accelerator: Any, nets: dict[str, nn.Module],
                 optimizers: dict[str, torch.optim.Optimizer], ema: Any,
                 counters: dict[str, int], log: Callable[[dict[str, Any]], None],
                 say: Callable[[str], None], others: dict[str, Any] | None = None) -> None:
        self.accelerator, self.nets, self.optimizers, self.ema = accelerator, nets, optimizers, ema
        self.others = others or {}   # more state a step changes (state_dict/load_state_dict): ADA's p
        self.counters, self.log, self.say = counters, log, say
        self.faults = FaultWatch(accelerator.device)
        self.last_good = LastGood() if on_nan == "skip" else None

    def observe(self, step: int, figures: dict[str, torch.Tensor]) -> None:
        self.faults.observe(step, figures)

    def keep(self, step: int) -> None:
        """Remember the state after `step` as good (only under skip: it costs a copy)."""
        if self.last_good is not None:
            self.last_good.take(step, self.nets, self.optimizers,
                                self.ema.updates if self.ema is not None else 0, self.others)

    def healthy(self, step: int, figures: Callable[[], dict[str, float]], last_checkpoint: Any,
                check_weights: bool = False) -> bool:
        bad_step = self.faults.check(self.accelerator)
        weights_bad = (bad_step is None and check_weights and any_rank(
            self.accelerator, not weights_finite(*self.nets.values())))
        if bad_step is None and not weights_bad:
            return True
        what = describe(figures()) if bad_step is not None else "weights"
        bad_step = bad_step or step
        if self.last_good is None:
            where = (f"the last good checkpoint is {last_checkpoint}" if last_checkpoint
                     else "no checkpoint was written")
            raise NonFinite(f"step {bad_step}: non-finite {what}; training stopped and {where} "
                            f"(continue from it with --resume RUN --on-nan skip, which rolls "
                            f"back and halves the learning rates)")
        self.counters["nan_rollbacks"] = self.counters.get("nan_rollbacks", 0) + 1
        if self.counters["nan_rollbacks"] > MAX_ROLLBACKS:
            raise NonFinite(f"step {bad_step}: non-finite {what} again after {MAX_ROLLBACKS} "
                            f"rollbacks; training stopped (last good checkpoint: "
                            f"{last_checkpoint or 'none'})")
        updates = self.last_good.restore(self.nets, self.optimizers, self.others)
        if self.ema is not None:
            self.ema.updates = updates
        lrs = []
        for opt in self.optimizers.values():
            for group in opt.param_groups:
                group["lr"] *= 0.5
            lrs.append(opt.param_groups[0]["lr"])
        self.log({"step": step, "event": "non_finite", "first_bad_step": bad_step,
                  "figures": what, "rolled_back_to": self.last_good.step,
                  **{f"lr_{k}": lr for k, lr in zip(self.optimizers, lrs)}})
        self.say(f"step {bad_step}: non-finite {what}; rolled back to step "
                 f"{self.last_good.step}'s weights, learning rates halved to "
                 + ", ".join(f"{lr:.3g} ({k.upper()})" for k, lr in zip(self.optimizers, lrs)))
        self.faults.reset()
        return False
