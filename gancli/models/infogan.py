"""InfoGAN (Chen et al., 2016), as in the paper rather than the blog code's mistakes.

- Q shares D's body and is trained on L_I in D's step with D's optimiser; G's loss adds lambda*L_I.
- Categorical codes: cross-entropy on Q's logits (no softmax before it).
- Continuous codes: Gaussian NLL with a fixed std of 1 (the paper's released code). A learned,
  unbounded log-std let the generator earn more by hiding the codes in noise than by drawing.
- D has BatchNorm, so real and fake go through it as separate batches (one joined batch lets D
  separate them by batch statistics alone), and its activations are not in place.
- Weights start at N(0, 0.02) (BatchNorm scales N(1, 0.02)), as the reference implementations
  do. Measured on the digits recipe: with PyTorch's default init, G's first outputs are
  high-contrast checkerboards in which it hides c1 (Q reads it perfectly by step 100) and the
  samples stayed noise for 400+ steps while D ran away (D(fake) 0.08 at the end); with N(0, 0.02)
  they were digits by step 400 and D stayed balanced. `init = "default"` keeps PyTorch's.
- Not in the paper (`q_augment`, on by default): in D's step Q learns the categorical codes from
  half the fakes under a small random rotation, scale and shift, so G can only keep them
  recoverable through features those leave alone: which digit, not its slant, size or place. Measured on MNIST without
  it, two values of c1 shared the 4s and 9s and differed only in slant (c1 accuracy 0.65-0.90 after
  5 epochs); with it, 0.987-0.997 after 2 epochs on 3 seeds. `q_augment = false` gives the
  paper's method.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

from gancli.errors import GancliError
from gancli.latent import Code, Latents, LatentSpec, categorical_input
from gancli.models import register
from gancli.models.base import (NOISE_ARGS, Arg, Logs, check_args, d_adversarial, d_figures,
                                g_adversarial, init_dcgan_weights, real_logits_for_g)
from gancli.recipes import Config

HALF_LOG_2PI = 0.5 * math.log(2 * math.pi)
ARGS = {**NOISE_ARGS,
        "categorical": Arg("int_list", 2, 1000), "continuous": Arg("int", 0, 64),
        "lambda_info": Arg("float", 0, 1000), "lambda_cont": Arg("float", 0, 1000),
        "init": Arg("choice", choices=("normal", "default")),
        "q_augment": Arg("bool"), "q_trains_body": Arg("bool"),
        "q_augment_range": Arg("float", 0, 4), "q_augment_shear": Arg("float", 0, 2),
        "q_augment_stroke": Arg("bool")}


def infogan_spec(cfg: Config) -> LatentSpec:
    a = cfg.model_args
    check_args("infogan", a, ARGS)
    cats = [int(k) for k in a.get("categorical", [10])]
    n_cont = int(a.get("continuous", 2))
    codes = [Code(f"c{i + 1}", "categorical", size=k) for i, k in enumerate(cats)]
    codes += [Code(f"c{len(cats) + i + 1}", "continuous", low=-1.0, high=1.0) for i in range(n_cont)]
    return LatentSpec(noise_dim=int(a.get("noise_dim", 62)), noise=a.get("noise", "uniform"),
                      codes=tuple(codes))


def generator_input(spec: LatentSpec, latents: Latents) -> torch.Tensor:
    """z, one-hot categorical codes and continuous codes joined into one vector."""
    parts = [latents["z"]]
    for c in spec.codes:
        v = latents[c.name]
        parts.append(categorical_input(v, c.size) if c.categorical else v.float().unsqueeze(-1))
    return torch.cat([p.to(parts[0].dtype) for p in parts], dim=1)


def input_dim(spec: LatentSpec) -> int:
    return spec.noise_dim + sum(c.size if c.categorical else 1 for c in spec.codes)


class Generator(nn.Module):
    """FC 1024 -> FC (s/4)^2 x 128 -> 4x4 up-conv 64 -> 4x4 up-conv to the image; BN+ReLU; tanh."""

    def __init__(self, spec: LatentSpec, image_size: int, channels: int) -> None:
        super().__init__()
        self.spec, self.s0 = spec, image_size // 4
        self.fc = nn.Sequential(
            nn.Linear(input_dim(spec), 1024), nn.BatchNorm1d(1024), nn.ReLU(),
            nn.Linear(1024, self.s0 * self.s0 * 128), nn.BatchNorm1d(self.s0 * self.s0 * 128),
            nn.ReLU(),
        )
        self.conv = nn.Sequential(
            nn.ConvTranspose2d(128, 64, 4, 2, 1), nn.BatchNorm2d(64), nn.ReLU(),
            nn.ConvTranspose2d(64, channels, 4, 2, 1), nn.Tanh(),
        )

    def forward(self, latents: Latents) -> torch.Tensor:
        h = self.fc(generator_input(self.spec, latents))
        return self.conv(h.view(-1, 128, self.s0, self.s0))


class Discriminator(nn.Module):
    """4x4 conv 64 (lReLU) -> 4x4 conv 128 (BN, lReLU) -> FC 1024 (BN, lReLU) -> a logit; and the
    Q head on the same body: FC 128 (BN, lReLU) -> categorical logits + a mean per continuous code.
    forward(x) returns (logit [B], q [B, sum(categorical sizes) + n_continuous])."""

    def __init__(self, spec: LatentSpec, image_size: int, channels: int) -> None:
        super().__init__()
        s = image_size // 4
        self.body = nn.Sequential(
            nn.Conv2d(channels, 64, 4, 2, 1), nn.LeakyReLU(0.1),
            nn.Conv2d(64, 128, 4, 2, 1), nn.BatchNorm2d(128), nn.LeakyReLU(0.1),
            nn.Flatten(),
            nn.Linear(128 * s * s, 1024), nn.BatchNorm1d(1024), nn.LeakyReLU(0.1),
        )
        self.head = nn.Linear(1024, 1)
        q_out = sum(c.size if c.categorical else 1 for c in spec.codes)
        self.q = nn.Sequential(nn.Linear(1024, 128), nn.BatchNorm1d(128), nn.LeakyReLU(0.1),
                               nn.Linear(128, max(q_out, 1)))

    def forward(self, x: torch.Tensor, q_trains_body: bool = True) -> tuple[torch.Tensor, torch.Tensor]:
        h = self.body(x)
        return self.head(h).squeeze(-1), self.q(h if q_trains_body else h.detach())


def random_affine(x: torch.Tensor, degrees: float = 15.0, scale: float = 0.1,
                  shift: float = 2 / 28, shear: float = 0.0) -> torch.Tensor:
    """Each image turned by up to +-degrees, scaled by 1 +- scale, slanted by a horizontal shear
    of up to +-shear (x moves by shear * y) and moved by up to +-shift of its width (2 px at
    28 px), independently; differentiable, edges repeat the border pixels."""
    n = x.shape[0]
    u = torch.rand(n, 4, device=x.device) * 2 - 1
    # drawn only when asked, so shear = 0 draws (and gives) exactly what it did before
    sh = (torch.rand(n, device=x.device) * 2 - 1) * shear if shear else None
    angle = u[:, 0] * math.radians(degrees)
    zoom = 1 + u[:, 1] * scale
    cos, sin = torch.cos(angle) / zoom, torch.sin(angle) / zoom
    tx, ty = u[:, 2] * 2 * shift, u[:, 3] * 2 * shift    # grid coordinates span 2 per image
    a01, a11 = -sin, cos
    if sh is not None:                                   # rotation-zoom times [[1, sh], [0, 1]]
        a01, a11 = cos * sh - sin, sin * sh + cos
    theta = torch.stack([torch.stack([cos, a01, tx], 1), torch.stack([sin, a11, ty], 1)], 1)
    grid = F.affine_grid(theta.float(), list(x.shape), align_corners=False)
    return F.grid_sample(x.float(), grid, padding_mode="border", align_corners=False).to(x.dtype)


def random_stroke(x: torch.Tensor) -> torch.Tensor:
    """Each image's strokes made a pixel thicker (a 3x3 grey dilation: max over the
    neighbourhood), a pixel thinner (erosion: min) or left alone, a third of the images each;
    differentiable. Removes stroke width as a cue Q could read."""
    n = x.shape[0]
    pick = torch.randint(0, 3, (n, 1, 1, 1), device=x.device)
    xf = x.float()
    thick = F.max_pool2d(xf, 3, 1, 1)
    thin = -F.max_pool2d(-xf, 3, 1, 1)
    out = torch.where(pick == 0, thick, torch.where(pick == 1, thin, xf))
    return out.to(x.dtype)


def q_view(fake: torch.Tensor, args: dict) -> torch.Tensor:
    """The view of half the fakes Q learns the categorical codes from (q_augment): a random
    affine at `q_augment_range` times the default ranges (15 degrees, 10% scale, 2/28 shift),
    slanted by up to `q_augment_shear` (0: none), then, with `q_augment_stroke`, a random
    stroke width."""
    k = float(args.get("q_augment_range", 1.0))
    x = random_affine(fake[: max(2, fake.shape[0] // 2)], degrees=15.0 * k, scale=0.1 * k,
                      shift=2 / 28 * k, shear=float(args.get("q_augment_shear", 0.0)))
    return random_stroke(x) if args.get("q_augment_stroke", False) else x


def info_loss(spec: LatentSpec, q: torch.Tensor, latents: Latents,
              q_cat: torch.Tensor | None = None) -> tuple[torch.Tensor, Logs]:
    """L_I: cross-entropy for each categorical code plus lambda_cont-free Gaussian NLL (std 1) for
    each continuous code; returns (categorical part, continuous part) summed as (ce, nll) logs.
    `q_cat`, when given, is Q's output on another view of the first len(q_cat) fakes: the
    categorical part is computed from it (accuracy is still logged from `q`)."""
    q = q.float()
    q_cat = q if q_cat is None else q_cat.float()
    ce = q.new_zeros(())
    nll = q.new_zeros(())
    logs: Logs = {}
    i = 0
    for c in spec.codes:
        if c.categorical:
            logits, target = q[:, i: i + c.size], latents[c.name]
            seen = target[: q_cat.shape[0]]    # q_cat may cover only the first fakes
            ce = ce + F.cross_entropy(q_cat[:, i: i + c.size],
                                      seen if seen.dtype == torch.int64 else seen.float())
            if target.dtype == torch.int64:
                logs[f"{c.name}_acc"] = (logits.detach().argmax(1) == target).float().mean()
            i += c.size
        else:
            mu = q[:, i]
            nll = nll + (0.5 * (latents[c.name].float() - mu).pow(2) + HALF_LOG_2PI).mean()
            i += 1
    return torch.stack([ce, nll]), logs


class InfoGAN:
    name = "infogan"
    description = "InfoGAN: categorical and continuous codes kept recoverable by a Q head"

    def latent_spec(self, cfg: Config) -> LatentSpec:
        return infogan_spec(cfg)

    def build(self, cfg: Config, spec: LatentSpec) -> tuple[nn.Module, nn.Module]:
        check_args(self.name, cfg.model_args, ARGS)
        size = cfg.data.image_size
        if size % 4 or size < 8:
            raise GancliError(f"infogan needs an image size divisible by 4 (got {size})")
        G, D = Generator(spec, size, cfg.data.channels), Discriminator(spec, size, cfg.data.channels)
        init = cfg.model_args.get("init", "normal")
        if init not in ("normal", "default"):
            raise GancliError(f"infogan: init must be 'normal' or 'default' (got {init!r})")
        if not isinstance(cfg.model_args.get("q_augment", True), bool):
            raise GancliError("infogan: q_augment must be true or false "
                              f"(got {cfg.model_args['q_augment']!r})")
        if init == "normal":
            init_dcgan_weights(G)
            init_dcgan_weights(D)
        return G, D

    def _weighted(self, cfg: Config, parts: torch.Tensor) -> torch.Tensor:
        lam = float(cfg.model_args.get("lambda_info", 1.0))
        lam_cont = float(cfg.model_args.get("lambda_cont", 0.1))
        return lam * (parts[0] + lam_cont * parts[1])

    def d_loss(self, D: nn.Module, real: torch.Tensor, labels: torch.Tensor | None,
               fake: torch.Tensor, latents: Latents, cfg: Config) -> tuple[torch.Tensor, Logs]:
        spec = self.latent_spec(cfg)
        real_logit, _ = D(real)
        q_body = bool(cfg.model_args.get("q_trains_body", True))
        fake_logit, q = D(fake, q_body)
        adv = d_adversarial(real_logit.float(), fake_logit.float(), cfg.train.loss)
        q_cat = None
        if cfg.model_args.get("q_augment", True) and any(c.categorical for c in spec.codes):
            # Half the fakes are enough to teach Q the invariance, at two thirds of the cost
            # of a third full pass through D (measured: +8% images/s at batch 256).
            _, q_cat = D(q_view(fake, cfg.model_args), q_body)
        parts, logs = info_loss(spec, q, latents, q_cat)
        loss = adv + self._weighted(cfg, parts)
        return loss, {"d_loss": adv.detach(), "info_ce": parts[0].detach(),
                      "info_nll": parts[1].detach(), **logs, **d_figures(real_logit, fake_logit)}

    def g_loss(self, D: nn.Module, fake: torch.Tensor, latents: Latents, cfg: Config,
               real: torch.Tensor | None = None,
               labels: torch.Tensor | None = None) -> tuple[torch.Tensor, Logs]:
        spec = self.latent_spec(cfg)
        fake_logit, q = D(fake)
        adv = g_adversarial(fake_logit.float(), cfg.train.loss,
                            real_logits_for_g(D, real, cfg.train.loss))
        parts, _ = info_loss(spec, q, latents)
        return adv + self._weighted(cfg, parts), {"g_loss": adv.detach()}


register(InfoGAN())
