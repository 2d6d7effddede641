"""The fast path: the switches that make a step cheaper without changing what it computes
(beyond float rounding), each one chosen for the device it runs on and each one measurable on its
own (`benchmarks/throughput.py`, docs/performance.md).

- precision: ``auto`` picks bf16 autocast where the hardware runs it natively (CPUs with
  AVX512-BF16 or AMX, GPUs from Ampere on), fp16 with a GradScaler on older GPUs, else fp32;
- channels_last memory for the convolutional networks (and their input batches);
- Adam's multi-tensor (foreach) or fused kernels instead of a Python loop over parameters;
- TF32 matrix units for fp32 work on Ampere+ GPUs;
- torch.compile of G and D (not of the whole step: two backwards in one graph do not compile),
  off by default: on the CPUs measured here it was slower; on a GPU its ``auto`` mode is
  ``reduce-overhead`` (CUDA graphs), against the step's launch bound;
- on the CPU, glibc's allocator keeps freed memory for reuse (`keep_freed_memory`).
"""

from __future__ import annotations

import ctypes
import functools
import os
import sys
from pathlib import Path
from typing import Any, Iterable

import torch
from torch import nn



@functools.lru_cache(maxsize=1)
def cpu_flags() -> frozenset[str]:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("flags"):
                return frozenset(line.split(":", 1)[1].split())
    except OSError:
        pass
    return frozenset()


def cpu_has_fast_bf16() -> bool:
    """AVX512-BF16 or AMX: the CPU does bf16 dot products in hardware (elsewhere bf16 autocast
    is emulated and slower than fp32)."""
    return bool({"avx512_bf16", "amx_bf16"} & cpu_flags())


# A GAN step at or below this many FLOP is launch-bound on an Ampere-or-newer GPU: its arithmetic
# takes under 2 ms at a conservative 100 TFLOP/s of TF32 (an H100 does about 400), less than the
# launches of its 100-300 kernels. Half precision then buys nothing; InfoGAN on MNIST (84 GFLOP
# a step at batch 256) ran slower in bf16 than in fp32 on an H100 (docs/performance.md).
LAUNCH_BOUND_FLOP = 2e11


def auto_precision(device: torch.device, step_flop: float | None = None) -> tuple[str, str]:
    """(precision, why) for `--mixed-precision auto` on `device`; on a GPU, `step_flop` (the
    training step's estimated FLOP, :func:`step_flop_estimate`) keeps a launch-bound step in
    fp32 (with TF32 on Ampere+)."""
    if device.type == "cuda":
        name = torch.cuda.get_device_name(device)
        if step_flop is not None and step_flop <= LAUNCH_BOUND_FLOP:
            tf32 = " with TF32" if torch.cuda.get_device_capability(device)[0] >= 8 else ""
            return "no", (f"fp32{tf32}: the step is launch-bound (about {step_flop / 1e9:.0f} "
                          f"GFLOP, under {LAUNCH_BOUND_FLOP / 1e9:.0f}), so half precision "
                          f"would not be faster on {name}")
        if torch.cuda.is_bf16_supported():
            return "bf16", f"{name} runs bf16 natively"
        return "fp16", f"{name} has no fast bf16: fp16 with a scaler"
    if device.type == "cpu" and cpu_has_fast_bf16():
        kind = "AMX" if "amx_bf16" in cpu_flags() else "AVX512-BF16"
        return "bf16", f"this CPU has {kind}"
    return "no", "no fast half precision on this device"


def run_precision(cfg: Any, device: torch.device) -> tuple[str, str | None]:
    """(precision, why) a run of `cfg` trains with on `device`; `why` only for ``auto``. A GPU step
    replayed as CUDA graphs is no longer launch-bound; otherwise the step's size decides."""
    t = cfg.train
    if t.mixed_precision != "auto":
        return t.mixed_precision, None
    mode = compile_mode(t.compile_mode, device) if t.compile else None
    graphed = mode in ("reduce-overhead", "max-autotune")
    flop = step_flop_estimate(cfg) if device.type == "cuda" and not graphed else None
    return auto_precision(device, flop)


