"""The training loop every model family shares, on Accelerate (CPU, one GPU, many; fp32/bf16/fp16).

The family supplies networks, latent spec and the two losses; this loop owns optimisers, devices,
precision, EMA, logging, progress grids, checkpoints and resume. Only the main process writes files.
"""

from __future__ import annotations

import copy
import json
import math
import signal
import time
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

import torch
from accelerate import Accelerator
from accelerate.utils import (DistributedDataParallelKwargs, broadcast_object_list,
                               gather_object, set_seed)
from torch import nn

from gancli import rng
from gancli.checkpoint import (clean_stale, latest_step_dir, load_optimizer, load_training_state,
                               load_training_tensors, prune_checkpoints, read_run_config,
                               save_checkpoint, step_dirs, write_run_config)
from gancli.data import make_batches, open_dataset, to_uint8
from gancli.errors import GancliError
from gancli.files import append_jsonl, atomic_path
from gancli.models import get_family
from gancli.recipes import Config
from gancli.stopping import (FaultWatch, LastGood, NonFinite, StopSignals, Stopped, any_rank,
                             describe, weights_finite)
from gancli.viz import save_grid

Printer = Callable[[str], None]


class EMA:
    """An exponential moving average of the generator's weights (buffers are copied), in fp32.

    The decay warms up as min(decay, (1 + n) / (10 + n)) so that short runs are not dominated by
    the random initial weights."""

    def __init__(self, model: nn.Module, decay: float) -> None:
        self.model = copy.deepcopy(model).float().eval().requires_grad_(False)
        self.decay, self.updates = decay, 0

    @torch.no_grad()
    def update(self, model: nn.Module) -> None:
        self.updates += 1
        d = min(self.decay, (1 + self.updates) / (10 + self.updates))
        ema_p = list(self.model.parameters())
        torch._foreach_lerp_(ema_p, [p.detach().float() for p in model.parameters()], 1.0 - d)
        for b_ema, b in zip(self.model.buffers(), model.buffers()):
            b_ema.copy_(b)


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


def _float_logs(logs: dict[str, Any]) -> dict[str, float]:
    return {k: float(v) for k, v in logs.items()}


@dataclass
class Saved:
    """What --resume found in the run's newest checkpoint (nothing for a run killed before its
    first checkpoint: it starts again from step 0, which is exactly where it was)."""

    step: int = 0
    dir: Path | None = None
    state: dict[str, Any] = field(default_factory=dict)
    tensors: dict[str, dict[str, torch.Tensor]] = field(default_factory=dict)
    extra: dict[str, torch.Tensor] = field(default_factory=dict)


def _open_run(cfg: Config, resume: str | Path | None, accelerator: Accelerator) -> tuple[Path, Saved]:
    """The run directory (agreed by every process) and what to continue from."""
    saved = Saved()
    if resume is not None:
        run_dir = Path(resume)
        if not run_dir.is_dir():
            raise GancliError(f"no such run to resume: {resume}")
        if step_dirs(run_dir):
            saved.dir = latest_step_dir(run_dir)
            saved.state, saved.tensors = load_training_state(saved.dir)
            saved.extra = load_training_tensors(saved.dir)
            saved.step = int(saved.state["step"])
    else:
        run_dir = new_run_dir(cfg) if accelerator.is_main_process else Path()
    if accelerator.num_processes > 1:
        run_dir = Path(broadcast_object_list([str(run_dir)])[0])
    return run_dir, saved


def _load_networks(saved: Saved, run_dir: Path, G: nn.Module, D: nn.Module,
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


def _prepare_run_dir(run_dir: Path, cfg: Config, start_step: int) -> None:
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


def _restore_streams(saved: Saved, accelerator: Accelerator, generators: dict[str, torch.Generator],
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
                 generators: dict[str, torch.Generator], preview: dict[str, torch.Tensor]) -> None:
        self.run_dir, self.cfg, self.accelerator = run_dir, cfg, accelerator
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
                "counters": counters}

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
                               extra_tensors=extra)
        if name is None:
            self.last, self.last_step = path, step
            prune_checkpoints(self.run_dir, self.cfg.train.keep_last)
        return path


def _halve_lr(*optimizers: Any) -> list[float]:
    lrs = []
    for opt in optimizers:
        for g in opt.optimizer.param_groups:
            g["lr"] *= 0.5
        lrs.append(opt.optimizer.param_groups[0]["lr"])
    return lrs


