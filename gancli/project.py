"""Projection: the latents that make a generator redraw a given image.

Gradient descent on the generator's inputs (its weights stay fixed) from several starts at once,
one batch row per start: the noise z, each continuous code, and each categorical code or label as
soft weights (softmax of free logits; generators take soft weights as well as indices). The loss
is pixel MSE plus MSE between 2x-downsampled copies, a low-pass term that lets a start first get
the shapes right before the strokes. Half way, each categorical code is set to its most weighted
value and the rest goes on from there, so the result is an ordinary latent (indices, as `sample`
draws), and the image written is exactly what `sample --latents` gives for it.

For InfoGAN, Q's reading of the image (gancli.encode) starts the codes of half the starts (the
other half start from random draws, in case Q is wrong about this image). Without a perceptual
network available offline, pixels are the measure: the error is MSE in [0, 1] pixel units and
PSNR.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from gancli.data.pixels import to_uint8
from gancli.errors import GancliError
from gancli.generate import generate
from gancli.latent import Latents, LatentSpec

MAX_STARTS = 256
MAX_STEPS = 100_000


@dataclass
class Projection:
    latents: Latents              # one row, in the form `sample --latents` reads
    image: torch.Tensor           # uint8 C x H x W: the generator's image for `latents`
    mse: float                    # of image against the target, pixels in [0, 1]
    psnr: float                   # dB (inf for an exact match)
    start_mse: list[float] = field(default_factory=list)   # each start's final MSE
    init: str = "random"          # "q" when Q's reading started some of the codes


def error(a: torch.Tensor, b: torch.Tensor) -> tuple[float, float]:
    """(MSE, PSNR in dB) of uint8 images a against b, pixels scaled to [0, 1]."""
    mse = float(((a.float() - b.float()) / 255.0).pow(2).mean())
    return mse, (10 * math.log10(1.0 / mse) if mse > 0 else math.inf)


def _low(x: torch.Tensor) -> torch.Tensor:
    return F.avg_pool2d(x, 2) if min(x.shape[-2:]) >= 4 else x


def _clamp_range(spec: LatentSpec) -> float:
    # A projected z may go past the draws' usual reach, but not without end: the generator has
    # never seen |z| far beyond 1 (uniform) or 4 (normal).
    return 1.5 if spec.noise == "uniform" else 4.0


def project(G: nn.Module, spec: LatentSpec, target: torch.Tensor, *, starts: int = 8,
            steps: int = 300, lr: float = 0.05, seed: int = 0,
            q_reading: dict[str, torch.Tensor] | None = None,
            device: torch.device | str = "cpu") -> Projection:
    """Find latents for one uint8 image C x H x W (already at the generator's size and
    channels). `q_reading`: Q's reading of this image (encode.encode_images, one row), which
    starts the codes of the first half of the starts."""
    if not 1 <= starts <= MAX_STARTS:
        raise GancliError(f"--starts must be from 1 to {MAX_STARTS}, got {starts}")
    if not 1 <= steps <= MAX_STEPS:
        raise GancliError(f"--steps must be from 1 to {MAX_STEPS:,}, got {steps}")
    if not (math.isfinite(lr) and 0 < lr <= 10):
        raise GancliError(f"--lr must be a number in (0, 10], got {lr:g}")
    gen = torch.Generator().manual_seed(seed)
    drawn = spec.sample(starts, gen)
    x = target.float().div(127.5).sub(1.0).unsqueeze(0).to(device)
    x_low = _low(x)
    z = drawn["z"].clone().to(device).requires_grad_(True)
    cats: dict[str, torch.Tensor] = {}
    conts: dict[str, torch.Tensor] = {}
    q_rows = (starts + 1) // 2 if q_reading else 0
    for c in spec.codes:
        if c.categorical:
            # logits of the soft weights: a random value, or Q's probabilities, favoured
            logit = F.one_hot(drawn[c.name], c.size).float() * 2.0
            if q_rows and c.name in q_reading:
                logit[:q_rows] = q_reading[c.name][0].clamp_min(1e-6).log()
            cats[c.name] = logit.to(device).requires_grad_(True)
        else:
            v = drawn[c.name].clone()
            if q_rows and c.name in q_reading:
                v[:q_rows] = q_reading[c.name][0]
            conts[c.name] = v.to(device).requires_grad_(True)
    params = [z, *cats.values(), *conts.values()]
    opt = torch.optim.Adam(params, lr=lr)
    hard: dict[str, torch.Tensor] = {}
    switch = steps // 2 if cats else steps   # the step from which categorical codes are fixed
    reach = _clamp_range(spec)

    def inputs() -> Latents:
        lat: Latents = {"z": z}
        for name, logit in cats.items():
            lat[name] = hard[name] if name in hard else torch.softmax(logit, dim=1)
        lat.update(conts)
        return lat

    def losses(out: torch.Tensor) -> torch.Tensor:
        pix = (out - x).pow(2).flatten(1).mean(1)
        low = (_low(out) - x_low).pow(2).flatten(1).mean(1)
        return pix + low

    for t in range(steps):
        if t == switch and cats:
            hard = {name: logit.detach().argmax(1) for name, logit in cats.items()}
            opt = torch.optim.Adam([z, *conts.values()], lr=lr)  # fresh moments: a new problem
        opt.zero_grad(set_to_none=True)
        losses(G(inputs())).sum().backward()
        opt.step()
        with torch.no_grad():
            z.clamp_(-reach, reach)
            for name, v in conts.items():
                c = spec.code(name)
                half = (c.high - c.low) / 2
                v.clamp_(c.low - half, c.high + half)   # the traverse default's -2..2
    if not hard:
        hard = {name: logit.detach().argmax(1) for name, logit in cats.items()}
    final: Latents = {"z": z.detach().float().cpu()}
    for c in spec.codes:
        final[c.name] = (hard[c.name].cpu() if c.categorical
                         else conts[c.name].detach().float().cpu())
    # Judge every start by the image as it will be written: uint8, from these exact latents.
    with torch.no_grad():
        images = to_uint8(G({k: v.to(device) for k, v in final.items()})).cpu()
    errs = [error(images[i], target)[0] for i in range(starts)]
    best = min(range(starts), key=lambda i: errs[i])
    chosen = {k: v[best: best + 1].clone() for k, v in final.items()}
    image = generate(G, chosen, device)[0]   # as `sample --latents` will make it: one row
    mse, psnr = error(image, target)
    return Projection(chosen, image, mse, psnr, errs, "q" if q_rows else "random")


def describe(p: Projection, spec: LatentSpec) -> dict[str, Any]:
    """The codes a projection found, for its JSON (z is in the .npz)."""
    out: dict[str, Any] = {}
    for c in spec.codes:
        v = p.latents[c.name][0]
        out[c.name] = int(v) if c.categorical else round(float(v), 6)
    return out
