"""The fast path: the switches that make a step cheaper without changing what it computes
(beyond float rounding), each one chosen for the device it runs on and each one measurable on its
own (`benchmarks/throughput.py`, docs/performance.md).

- precision: ``auto`` picks bf16 autocast where the hardware runs it natively (CPUs with
  AVX512-BF16 or AMX, GPUs from Ampere on), fp16 with a GradScaler on older GPUs, else fp32;
- channels_last memory for the convolutional networks (and their input batches);
- Adam's multi-tensor (foreach) or fused kernels instead of a Python loop over parameters;
- TF32 matrix units for fp32 work on Ampere+ GPUs;
- torch.compile of G and D (not of the whole step: two backwards in one graph do not compile),
  off by default: on the CPUs measured here it was slower;
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


def auto_precision(device: torch.device) -> tuple[str, str]:
    """(precision, why) for `--mixed-precision auto` on `device`."""
    if device.type == "cuda":
        if torch.cuda.is_bf16_supported():
            return "bf16", f"{torch.cuda.get_device_name(device)} runs bf16 natively"
        return "fp16", f"{torch.cuda.get_device_name(device)} has no fast bf16: fp16 with a scaler"
    if device.type == "cpu" and cpu_has_fast_bf16():
        kind = "AMX" if "amx_bf16" in cpu_flags() else "AVX512-BF16"
        return "bf16", f"this CPU has {kind}"
    return "no", "no fast half precision on this device"


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
