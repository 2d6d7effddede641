"""Conditional GAN (Mirza & Osindero, 2014): the class label goes to both networks.

Not as in the cGAN text, which stacks ten label channels onto D's input image (11x the input):
- G is a small DCGAN (gancli.models.dcgan's layout, kernel 4) that eats z joined to the label's
  one-hot, and whose BatchNorms are class-conditional (a per-class scale and shift), so the label
  reaches every stage. The label goes in through `categorical_input`, so a soft [B, K] label
  (`interpolate --code label`) blends classes.
- D is a projection discriminator (Miyato & Koyama, 2018): strided convs with LeakyReLU 0.2, no
  BatchNorm (so one image's score never depends on the batch), spectral norm on its layers, and
  logit = psi(h) + <embed(y), h> on the flattened features h. D's step sees the real labels
  with the real images and the generator's labels (latents["label"]) with the fakes.

model_args: noise_dim (100), noise ("normal"), channels (ch, 32; widths 8ch..ch like dcgan),
spectral_norm (true). The number of classes is the data set's (cfg.data.num_classes).
"""

from __future__ import annotations

import torch
from torch import nn
from torch.nn.utils.parametrizations import spectral_norm

from gancli.errors import GancliError
from gancli.latent import Code, Latents, LatentSpec, categorical_input
from gancli.models import register
from gancli.models.base import (NOISE_ARGS, RELATIVISTIC, Arg, Logs, check_args, d_adversarial,
                                d_figures, g_adversarial, init_dcgan_weights, real_logits_for_g)
from gancli.models.dcgan import down, size_plan, up, widths
from gancli.recipes import Config

KERNEL = 4  # divisible by the stride: no checkerboard from uneven overlap
ARGS = {**NOISE_ARGS, "channels": Arg("int", 1, 1024), "spectral_norm": Arg("bool")}


def cgan_spec(cfg: Config) -> LatentSpec:
    k = int(cfg.data.num_classes or 0)
    if k < 2:
        raise GancliError(f"cgan needs a labelled data set, but recipe '{cfg.recipe}' "
                          f"(data '{cfg.data.source}') has no classes (data.num_classes = {k})")
    a = cfg.model_args
    check_args("cgan", a, ARGS)
    return LatentSpec(noise_dim=int(a.get("noise_dim", 100)), noise=a.get("noise", "normal"),
                      codes=(Code("label", "categorical", size=k, role="label"),))


class ConditionalBatchNorm(nn.Module):
    """BatchNorm without its own affine; the scale and shift are linear in the label's one-hot
    (a per-class table that also takes soft labels)."""

    def __init__(self, channels: int, num_classes: int) -> None:
        super().__init__()
        self.bn = nn.BatchNorm2d(channels, affine=False)
        self.scale = nn.Linear(num_classes, channels, bias=False)
        self.shift = nn.Linear(num_classes, channels, bias=False)

    def reset(self) -> None:
        nn.init.normal_(self.scale.weight, 1.0, 0.02)
        nn.init.zeros_(self.shift.weight)

    def forward(self, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        return (self.bn(x) * self.scale(y)[:, :, None, None]
                + self.shift(y)[:, :, None, None])


class Generator(nn.Module):
    def __init__(self, spec: LatentSpec, image_size: int, channels: int, ch: int) -> None:
        super().__init__()
        self.spec = spec
        self.label = spec.code("label")
        k = self.label.size
        self.s0, n = size_plan(image_size)
        w = widths(ch, n)
        self.w0 = w[0]
        self.fc = nn.Linear(spec.noise_dim + k, self.s0 * self.s0 * w[0])
        self.norms = nn.ModuleList([ConditionalBatchNorm(c, k) for c in w])
        self.ups = nn.ModuleList([up(cin, cout, KERNEL) for cin, cout in zip(w[:-1], w[1:])])
        self.out = up(w[-1], channels, KERNEL)
        self.act = nn.ReLU()
        for m in (self.fc, self.ups, self.out):
            init_dcgan_weights(m)
        for m in self.norms:  # (init_dcgan_weights expects BatchNorms with their own affine)
            m.reset()

    def forward(self, latents: Latents) -> torch.Tensor:
        z = latents["z"]
        y = categorical_input(latents[self.label.name], self.label.size).to(z.dtype)
        h = self.fc(torch.cat([z, y], 1)).view(-1, self.w0, self.s0, self.s0)
        h = self.act(self.norms[0](h, y))
        for conv, norm in zip(self.ups, self.norms[1:]):
            h = self.act(norm(conv(h), y))
        return torch.tanh(self.out(h))


class Discriminator(nn.Module):
    """forward(x, y) returns one logit per image, shape [B]; y is int64 [B] or soft [B, K]."""

    def __init__(self, image_size: int, channels: int, ch: int, num_classes: int,
                 sn: bool = True) -> None:
        super().__init__()
        s0, n = size_plan(image_size)
        w = widths(ch, n)[::-1]
        norm = spectral_norm if sn else (lambda m: m)
        layers: list[nn.Module] = []
        for cin, cout in zip([channels] + w[:-1], w):
            layers += [norm(down(cin, cout, KERNEL)), nn.LeakyReLU(0.2)]
        self.body = nn.Sequential(*layers, nn.Flatten())
        feat = w[-1] * s0 * s0
        self.num_classes = num_classes
        self.psi = norm(nn.Linear(feat, 1))
        self.embed = norm(nn.Linear(num_classes, feat, bias=False))  # one row per class

    def forward(self, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        h = self.body(x)
        e = self.embed(categorical_input(y, self.num_classes).to(h.dtype))
        return self.psi(h).squeeze(-1) + (e * h).sum(-1)


def _labels(labels: torch.Tensor | None) -> torch.Tensor:
    if labels is None:
        raise GancliError("cgan needs labels, but this data set yields none: pick a labelled "
                          "data set, or train gan/dcgan/infogan")
    return labels


class CGAN:
    name = "cgan"
    description = "conditional GAN: the label drives G (conditional BN) and a projection D"

    def latent_spec(self, cfg: Config) -> LatentSpec:
        return cgan_spec(cfg)

    def build(self, cfg: Config, spec: LatentSpec) -> tuple[nn.Module, nn.Module]:
        a = cfg.model_args
        check_args(self.name, a, ARGS)
        ch, sn = int(a.get("channels", 32)), bool(a.get("spectral_norm", True))
        size, c = cfg.data.image_size, cfg.data.channels
        return (Generator(spec, size, c, ch),
                Discriminator(size, c, ch, spec.code("label").size, sn))

    def d_loss(self, D: nn.Module, real: torch.Tensor, labels: torch.Tensor | None,
               fake: torch.Tensor, latents: Latents, cfg: Config) -> tuple[torch.Tensor, Logs]:
        real_logit = D(real, _labels(labels))
        fake_logit = D(fake, latents["label"])
        loss = d_adversarial(real_logit.float(), fake_logit.float(), cfg.train.loss)
        return loss, {"d_loss": loss.detach(), **d_figures(real_logit, fake_logit)}

    def g_loss(self, D: nn.Module, fake: torch.Tensor, latents: Latents, cfg: Config,
               real: torch.Tensor | None = None,
               labels: torch.Tensor | None = None) -> tuple[torch.Tensor, Logs]:
        kind = cfg.train.loss
        real_logit = (real_logits_for_g(D, real, kind, _labels(labels))
                      if kind in RELATIVISTIC else None)
        loss = g_adversarial(D(fake, latents["label"]).float(), kind, real_logit)
        return loss, {"g_loss": loss.detach()}


register(CGAN())