def step_flop_estimate(cfg: Any) -> float:
    """FLOP of one training step of `cfg` at its batch size (matmuls and convolutions), counted
    without computing anything: the networks are built on the meta device and the family's own
    losses run on shape-only tensors. Backward is taken as twice the forward; the lazy R1/R2
    penalties are left out. InfoGAN on MNIST: 0.32 GFLOP an image, against 0.33 counted over a
    real step (benchmarks/throughput.py)."""
    from torch.utils.flop_counter import FlopCounterMode

    from gancli.models import get_family

    family, t, d = get_family(cfg.model), cfg.train, cfg.data
    spec = family.latent_spec(cfg)
    n = 2
    with torch.device("meta"):
        G, D = family.build(cfg, spec)
    latents = {k: v.to("meta") for k, v in spec.sample(n).items()}
    real = torch.empty(n, d.channels, d.image_size, d.image_size, device="meta")
    labels = (torch.zeros(n, dtype=torch.int64, device="meta")
              if getattr(d, "num_classes", 0) else None)
    with FlopCounterMode(display=False) as counter, torch.no_grad():
        fake = G(latents)
        family.d_loss(D, real, labels, fake, latents, cfg)
        family.g_loss(D, fake, latents, cfg, real=real, labels=labels)
    return 3.0 * counter.get_total_flops() / n * t.batch_size


def compile_mode(mode: str, device: torch.device) -> str:
    """torch.compile's mode for `--compile-mode`: ``auto`` is ``reduce-overhead`` on a GPU (CUDA
    graphs: each compiled G and D call is one graph launch instead of hundreds of kernel
    launches, the GPU step's bound) and ``default`` elsewhere (CUDA graphs do not exist there)."""
    if mode == "auto":
        return "reduce-overhead" if device.type == "cuda" else "default"
    return mode


def is_convolutional(*modules: nn.Module) -> bool:
    return any(isinstance(m, (nn.Conv2d, nn.ConvTranspose2d)) for mod in modules
               for m in mod.modules())


def memory_format(enabled: bool, *modules: nn.Module) -> torch.memory_format:
    """channels_last for convolutional networks when enabled, else the default layout."""
    if enabled and is_convolutional(*modules):
        return torch.channels_last
    return torch.contiguous_format


def adam(params: Iterable[nn.Parameter], impl: str, device: torch.device,
         **kw: Any) -> torch.optim.Adam:
    """Adam with the implementation asked for; ``auto``: fused on CUDA and the CPU (one kernel
    over all parameters: measured 4x faster than foreach for InfoGAN's 6.5M-parameter nets on a
    2-core Xeon, 2.9 vs 12.1 ms a step), foreach elsewhere."""
    if impl == "auto":
        impl = "fused" if device.type in ("cuda", "cpu") else "foreach"
    flags = {"plain": {"foreach": False}, "foreach": {"foreach": True},
             "fused": {"fused": True}}[impl]
    return torch.optim.Adam(params, **flags, **kw)


def enable_tf32(device: torch.device) -> bool:
    """TF32 for fp32 matrix products and convolutions on Ampere+ (a no-op elsewhere)."""
    if device.type != "cuda" or torch.cuda.get_device_capability(device)[0] < 8:
        return False
    torch.backends.cuda.matmul.allow_tf32 = True
    torch.backends.cudnn.allow_tf32 = True
    return True


@functools.lru_cache(maxsize=1)
def keep_freed_memory() -> bool:
    """Training on the CPU frees and reallocates the same large buffers every step (half-precision
    copies of the weights, gradients). glibc hands buffers over 128 KiB back to the OS at once,
    so each step faults them in again, page by page. Raising its mmap and trim thresholds keeps
    them in the process: measured 4.6x fewer page faults and +3% images/s for InfoGAN at batch
    256 on a 2-core Xeon. Linux with glibc only; GANCLI_MALLOC_TUNING=0 turns it off."""
    if os.environ.get("GANCLI_MALLOC_TUNING", "1") == "0" or not sys.platform.startswith("linux"):
        return False
    try:
        libc = ctypes.CDLL("libc.so.6")
        mallopt = libc.mallopt
    except (OSError, AttributeError):   # musl and others: nothing to tune
        return False
    m_trim_threshold, m_mmap_threshold = -1, -3
    return bool(mallopt(m_mmap_threshold, 32 << 20)) and bool(mallopt(m_trim_threshold, 1 << 30))
