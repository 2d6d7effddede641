"""A run on disk: its directory, resuming it, and writing its checkpoints.

Everything the loop needs to continue a run exactly lives here: what the newest checkpoint holds
(:class:`Saved`), how the networks, optimisers and random streams are put back, and how each
checkpoint gathers every process's random state before the main process writes it.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

import torch
from accelerate import Accelerator
from accelerate.utils import broadcast_object_list, gather_object, set_seed
from torch import nn

from gancli.checkpoint import (clean_stale, latest_step_dir, load_optimizer, load_training_state,
                               load_training_tensors, prune_checkpoints, read_run_config,
                               save_checkpoint, step_dirs, write_run_config)
from gancli.errors import GancliError
from gancli.files import atomic_path
from gancli.recipes import Config
from gancli.train import rng
from gancli.train.ema import EMA
from gancli.train.lock import RunLock, check_new_out, undo_new_run

Printer = Callable[[str], None]


def new_run_dir(cfg: Config) -> Path:
    """runs/<model>-<recipe>, or -2, -3, ... if taken; --out names it exactly."""
    if cfg.train.out:
        p = Path(cfg.train.out)
        if (p / "config.json").exists() or (p / "checkpoints").exists():
            raise GancliError(f"{p} already holds a run: continue it with --resume {p}, "
                              f"or pick another --out")
        return p
    base = Path("runs") / f"{cfg.model}-{cfg.recipe}"
    p, i = base, 2
    while p.exists():
        p, i = Path(f"{base}-{i}"), i + 1
    return p


def total_steps(cfg: Config, steps_per_epoch: int) -> int:
    if cfg.train.steps is not None:
        return int(cfg.train.steps)
    return max(1, math.ceil(float(cfg.train.epochs) * steps_per_epoch))


@dataclass
class Saved:
    """What --resume found in the run's newest checkpoint (nothing for a run killed before its
    first checkpoint: it starts again from step 0, which is exactly where it was)."""

    step: int = 0
    dir: Path | None = None
    state: dict[str, Any] = field(default_factory=dict)
    tensors: dict[str, dict[str, torch.Tensor]] = field(default_factory=dict)
    extra: dict[str, torch.Tensor] = field(default_factory=dict)


@dataclass
class Claim:
    """The main process's hold on its run directory: the lock, whether this run made the
    directory (new) and whether set-up is over (after which a failure keeps what was written)."""

    run_dir: Path
    lock: RunLock | None = None
    new: bool = False
    created: bool = False
    started: bool = False

    def failed(self) -> None:
        """A failure: during set-up of a new run, remove what it wrote (the --out stays free)."""
        if self.lock is not None and self.new and not self.started:
            undo_new_run(self.run_dir, self.created)

    def release(self) -> None:
        if self.lock is not None:
            self.lock.release()
            self.lock = None


def claim_new_run_dir(cfg: Config) -> Claim:
    """Pick, create and lock a new run's directory. The lock comes before the final check that
    no run is there, so two trains started together cannot both pass it."""
    if cfg.train.out:
        p = Path(cfg.train.out)
        new_run_dir(cfg)                # refuses a run that is already there
        check_new_out(p)                # and anything else that is not empty
        created = not p.exists()
        try:
            p.mkdir(parents=True, exist_ok=True)
        except OSError as e:
            from gancli.files import output_error
            raise output_error(p, e) from e
    else:
        while True:                     # mkdir claims a default name: two runs never share one
            p = new_run_dir(cfg)
            try:
                p.mkdir(parents=True)
                created = True
                break
            except FileExistsError:
                continue
    claim = Claim(p, new=True, created=created)
    claim.lock = RunLock(p).acquire()
    try:
        new_run_dir(cfg)                # again, now that no other train can be writing it
    except GancliError:
        claim.release()
        raise
    return claim


def open_run(cfg: Config, resume: str | Path | None,
             accelerator: Accelerator) -> tuple[Path, Saved, Claim]:
    """The run directory (agreed by every process), what to continue from, and the main
    process's lock on the directory (held until training ends)."""
    saved = Saved()
    main, several = accelerator.is_main_process, accelerator.num_processes > 1
    if resume is not None and not Path(resume).is_dir():
        raise GancliError(f"no such run to resume: {resume}")
    claim = Claim(Path(resume) if resume is not None else Path())
    failed: BaseException | None = None
    if main:                             # only the main process locks (and makes) the directory
        try:
            if resume is not None:       # before reading: its writer may be half-way through
                claim.lock = RunLock(claim.run_dir).acquire()
            else:
                claim = claim_new_run_dir(cfg)
        except Exception as e:  # noqa: BLE001 - told to the other processes, then raised
            if not several:
                raise
            failed = e
    run_dir = claim.run_dir
    if several:
        # The others wait here until the main process holds the lock (so none of them reads a
        # checkpoint another train is still writing), and stop with it when it could not.
        why = "" if failed is None else (str(failed) or type(failed).__name__)
        shared = broadcast_object_list([str(run_dir), why])
        run_dir = Path(shared[0])
        if failed is not None:
            raise failed
        if shared[1]:
            raise SystemExit(2)          # the main process prints the one error line
    if resume is not None:
        try:
            if step_dirs(run_dir):
                saved.dir = latest_step_dir(run_dir)
                saved.state, saved.tensors = load_training_state(saved.dir)
                saved.extra = load_training_tensors(saved.dir)
                saved.step = int(saved.state["step"])
        except BaseException:
            claim.release()
            raise
    return run_dir, saved, claim


