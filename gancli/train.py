"""The training loop every model family shares, on Accelerate (CPU, one GPU, many; fp32/bf16/fp16).

The family supplies networks, latent spec and the two losses; this loop owns optimisers, devices,
precision, EMA, logging, progress grids, checkpoints and resume. Only the main process writes files.
"""

from __future__ import annotations

import copy
import math
import time
import warnings
from pathlib import Path
from typing import Any, Callable

import torch
from accelerate import Accelerator
from accelerate.utils import DistributedDataParallelKwargs, broadcast_object_list, set_seed
from torch import nn

from gancli.checkpoint import (latest_step_dir, load_optimizer, load_training_state,
                               read_run_config, save_checkpoint, write_run_config)
from gancli.data import make_batches, open_dataset, to_uint8
from gancli.errors import GancliError
from gancli.files import append_jsonl
from gancli.models import get_family
from gancli.recipes import Config
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

    # ---------------------------------------------------------------- run directory
    start_step, resume_state, resume_tensors = 0, None, None
    if resume is not None:
        run_dir = Path(resume)
        if not run_dir.is_dir():
            raise GancliError(f"no such run to resume: {resume}")
        step_dir = latest_step_dir(run_dir)
        resume_state, resume_tensors = load_training_state(step_dir)
        start_step = int(resume_state["step"])
    else:
        run_dir = new_run_dir(cfg) if main else Path()
    run_dir = Path(broadcast_object_list([str(run_dir)])[0]) if accelerator.num_processes > 1 \
        else run_dir

    set_seed(t.seed + start_step, device_specific=True)
    data = open_dataset(cfg.data, "train")   # in memory, or a big folder opened lazily
    spec = family.latent_spec(cfg)
    G, D = family.build(cfg, spec)
    opt_g = torch.optim.Adam(G.parameters(), lr=t.lr_g, betas=(t.beta1, t.beta2))
    opt_d = torch.optim.Adam(D.parameters(), lr=t.lr_d, betas=(t.beta1, t.beta2))
    if resume_tensors is not None:
        try:
            G.load_state_dict(resume_tensors["generator"])
            D.load_state_dict(resume_tensors["discriminator"])
        except (RuntimeError, KeyError) as e:
            raise GancliError(f"cannot resume {run_dir}: checkpoint does not match the model "
                              f"({str(e).splitlines()[0]})") from None
        load_optimizer(opt_g, resume_tensors["optimizer_g"], resume_state["optimizers"]["optimizer_g"])
        load_optimizer(opt_d, resume_tensors["optimizer_d"], resume_state["optimizers"]["optimizer_d"])
    G.to(accelerator.device)
    ema = EMA(G, t.ema_decay) if t.ema else None
    if ema is not None and resume_tensors is not None and "generator_ema" in resume_tensors:
        ema.model.load_state_dict(resume_tensors["generator_ema"])
        ema.updates = start_step
    G, D, opt_g, opt_d = accelerator.prepare(G, D, opt_g, opt_d)
    G_raw, D_raw = accelerator.unwrap_model(G), accelerator.unwrap_model(D)

    # Held on the device when it fits a quarter of its free memory, else streamed (cfg.data.stream).
    batches = make_batches(data, t.batch_size, accelerator.device, seed=t.seed,
                           rank=accelerator.process_index, world_size=accelerator.num_processes,
                           mode=cfg.data.stream, say=say)
    if resume_state is not None and "batches" in resume_state:
        batches.load_state_dict(resume_state["batches"])
    n_steps = total_steps(cfg, batches.steps_per_epoch)
    if start_step >= n_steps:
        raise GancliError(f"{run_dir} already reached step {start_step} of {n_steps}: "
                          f"pass a larger --steps to continue")

    if main:
        run_dir.mkdir(parents=True, exist_ok=True)
        write_run_config(run_dir, cfg)
    say(f"run: {run_dir}  model: {cfg.model}  data: {data.name} ({len(data)} images, "
        f"{batches.where})  steps: {start_step}->{n_steps}  "
        f"processes: {accelerator.num_processes}  precision: {precision}")

    preview, preview_nrow = spec.preview(torch.Generator().manual_seed(t.seed))
    preview = {k: v.to(accelerator.device) for k, v in preview.items()}
    noise_gen = torch.Generator(device="cpu").manual_seed(
        t.seed * 7919 + accelerator.process_index * 104729 + start_step)

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

    def checkpoint(step: int, name: str | None = None) -> Path:
        return save_checkpoint(run_dir, step, cfg, generator=G_raw, discriminator=D_raw,
                               generator_ema=ema.model if ema is not None else None,
                               opt_g=opt_g.optimizer, opt_d=opt_d.optimizer,
                               state={"batches": batches.state_dict()}, name=name)

    sums: dict[str, torch.Tensor] = {}
    count, window_start, last_logs = 0, time.perf_counter(), {}
    bar = _progress(progress and main, n_steps, start_step)
    step = start_step
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
            # ---- generator step(s): D frozen, called unwrapped (no gradient sync needed for it)
            D_raw.requires_grad_(False)
            for k in range(t.g_steps):
                if k > 0:
                    latents = draw(bs, labels)
                    fake = G(latents)
                g_loss, g_logs = family.g_loss(D_raw, fake, latents, cfg)
                opt_g.zero_grad(set_to_none=True)
                accelerator.backward(g_loss)
                opt_g.step()
            D_raw.requires_grad_(True)
            if ema is not None:
                ema.update(G_raw)
            step += 1

            for k2, v in {**d_logs, **g_logs}.items():
                v = v.detach().float() if torch.is_tensor(v) else torch.tensor(float(v))
                sums[k2] = sums.get(k2, 0) + v
            count += 1
            if step % t.log_every == 0 or step == n_steps:
                avg = {k2: accelerator.reduce(v / count, "mean") for k2, v in sums.items()}
                elapsed = time.perf_counter() - window_start
                ips = count * bs * accelerator.num_processes / max(elapsed, 1e-9)
                last_logs = _float_logs(avg)
                if main:
                    append_jsonl(run_dir / "metrics.jsonl",
                                 {"step": step, "epoch": round(step / batches.steps_per_epoch, 3),
                                  "images_per_s": round(ips, 1), "time": time.time(),
                                  **{k2: round(v, 5) for k2, v in last_logs.items()}})
                    bar.update(step, ips, last_logs)
                sums, count, window_start = {}, 0, time.perf_counter()
            elif main:
                bar.update(step, None, None)
            if main and (step % t.sample_every == 0 or step == n_steps):
                write_samples(step)
            if evaluator is not None and t.eval_every and (step % t.eval_every == 0
                                                           or step == n_steps):
                evaluator(step=step, generator=ema.model if ema is not None else G_raw,
                          checkpoint=checkpoint, accelerator=accelerator, run_dir=run_dir)
            if main and (step % t.checkpoint_every == 0 or step == n_steps):
                checkpoint(step)
    finally:
        bar.close()
    accelerator.wait_for_everyone()
    say(f"done: {run_dir} (step {step}; last: "
        + ", ".join(f"{k}={v:.3f}" for k, v in last_logs.items()) + ")")
    accelerator.end_training()
    return run_dir


def resume_config(run: str | Path, overrides: dict[str, Any]) -> Config:
    """The config of a run being resumed; only the length may change (--steps/--epochs)."""
    cfg = read_run_config(Path(run))
    length = {k: v for k, v in overrides.items() if k in ("steps", "epochs") and v is not None}
    if length:
        from dataclasses import replace
        train = replace(cfg.train, steps=length.get("steps"), epochs=length.get("epochs"))
        cfg = replace(cfg, train=train)
    return cfg


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
                                 transient=False)
        self.task = self.progress.add_task("train", total=total, completed=start, ips="",
                                           losses="")
        self.progress.start()

    def update(self, step: int, ips: float | None, logs: dict[str, float] | None) -> None:
        if not self.enabled:
            return
        fields: dict[str, Any] = {}
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