def train(cfg: Config, *, resume: str | Path | None = None, print_fn: Printer = print,
          progress: bool = True, evaluator: Any = None) -> Path:
    """Train `cfg` (or continue the run at `resume`); return the run directory."""
    family = get_family(cfg.model)
    t = cfg.train
    cpu_only = t.cpu or not torch.cuda.is_available()
    precision = t.mixed_precision
    if precision == "fp16" and cpu_only:
        print_fn("note: fp16 needs a GPU; training in fp32 on the CPU (bf16 works on CPUs)")
        precision = "no"
    # torch 2.14 renames DDP's broadcast_buffers; the old flag is the one that keeps buffers
    # rank-local, which is what we want, so its deprecation notice is noise here.
    warnings.filterwarnings("ignore", message=".*broadcast_buffers.*", category=FutureWarning)
    accelerator = Accelerator(
        # cpu=True also on a GPU-less machine: Accelerate only sets up multi-process CPU (gloo)
        # training when told it runs on the CPU.
        cpu=cpu_only, mixed_precision=precision,
        # Per-rank BatchNorm statistics: no buffer broadcast between D's real and fake forwards.
        kwargs_handlers=[DistributedDataParallelKwargs(broadcast_buffers=False)],
    )
    main = accelerator.is_main_process
    say: Printer = print_fn if main else (lambda s: None)
    run_dir, saved = _open_run(cfg, resume, accelerator)
    start_step = saved.step

    set_seed(t.seed, device_specific=True)
    data = open_dataset(cfg.data, "train")   # in memory, or a big folder opened lazily
    spec = family.latent_spec(cfg)
    G, D = family.build(cfg, spec)
    opt_g = torch.optim.Adam(G.parameters(), lr=t.lr_g, betas=(t.beta1, t.beta2))
    opt_d = torch.optim.Adam(D.parameters(), lr=t.lr_d, betas=(t.beta1, t.beta2))
    if saved.dir is not None:
        _load_networks(saved, run_dir, G, D, opt_g, opt_d)
    G.to(accelerator.device)
    ema = EMA(G, t.ema_decay) if t.ema else None
    if ema is not None and "generator_ema" in saved.tensors:
        ema.model.load_state_dict(saved.tensors["generator_ema"])
        ema.updates = int(saved.state.get("ema_updates", start_step))
    G, D, opt_g, opt_d = accelerator.prepare(G, D, opt_g, opt_d)
    G_raw, D_raw = accelerator.unwrap_model(G), accelerator.unwrap_model(D)

    # Held on the device when it fits a quarter of its free memory, else streamed (cfg.data.stream).
    batches = make_batches(data, t.batch_size, accelerator.device, seed=t.seed,
                           rank=accelerator.process_index, world_size=accelerator.num_processes,
                           mode=cfg.data.stream, say=say)
    if "batches" in saved.state:
        batches.load_state_dict(_rescale_position(saved.state["batches"], accelerator))
    n_steps = total_steps(cfg, batches.steps_per_epoch)
    if start_step >= n_steps:
        raise GancliError(f"{run_dir} already reached step {start_step} of {n_steps}: "
                          f"pass a larger --steps to continue")
    if main:
        _prepare_run_dir(run_dir, cfg, start_step)
    say(f"run: {run_dir}  model: {cfg.model}  data: {data.name} ({len(data)} images, "
        f"{batches.where})  steps: {start_step}->{n_steps}  "
        f"processes: {accelerator.num_processes}  precision: {precision}")

    preview, preview_nrow = spec.preview(torch.Generator().manual_seed(t.seed))
    preview = {k: saved.extra.get(f"preview.{k}", v).to(accelerator.device)
               for k, v in preview.items()}
    noise_gen = torch.Generator(device="cpu").manual_seed(
        t.seed * 7919 + accelerator.process_index * 104729)
    generators = {"noise": noise_gen}
    if accelerator.scaler is not None and saved.state.get("scaler"):
        accelerator.scaler.load_state_dict(saved.state["scaler"])
    counters = {"scaler_skipped": 0, "nan_rollbacks": 0, **saved.state.get("counters", {})}
    if saved.dir is not None:
        _restore_streams(saved, accelerator, generators, say)   # last: nothing may draw after it

    def draw(n: int, labels: torch.Tensor | None) -> dict[str, torch.Tensor]:
        return spec.sample(n, noise_gen, accelerator.device, labels=labels)

    def write_samples(step: int) -> None:
        net = ema.model if ema is not None else G_raw
        was_training = net.training
        net.eval()
        with torch.no_grad(), accelerator.autocast():
            imgs = to_uint8(net(preview))
        net.train(was_training)
        save_grid(imgs.cpu(), run_dir / "samples" / f"step-{step:07d}.png", nrow=preview_nrow)

    ckpts = Checkpoints(run_dir, cfg, accelerator, G=G_raw, D=D_raw, ema=ema, opt_g=opt_g,
                        opt_d=opt_d, batches=batches, generators=generators, preview=preview)
    faults = FaultWatch(accelerator.device)
    last_good = LastGood() if t.on_nan == "skip" else None
    nets = {"G": G_raw, "D": D_raw, **({"ema": ema.model} if ema is not None else {})}
    opts = {"g": opt_g.optimizer, "d": opt_d.optimizer}

    def keep_good(step: int) -> None:
        if last_good is not None:
            last_good.take(step, nets, opts, ema.updates if ema is not None else 0)

    def window() -> dict[str, float]:
        return _float_logs({k: accelerator.reduce(v / max(count, 1), "mean")
                            for k, v in sums.items()})

    def healthy(step: int, check_weights: bool = False) -> bool:
        """False when a figure went non-finite since the last check (after rolling back, under
        --on-nan skip); raises under --on-nan stop. Reads the device once."""
        nonlocal sums, count
        bad_step = faults.check(accelerator)
        if bad_step is None and not (check_weights and any_rank(
                accelerator, not weights_finite(G_raw, D_raw))):
            return True
        figures = describe(window()) if bad_step is not None else "weights"
        bad_step = bad_step or step
        if last_good is None:
            where = (f"the last good checkpoint is {ckpts.last or saved.dir}"
                     if (ckpts.last or saved.dir) else "no checkpoint was written")
            raise NonFinite(f"step {bad_step}: non-finite {figures}; training stopped and "
                            f"{where} (continue from it with --resume {run_dir} --on-nan skip, "
                            f"which rolls back and halves the learning rates)")
        counters["nan_rollbacks"] += 1
        if counters["nan_rollbacks"] > MAX_ROLLBACKS:
            raise NonFinite(f"step {bad_step}: non-finite {figures} again after "
                            f"{MAX_ROLLBACKS} rollbacks; training stopped")
        ema_updates = last_good.restore(nets, opts)
        if ema is not None:
            ema.updates = ema_updates
        lr_g, lr_d = _halve_lr(opt_g, opt_d)
        event = {"step": step, "event": "non_finite", "first_bad_step": bad_step,
                 "figures": figures, "rolled_back_to": last_good.step, "lr_g": lr_g,
                 "lr_d": lr_d, "time": time.time()}
        if main:
            append_jsonl(run_dir / "metrics.jsonl", event)
        say(f"step {bad_step}: non-finite {figures}; rolled back to step {last_good.step}'s "
            f"weights, learning rates halved to {lr_g:.3g} (G) and {lr_d:.3g} (D)")
        faults.reset()
        sums, count = {}, 0
        return False

    sums: dict[str, torch.Tensor] = {}
    count, window_start, last_logs = 0, time.perf_counter(), {}
    bar = _progress(progress and main, n_steps, start_step)
    step = start_step
    keep_good(step)
    with StopSignals(say) as stop:
        try:
            while step < n_steps:
                real, labels = next(batches)
                bs = real.shape[0]
                # ---- discriminator step (Q heads train here too)
                latents = draw(bs, labels)
                fake = G(latents)
                d_loss, d_logs = family.d_loss(D, real, labels, fake.detach(), latents, cfg)
                opt_d.zero_grad(set_to_none=True)
                accelerator.backward(d_loss)
                opt_d.step()
                counters["scaler_skipped"] += int(opt_d.step_was_skipped)
                # ---- generator step(s): D frozen, called unwrapped (no gradient sync for it)
                D_raw.requires_grad_(False)
                for k in range(t.g_steps):
                    if k > 0:
                        latents = draw(bs, labels)
                        fake = G(latents)
                    g_loss, g_logs = family.g_loss(D_raw, fake, latents, cfg)
                    opt_g.zero_grad(set_to_none=True)
                    accelerator.backward(g_loss)
                    opt_g.step()
                    counters["scaler_skipped"] += int(opt_g.step_was_skipped)
                D_raw.requires_grad_(True)
                if ema is not None:
                    ema.update(G_raw)
                step += 1

                figures = {k2: v.detach().float() if torch.is_tensor(v) else torch.tensor(float(v))
                           for k2, v in {**d_logs, **g_logs}.items()}
                faults.observe(step, figures)   # on the device: no read back per step
                for k2, v in figures.items():
                    sums[k2] = sums.get(k2, 0) + v
                count += 1
                if (step % t.log_every == 0 or step == n_steps) and healthy(step):
                    last_logs = window()
                    elapsed = time.perf_counter() - window_start
                    ips = count * bs * accelerator.num_processes / max(elapsed, 1e-9)
                    if main:
                        append_jsonl(run_dir / "metrics.jsonl",
                                     {"step": step, "epoch": round(step / batches.steps_per_epoch, 3),
                                      "images_per_s": round(ips, 1), "time": time.time(),
                                      **_shown_counters(counters, accelerator),
                                      **{k2: round(v, 5) for k2, v in last_logs.items()}})
                        bar.update(step, ips, last_logs, counters)
                    sums, count, window_start = {}, 0, time.perf_counter()
                    keep_good(step)
                elif main:
                    bar.update(step, None, None, counters)
                if main and (step % t.sample_every == 0 or step == n_steps):
                    write_samples(step)
                if evaluator is not None and t.eval_every and (step % t.eval_every == 0
                                                               or step == n_steps):
                    evaluator(step=step, generator=ema.model if ema is not None else G_raw,
                              checkpoint=lambda s, name=None: ckpts.save(s, counters, name),
                              accelerator=accelerator, run_dir=run_dir)
                if ((step % t.checkpoint_every == 0 or step == n_steps)
                        and healthy(step, check_weights=True)):
                    ckpts.save(step, counters)
                if step < n_steps and stop.requested(accelerator):
                    if ckpts.last_step != step and healthy(step, check_weights=True):
                        ckpts.save(step, counters)
                    raise Stopped(f"stopped at step {step} of {n_steps} "
                                  f"({signal.Signals(stop.agreed_signum()).name}); "
                                  f"checkpoint {ckpts.last}; continue with: gancli train "
                                  f"{cfg.model} --resume {run_dir}",
                                  stop.agreed_signum(), quiet=not main)
        finally:
            bar.close()
    accelerator.wait_for_everyone()
    say(f"done: {run_dir} (step {step}; last: "
        + ", ".join(f"{k}={v:.3f}" for k, v in last_logs.items()) + ")")
    accelerator.end_training()
    return run_dir


