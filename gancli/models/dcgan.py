"""DCGAN (Radford et al., 2015) as in the DCGAN text (64x64 faces), for any size s0 * 2^n.

- G: FC z -> s0 x s0 x 8ch, BN, ReLU; then n stride-2 transposed convs, halving the width each
  time (8ch -> 4ch -> 2ch -> ch, never below ch) with BN + ReLU; the last one maps to the image's
  channels with no BN, then tanh. For 64 px: 4x4 -> 8 -> 16 -> 32 -> 64 (four up-convs, as the
  text); 32 px: three; 28 px (MNIST) starts at 7x7 and needs two.
- D mirrors G: n stride-2 convs up to 8ch, LeakyReLU 0.2 (not in place), BN on every layer but
  the first, then FC to one logit. Real and fake go through D as separate forwards (BatchNorm).
- The start size s0 comes from halving the image size while it is even and above 7: 64 -> 4,
  32 -> 4, 28 -> 7, 48 -> 6, 16 -> 4. An odd size cannot be built (a clear error).
- Weights N(0, 0.02) (init_dcgan_weights). Noise uniform(-1, 1), 100 dims, as the text draws it.
- Kernel 5 as the text (stride 2, 'same' padding; output_padding doubles exactly); kernel 4
  (no output_padding) is the other common choice: model_args kernel = 4.
- The text's extra generator update per D step is `--g-steps 2` (TrainConfig.g_steps); the recipes
  keep 1 by default.

model_args: noise_dim (100), noise ("uniform"), channels (ch, 64), kernel (5).
"""

from __future__ import annotations

import torch
from torch import nn

from gancli.errors import GancliError
from gancli.latent import Latents, LatentSpec
from gancli.models import register
from gancli.models.base import (NOISE_ARGS, Arg, UnconditionalLosses, check_args,
                                init_dcgan_weights)
from gancli.recipes import Config


def size_plan(image_size: int) -> tuple[int, int]:
    """(start size s0, number of stride-2 layers n) with s0 * 2^n == image_size."""
    s0, n = image_size, 0
    while s0 % 2 == 0 and s0 > 7:
        s0, n = s0 // 2, n + 1
    if n == 0:
        raise GancliError(f"dcgan needs an image size of the form s*2^n with n >= 1 "
                          f"(e.g. 28, 32, 64); got {image_size}")
    return s0, n


def widths(ch: int, n: int) -> list[int]:
    """Feature widths from the s0 x s0 stage outwards: 8ch, 4ch, 2ch, ch, ch, ..."""
    return [ch * 2 ** max(0, 3 - i) for i in range(n)]


def _kernel(cfg: Config) -> int:
    k = int(cfg.model_args.get("kernel", 5))
    if k not in (4, 5):
        raise GancliError(f"dcgan: kernel must be 4 or 5, got {k}")
    return k


def up(cin: int, cout: int, k: int) -> nn.ConvTranspose2d:
    # Both settings exactly double the size: k4 p1; k5 p2 + output_padding 1 ('same' in TF).
    return nn.ConvTranspose2d(cin, cout, k, 2, padding=(k - 1) // 2, output_padding=k % 2)


def down(cin: int, cout: int, k: int) -> nn.Conv2d:
    return nn.Conv2d(cin, cout, k, 2, padding=(k - 1) // 2)


class Generator(nn.Module):
    def __init__(self, spec: LatentSpec, image_size: int, channels: int, ch: int, k: int) -> None:
        super().__init__()
        self.spec = spec
        self.s0, n = size_plan(image_size)
        w = widths(ch, n)
        self.w0 = w[0]
        self.fc = nn.Linear(spec.noise_dim, self.s0 * self.s0 * w[0])
        layers: list[nn.Module] = [nn.BatchNorm2d(w[0]), nn.ReLU()]
        for cin, cout in zip(w[:-1], w[1:]):
            layers += [up(cin, cout, k), nn.BatchNorm2d(cout), nn.ReLU()]
        layers += [up(w[-1], channels, k), nn.Tanh()]
        self.net = nn.Sequential(*layers)
        init_dcgan_weights(self)

    def forward(self, latents: Latents) -> torch.Tensor:
        h = self.fc(latents["z"]).view(-1, self.w0, self.s0, self.s0)
        return self.net(h)


class Discriminator(nn.Module):
    """forward(x) returns one logit per image, shape [B]."""

    def __init__(self, image_size: int, channels: int, ch: int, k: int) -> None:
        super().__init__()
        s0, n = size_plan(image_size)
        w = widths(ch, n)[::-1]  # ch ... 8ch, mirroring G
        layers: list[nn.Module] = [down(channels, w[0], k), nn.LeakyReLU(0.2)]
        for cin, cout in zip(w[:-1], w[1:]):
            layers += [down(cin, cout, k), nn.BatchNorm2d(cout), nn.LeakyReLU(0.2)]
        layers += [nn.Flatten(), nn.Linear(w[-1] * s0 * s0, 1)]
        self.net = nn.Sequential(*layers)
        init_dcgan_weights(self)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(x).squeeze(-1)


class DCGAN(UnconditionalLosses):
    name = "dcgan"
    description = "DCGAN: strided (transposed) convolutions with BatchNorm, 64x64 faces to MNIST"
    args = {**NOISE_ARGS, "channels": Arg("int", 1, 1024), "kernel": Arg("choice", choices=(4, 5))}

    def latent_spec(self, cfg: Config) -> LatentSpec:
        a = cfg.model_args
        check_args(self.name, a, self.args)
        return LatentSpec(noise_dim=int(a.get("noise_dim", 100)), noise=a.get("noise", "uniform"))

    def build(self, cfg: Config, spec: LatentSpec) -> tuple[nn.Module, nn.Module]:
        check_args(self.name, cfg.model_args, self.args)
        ch, k = int(cfg.model_args.get("channels", 64)), _kernel(cfg)
        size, c = cfg.data.image_size, cfg.data.channels
        return Generator(spec, size, c, ch, k), Discriminator(size, c, ch, k)


register(DCGAN())
