"""The one training loop every model family shares, on Accelerate (CPU, one GPU, many;
fp32/bf16/fp16). Run directories, resume and checkpoints live in `run`, stopping and numerical
faults in `guard`: what is left here is the story of a step."""

from __future__ import annotations

import signal
import time
import warnings
from pathlib import Path
from typing import Any, Callable

import torch
from accelerate import Accelerator
from accelerate.state import AcceleratorState
from accelerate.utils import DistributedDataParallelKwargs, TorchDynamoPlugin, set_seed

from gancli.data import make_batches, open_dataset, to_uint8
from gancli.errors import GancliError
from gancli.files import append_jsonl
from gancli.latent import LatentSpec
from gancli.models import get_family
from gancli.recipes import Config, TrainConfig
from gancli.train import augment, fast, ranks, schedules, trackers
from gancli.train.ema import EMA
from gancli.train.guard import Guard, StopSignals, Stopped
from gancli.train.progress import Progress, Window
from gancli.train.run import (Checkpoints, Claim, Saved, load_networks, open_run,
                              prepare_run_dir, rescale_position, restore_streams, total_steps)
from gancli.viz import grid, save_grid

Printer = Callable[[str], None]


def make_accelerator(cfg: Config, say: Printer) -> tuple[Accelerator, str]:
    t = cfg.train
    cpu_only = t.cpu or not torch.cuda.is_available()
    device = torch.device("cpu" if cpu_only else "cuda")
    mode = fast.compile_mode(t.compile_mode, device) if t.compile else None
    if mode is not None:
        say(f"compile: G and D, mode {mode}")
    precision, why = fast.run_precision(cfg, device)
    if why:
        say(f"precision: auto -> {precision} ({why})")
    if precision == "fp16" and cpu_only:
        say("note: fp16 needs a GPU; training in fp32 on the CPU (bf16 works on CPUs)")
        precision = "no"
    # torch 2.14 renames DDP's broadcast_buffers; the old flag is the one that keeps buffers
    # rank-local, which is what we want, so its deprecation notice is noise here.
    warnings.filterwarnings("ignore", message=".*broadcast_buffers.*", category=FutureWarning)
    # Accelerate keeps its settings in a process-wide singleton that refuses a second precision;
    # a process that trains twice (tests, benchmarks, a notebook) starts each run afresh. The
    # distributed set-up (PartialState) is kept.
    AcceleratorState._reset_state()
    accelerator = Accelerator(
        # Trackers are named now; their directory (inside the run) is set once it is known.
        log_with=trackers.parse(t.log_with) or None, project_dir=".",
        # cpu=True also on a GPU-less machine: Accelerate only sets up multi-process CPU (gloo)
        # training when told it runs on the CPU.
        cpu=cpu_only, mixed_precision=precision,
        dynamo_plugin=TorchDynamoPlugin(backend="inductor", mode=mode) if mode else None,
        # Per-rank BatchNorm statistics: no buffer broadcast between D's real and fake forwards.
        kwargs_handlers=[DistributedDataParallelKwargs(broadcast_buffers=False)],
    )
    return accelerator, precision


def train(cfg: Config, *, resume: str | Path | None = None, print_fn: Printer = print,
          progress: bool = True, evaluator: Any = None) -> Path:
    """Train `cfg` (or continue the run at `resume`); return the run directory."""
    family = get_family(cfg.model)
    t = cfg.train
    accelerator, precision = make_accelerator(cfg, print_fn)
    ranks.check_sync_bn(t, accelerator)
    run_dir, saved, claim = open_run(cfg, resume, accelerator)
    try:
        return _train(cfg, family, accelerator, precision, run_dir, saved, claim, print_fn,
                      progress, evaluator)
    except BaseException:
        claim.failed()
        raise
    finally:
        claim.release()