def load_networks(saved: Saved, run_dir: Path, G: nn.Module, D: nn.Module,
                   opt_g: torch.optim.Optimizer, opt_d: torch.optim.Optimizer) -> None:
    t, state = saved.tensors, saved.state
    try:
        G.load_state_dict(t["generator"])
        D.load_state_dict(t["discriminator"])
        load_optimizer(opt_g, t["optimizer_g"], state["optimizers"]["optimizer_g"])
        load_optimizer(opt_d, t["optimizer_d"], state["optimizers"]["optimizer_d"])
    except (RuntimeError, KeyError, ValueError) as e:
        raise GancliError(f"cannot resume {run_dir}: {saved.dir} does not match the model "
                          f"({str(e).splitlines()[0]})") from None


def prepare_run_dir(run_dir: Path, cfg: Config, start_step: int) -> None:
    """Create the run directory, or tidy a resumed one: drop what an interrupted writer left and
    the training records past the checkpoint (the resumed run writes them again)."""
    run_dir.mkdir(parents=True, exist_ok=True)
    clean_stale(run_dir)
    write_run_config(run_dir, cfg)
    metrics = run_dir / "metrics.jsonl"
    if start_step and metrics.is_file():
        def from_training(rec: dict[str, Any]) -> bool:  # fid/score commands' lines stay
            return "kind" not in rec or bool(rec.get("eval")) or "event" in rec
        kept = []
        for line in metrics.read_text().splitlines():
            try:
                rec = json.loads(line)
            except json.JSONDecodeError:
                continue
            if not (isinstance(rec, dict) and from_training(rec)
                    and isinstance(rec.get("step"), int) and rec["step"] > start_step):
                kept.append(line)
        with atomic_path(metrics) as tmp:
            tmp.write_text("".join(f"{line}\n" for line in kept))


def restore_streams(saved: Saved, accelerator: Accelerator, generators: dict[str, torch.Generator],
                     say: Printer) -> None:
    """Put every random stream back where the checkpoint left it. Across a change in the number
    of processes the streams cannot continue (each rank had its own): they are reseeded."""
    rng_state = saved.state.get("rng")
    rank, world = accelerator.process_index, accelerator.num_processes
    if rng_state is not None and rng_state.get("world_size") == world:
        tensors, rest = rng.unpack(saved.extra, rng_state, rank)
        rng.restore(tensors, rest, generators)
        return
    why = ("it holds no random state (an older gancli)" if rng_state is None else
           f"it was written by {rng_state.get('world_size')} processes, this run has {world}")
    say(f"note: random streams reseeded from the step, as {why}: the run continues, "
        f"but not bit for bit as it would have")
    seed = saved.state.get("config", {}).get("train", {}).get("seed", 0)
    set_seed(int(seed) + saved.step, device_specific=True)
    for name, g in generators.items():
        g.manual_seed(int(seed) * 7919 + rank * 104729 + saved.step)