MAX_ROLLBACKS = 8   # --on-nan skip gives up after this many (the learning rates are then 1/256)


def _shown_counters(counters: dict[str, int], accelerator: Accelerator) -> dict[str, int]:
    """The counters worth a column in metrics.jsonl: fp16's skipped steps whenever a GradScaler
    is in play (zero is news too), rollbacks once there was one."""
    shown = {}
    if accelerator.scaler is not None or counters["scaler_skipped"]:
        shown["scaler_skipped"] = counters["scaler_skipped"]
    if counters["nan_rollbacks"]:
        shown["nan_rollbacks"] = counters["nan_rollbacks"]
    return shown


def _rescale_position(state: dict[str, int], accelerator: Accelerator) -> dict[str, int]:
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


RESUME_OVERRIDES = ("steps", "epochs", "keep_last", "on_nan")


class _Progress:
    """A rich progress bar with step, images/s and the latest losses (a no-op when hidden)."""

    def __init__(self, enabled: bool, total: int, start: int) -> None:
        self.enabled = enabled
        if not enabled:
            return
        from rich.progress import (BarColumn, MofNCompleteColumn, Progress, TextColumn,
                                   TimeElapsedColumn, TimeRemainingColumn)

        self.progress = Progress(TextColumn("[bold]train"), BarColumn(), MofNCompleteColumn(),
                                 TextColumn("{task.fields[ips]}"), TimeElapsedColumn(),
                                 TimeRemainingColumn(), TextColumn("{task.fields[losses]}"),
                                 TextColumn("[yellow]{task.fields[counters]}"),
                                 transient=False)
        self.task = self.progress.add_task("train", total=total, completed=start, ips="",
                                           losses="", counters="")
        self.progress.start()

    def update(self, step: int, ips: float | None, logs: dict[str, float] | None,
               counters: dict[str, int] | None = None) -> None:
        if not self.enabled:
            return
        fields: dict[str, Any] = {}
        if counters:
            notes = [f"{counters[k]} {what}" for k, what in
                     (("scaler_skipped", "fp16-skipped"), ("nan_rollbacks", "NaN rollbacks"))
                     if counters.get(k)]
            fields["counters"] = ("  " + ", ".join(notes)) if notes else ""
        if ips is not None:
            fields["ips"] = f"{ips:,.0f} img/s"
        if logs:
            keys = [k for k in ("d_loss", "g_loss", "d_real", "d_fake", "info_ce", "c1_acc")
                    if k in logs] or list(logs)[:4]
            fields["losses"] = " ".join(f"{k}={logs[k]:.3f}" for k in keys)
        self.progress.update(self.task, completed=step, **fields)

    def close(self) -> None:
        if self.enabled:
            self.progress.stop()


def _progress(enabled: bool, total: int, start: int) -> _Progress:
    return _Progress(enabled, total, start)