def _train(cfg: Config, family: Any, accelerator: Accelerator, precision: str, run_dir: Path,
           saved: Saved, claim: Claim, print_fn: Printer, progress: bool, evaluator: Any) -> Path:
    """The run, in its locked directory; `claim.started` marks the end of set-up."""
    t = cfg.train
    main = accelerator.is_main_process
    say: Printer = print_fn if main else (lambda s: None)
    start_step = saved.step

    set_seed(t.seed, device_specific=True)
    data = open_dataset(cfg.data, "train")   # in memory, or a big folder opened lazily
    spec = family.latent_spec(cfg)
    # lr, gamma, beta2, the EMA's decay: functions of the step (so resume needs no state)
    sched = schedules.Schedules(t, t.batch_size * accelerator.num_processes)
    G, D, opt_g, opt_d, ema, layout = _networks(cfg, spec, accelerator, saved, run_dir, sched)
    # The raw modules are what checkpoints save and EMA follows; D_g is D for G's step, called
    # without DDP (D gets no gradient there), compiled when asked.
    G_raw = accelerator.unwrap_model(G, keep_torch_compile=False)
    D_raw = accelerator.unwrap_model(D, keep_torch_compile=False)
    D_g = accelerator.unwrap_model(D)

    # Held on the device when it fits a quarter of its free memory, else streamed (cfg.data.stream).
    batches = make_batches(data, t.batch_size, accelerator.device, seed=t.seed,
                           rank=accelerator.process_index, world_size=accelerator.num_processes,
                           mode=cfg.data.stream, say=say, balance=t.balance_classes)
    if "batches" in saved.state:
        batches.load_state_dict(rescale_position(saved.state["batches"], accelerator))
    n_steps = total_steps(cfg, batches.steps_per_epoch)
    if start_step >= n_steps:
        raise GancliError(f"{run_dir} already reached step {start_step} of {n_steps}: "
                          f"pass a larger --steps to continue")
    if main:
        prepare_run_dir(run_dir, cfg, start_step)
    say(f"run: {run_dir}  model: {cfg.model}  data: {data.name} ({len(data)} images, "
        f"{batches.where})  steps: {start_step}->{n_steps}  "
        f"processes: {accelerator.num_processes}  precision: {precision}")
    if ranks.semantics(t, accelerator):
        say(ranks.semantics(t, accelerator))
    trackers.start(accelerator, cfg, run_dir)

    preview, preview_nrow = spec.preview(torch.Generator().manual_seed(t.seed))
    preview = {k: saved.extra.get(f"preview.{k}", v).to(accelerator.device)
               for k, v in preview.items()}
    noise_gen = torch.Generator(device=accelerator.device).manual_seed(
        t.seed * 7919 + accelerator.process_index * 104729)
    generators = {"noise": noise_gen}
    # --augment: every image D sees goes through `aug` (D_aug, D_g_aug); --r1/--r2: terms in D's
    # loss, the gradient penalties on reals and fakes.
    aug, penalties = augment.from_config(
        t, accelerator.device, accelerator.process_index, saved.state.get("augment"), D_raw,
        spec.label_code.name if spec.label_code is not None else None,
        world_size=accelerator.num_processes, gamma_scale=sched.gamma_scale,
        reduce_mean=lambda x: accelerator.reduce(x, reduction="mean"))
    D_aug, D_g_aug = augment.wrap(D, aug), augment.wrap(D_g, aug)
    if aug.active:
        generators["augment"] = aug.generator
    if accelerator.scaler is not None and saved.state.get("scaler"):
        accelerator.scaler.load_state_dict(saved.state["scaler"])
    counters = {"scaler_skipped": 0, "nan_rollbacks": 0, **saved.state.get("counters", {})}
    if saved.dir is not None:
        restore_streams(saved, accelerator, generators, say)   # last: nothing may draw after it

    def draw(n: int, labels: torch.Tensor | None) -> dict[str, torch.Tensor]:
        return spec.sample(n, noise_gen, accelerator.device, labels=labels)

    def log(record: dict[str, Any]) -> None:
        if main:
            append_jsonl(run_dir / "metrics.jsonl", {**record, "time": time.time()})
        trackers.log(accelerator, record, record["step"])

    ckpts = Checkpoints(run_dir, cfg, accelerator, G=G_raw, D=D_raw, ema=ema, opt_g=opt_g,
                        opt_d=opt_d, batches=batches, generators=generators, preview=preview,
                        augment=aug, class_names=_class_names(data))
    guard = Guard(t.on_nan, accelerator,
                  {"G": G_raw, "D": D_raw, **({"ema": ema.model} if ema is not None else {})},
                  {"g": opt_g.optimizer, "d": opt_d.optimizer}, ema, counters, log, say,
                  others={"augment": aug} if aug.adaptive else {})
    window, last_logs = Window(), {}
    bar = Progress(progress and main, n_steps, start_step)
    step = start_step
    guard.keep(step)
    claim.started = True
    with StopSignals(say) as stop:
        try:
            while step < n_steps:
                if t.compile:   # a new step: CUDA graphs may reuse the last step's outputs
                    torch.compiler.cudagraph_mark_step_begin()
                real, labels = next(batches)
                real = real.contiguous(memory_format=layout)   # free when already so (1 channel)
                sched.apply(step, opt_g, opt_d, counters["nan_rollbacks"])
                # ---- discriminator step (Q heads train here too)
                latents = draw(real.shape[0], labels)
                # One autocast region per phase: each weight is cast to half precision once
                # for all of D's calls in it, not once per call (D runs 2-3 times here).
                with accelerator.autocast():
                    fake = G(latents)
                    d_loss, d_logs = family.d_loss(D_aug, real, labels, fake.detach(), latents, cfg)
                    d_loss = d_loss + penalties(step, real, labels, fake.detach(), latents)
                opt_d.zero_grad(set_to_none=True)
                accelerator.backward(d_loss)
                opt_d.step()
                counters["scaler_skipped"] += int(opt_d.step_was_skipped)
                # ---- generator step(s): D frozen, called unwrapped (no gradient sync for it)
                D_raw.requires_grad_(False)
                for k in range(t.g_steps):
                    with accelerator.autocast():
                        if k > 0:
                            latents = draw(real.shape[0], labels)
                            fake = G(latents)
                        g_loss, g_logs = family.g_loss(D_g_aug, fake, latents, cfg, real=real,
                                                       labels=labels)
                    opt_g.zero_grad(set_to_none=True)
                    accelerator.backward(g_loss)
                    opt_g.step()
                    counters["scaler_skipped"] += int(opt_g.step_was_skipped)
                D_raw.requires_grad_(True)
                if ema is not None:
                    ema.update(G_raw)
                step += 1

                # ---- figures stay on the device; they are read once per log window
                extra = {**penalties.figures(),
                         **aug.update(d_logs.get("d_real_positive"), real.shape[0])}
                figures = {k: v.detach().float() if torch.is_tensor(v) else torch.tensor(float(v))
                           for k, v in {**d_logs, **g_logs, **extra}.items()}
                guard.observe(step, figures)
                window.add(figures, real.shape[0])
                last = step == n_steps
                if step % t.log_every == 0 or last:
                    if guard.healthy(step, lambda: window.means(accelerator), ckpts.last):
                        last_logs = window.means(accelerator)
                        ips = window.images_per_s(accelerator.num_processes)
                        log({"step": step, "epoch": round(step / batches.steps_per_epoch, 3),
                             "images_per_s": round(ips, 1), "cpu_s": round(window.cpu_s(), 3),
                             **_shown(counters, accelerator),
                             **{k: round(v, 5) for k, v in last_logs.items()},
                             **sched.figures(step - 1, counters["nan_rollbacks"])})
                        bar.update(step, ips, last_logs, counters)
                        guard.keep(step)
                    window.reset()
                else:
                    bar.update(step, None, None, counters)

                # ---- pictures, evaluation, checkpoints, and a stop if one was asked for
                if main and (step % t.sample_every == 0 or last):
                    _write_samples(step, ema.model if ema is not None else G_raw, preview,
                                   preview_nrow, run_dir, accelerator)
                if evaluator is not None and t.eval_every and (step % t.eval_every == 0 or last):
                    evaluator(step=step, generator=ema.model if ema is not None else G_raw,
                              checkpoint=lambda s, name=None: ckpts.save(s, counters, name),
                              accelerator=accelerator, run_dir=run_dir)
                if step % t.checkpoint_every == 0 or last:
                    _checkpoint(step, guard, ckpts, counters, window, accelerator)
                if not last and stop.requested(accelerator, step):
                    if ckpts.last_step != step:
                        _checkpoint(step, guard, ckpts, counters, window, accelerator)
                    name = signal.Signals(stop.agreed_signum()).name
                    raise Stopped(f"stopped at step {step} of {n_steps} ({name}); checkpoint "
                                  f"{ckpts.last}; continue with: gancli train {cfg.model} "
                                  f"--resume {run_dir}", stop.agreed_signum(), quiet=not main)
        finally:
            bar.close()
    accelerator.wait_for_everyone()
    say(f"done: {run_dir} (step {step}; last: "
        + ", ".join(f"{k}={v:.3f}" for k, v in last_logs.items()) + ")")
    accelerator.end_training()
    return run_dir


