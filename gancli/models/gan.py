"""The original GAN (Goodfellow et al., 2014) as in the GAN text: two MLPs.

- G: z (normal, 64 dims) -> 256 -> 256 -> C*H*W, ReLU between, tanh out.
- D: image -> 256 -> 256 -> 1 logit, LeakyReLU 0.2 between (not in place). D returns a logit, not
  a probability: the losses work on logits (numerically safe), so `--loss bce|lsgan|hinge` all work.
- The generator loss is the non-saturating -log D(G(z)) the text recommends (bce).
- Adam 2e-4 with PyTorch's default betas (0.9, 0.999), as the text's code; the recipes set them.

model_args: noise_dim (64), hidden (256). Any image size and channel count.
"""

from __future__ import annotations

import torch
from torch import nn

from gancli.latent import Latents, LatentSpec
from gancli.models import register
from gancli.models.base import NOISE_ARGS, Arg, UnconditionalLosses, check_args
from gancli.recipes import Config


class Generator(nn.Module):
    def __init__(self, spec: LatentSpec, image_size: int, channels: int, hidden: int) -> None:
        super().__init__()
        self.spec, self.shape = spec, (channels, image_size, image_size)
        self.net = nn.Sequential(
            nn.Linear(spec.noise_dim, hidden), nn.ReLU(),
            nn.Linear(hidden, hidden), nn.ReLU(),
            nn.Linear(hidden, channels * image_size * image_size), nn.Tanh(),
        )

    def forward(self, latents: Latents) -> torch.Tensor:
        return self.net(latents["z"]).view(-1, *self.shape)


class Discriminator(nn.Module):
    """forward(x) returns one logit per image, shape [B]."""

    def __init__(self, image_size: int, channels: int, hidden: int) -> None:
        super().__init__()
        self.net = nn.Sequential(
            nn.Flatten(),
            nn.Linear(channels * image_size * image_size, hidden), nn.LeakyReLU(0.2),
            nn.Linear(hidden, hidden), nn.LeakyReLU(0.2),
            nn.Linear(hidden, 1),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(x).squeeze(-1)


class GAN(UnconditionalLosses):
    name = "gan"
    description = "the original GAN: MLP generator and discriminator, non-saturating loss"
    args = {**NOISE_ARGS, "hidden": Arg("int", 1, 16384)}

    def latent_spec(self, cfg: Config) -> LatentSpec:
        a = cfg.model_args
        check_args(self.name, a, self.args)
        return LatentSpec(noise_dim=int(a.get("noise_dim", 64)), noise=a.get("noise", "normal"))

    def build(self, cfg: Config, spec: LatentSpec) -> tuple[nn.Module, nn.Module]:
        check_args(self.name, cfg.model_args, self.args)
        hidden = int(cfg.model_args.get("hidden", 256))
        size, ch = cfg.data.image_size, cfg.data.channels
        return Generator(spec, size, ch, hidden), Discriminator(size, ch, hidden)


register(GAN())