class Checkpoints:
    """Writes the loop's checkpoints: every process's random state is gathered (a collective,
    so every process calls `save` for a step checkpoint), the main process writes and prunes."""

    def __init__(self, run_dir: Path, cfg: Config, accelerator: Accelerator, *, G: nn.Module,
                 D: nn.Module, ema: EMA | None, opt_g: Any, opt_d: Any, batches: Any,
                 generators: dict[str, torch.Generator], preview: dict[str, torch.Tensor],
                 augment: Any = None, class_names: list[str] | None = None) -> None:
        self.run_dir, self.cfg, self.accelerator = run_dir, cfg, accelerator
        self.class_names = class_names   # into the generator files: `sample --label NAME`
        self.augment = augment      # --augment ada's strength p, continued on resume
        self.G, self.D, self.ema, self.opt_g, self.opt_d = G, D, ema, opt_g, opt_d
        self.batches, self.generators, self.preview = batches, generators, preview
        self.last: Path | None = None
        self.last_step: int | None = None

    def state(self, counters: dict[str, Any]) -> dict[str, Any]:
        scaler = self.accelerator.scaler
        return {"batches": {**self.batches.state_dict(),
                            "world_size": self.accelerator.num_processes},
                "ema_updates": self.ema.updates if self.ema is not None else 0,
                "scaler": scaler.state_dict() if scaler is not None else None,
                "counters": counters, **self._augment_state()}

    def _augment_state(self) -> dict[str, Any]:
        adaptive = self.augment is not None and self.augment.adaptive
        return {"augment": self.augment.state_dict()} if adaptive else {}

    def save(self, step: int, counters: dict[str, Any], name: str | None = None) -> Path | None:
        snap = rng.capture(self.generators)
        if name is None and self.accelerator.num_processes > 1:
            per_rank = gather_object([snap])
        else:
            per_rank = [snap]
        if not self.accelerator.is_main_process:
            return None
        rng_tensors, rng_rest = rng.pack(per_rank) if name is None else ({}, None)
        extra = {**rng_tensors, **{f"preview.{k}": v for k, v in self.preview.items()}}
        path = save_checkpoint(self.run_dir, step, self.cfg, generator=self.G,
                               discriminator=self.D,
                               generator_ema=self.ema.model if self.ema is not None else None,
                               opt_g=self.opt_g.optimizer, opt_d=self.opt_d.optimizer,
                               state={**self.state(counters), "rng": rng_rest}, name=name,
                               extra_tensors=extra, class_names=self.class_names)
        if name is None:
            self.last, self.last_step = path, step
            prune_checkpoints(self.run_dir, self.cfg.train.keep_last)
        return path


def rescale_position(state: dict[str, int], accelerator: Accelerator) -> dict[str, int]:
    """The data position of a checkpoint written by another number of processes: the same count
    of images into the epoch, in steps of this run's size."""
    old = int(state.get("world_size", accelerator.num_processes))
    new = accelerator.num_processes
    if old == new:
        return state
    return {**state, "position": int(state["position"]) * old // new}


def resume_config(run: str | Path, overrides: dict[str, Any]) -> Config:
    """The config of a run being resumed. Only what does not change the maths of a step may
    change: its length (--steps/--epochs), --keep-last and --on-nan."""
    from dataclasses import replace

    cfg = read_run_config(Path(run))
    changes = {k: v for k, v in overrides.items() if k in RESUME_OVERRIDES and v is not None}
    if "steps" in changes:
        changes["epochs"] = None
    elif "epochs" in changes:
        changes["steps"] = None
    if changes:
        cfg = replace(cfg, train=replace(cfg.train, **changes))
    return cfg


RESUME_OVERRIDES = ("steps", "epochs", "keep_last", "on_nan", "sync_bn", "log_with")