def _class_names(data: Any) -> list[str] | None:
    """The training set's class names when it has labels and one name per class (ImageData and
    lazy sources both carry them); the checkpoints record them."""
    names = getattr(data, "class_names", None)
    k = int(getattr(data, "num_classes", 0) or 0)
    return list(names) if names and k and len(names) == k else None


def _networks(cfg: Config, spec: LatentSpec, accelerator: Accelerator, saved: Saved,
              run_dir: Path, sched: schedules.Schedules
              ) -> tuple[Any, Any, Any, Any, EMA | None, torch.memory_format]:
    """G, D, their optimizers and G's EMA: built, restored from `saved` when resuming, and
    prepared by Accelerate; and the memory layout the batches must match."""
    t = cfg.train
    G, D = ranks.sync_batchnorm(t, *get_family(cfg.model).build(cfg, spec))
    layout = fast.memory_format(t.channels_last, G, D)
    G, D = G.to(memory_format=layout), D.to(memory_format=layout)
    opt_g = fast.adam(G.parameters(), t.adam, accelerator.device, lr=t.lr_g, betas=(t.beta1, t.beta2))
    opt_d = fast.adam(D.parameters(), t.adam, accelerator.device, lr=t.lr_d, betas=(t.beta1, t.beta2))
    if t.tf32:
        fast.enable_tf32(accelerator.device)
    if accelerator.device.type == "cpu":
        fast.keep_freed_memory()
    if saved.dir is not None:
        load_networks(saved, run_dir, G, D, opt_g, opt_d)
    G.to(accelerator.device)
    ema = EMA(G, t.ema_decay, sched.ema_decay_fn()) if t.ema else None
    if ema is not None and "generator_ema" in saved.tensors:
        ema.model.load_state_dict(saved.tensors["generator_ema"])
        ema.updates = int(saved.state.get("ema_updates", saved.step))
    G, D, opt_g, opt_d = accelerator.prepare(G, D, opt_g, opt_d)
    return G, D, opt_g, opt_d, ema, layout


def _write_samples(step: int, net: torch.nn.Module, preview: dict[str, torch.Tensor], nrow: int,
                   run_dir: Path, accelerator: Accelerator) -> None:
    """The preview grid of this step (fixed latents), to samples/ and any tracker."""
    was_training = net.training
    net.eval()
    with torch.no_grad(), accelerator.autocast():
        imgs = to_uint8(net(preview)).cpu()
    net.train(was_training)
    save_grid(imgs, run_dir / "samples" / f"step-{step:07d}.png", nrow=nrow)
    if accelerator.trackers:
        trackers.log_grid(accelerator, grid(imgs, nrow).permute(1, 2, 0).numpy(), step)


def _checkpoint(step: int, guard: Guard, ckpts: Checkpoints, counters: dict[str, int],
                window: Window, accelerator: Accelerator) -> None:
    """A checkpoint, only of weights known to be finite (a rollback under --on-nan skip voids
    the window and writes nothing)."""
    if guard.healthy(step, lambda: window.means(accelerator), ckpts.last, check_weights=True):
        ckpts.save(step, counters)
        guard.keep(step)
    else:
        window.reset()


def _shown(counters: dict[str, int], accelerator: Accelerator) -> dict[str, int]:
    """The counters worth a column in metrics.jsonl: fp16's skipped steps whenever a GradScaler
    is in play (zero is news too), rollbacks once there was one."""
    shown = {}
    if accelerator.scaler is not None or counters["scaler_skipped"]:
        shown["scaler_skipped"] = counters["scaler_skipped"]
    if counters["nan_rollbacks"]:
        shown["nan_rollbacks"] = counters["nan_rollbacks"]
    return shown
