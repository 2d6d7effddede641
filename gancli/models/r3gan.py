"""R3GAN (Huang, Gokaslan, Kuleshov, Tompkin, NeurIPS 2024, "The GAN is dead; long live the
GAN! A Modern GAN Baseline"), written from the paper: a plain residual network with no
normalisation, trained with the relativistic pairing loss and both zero-centred penalties.

- Loss (the loop's, usable by every family): `--loss rpgan`, R1 on reals and R2 on fakes with
  the same gamma. Those are this family's `train_defaults`, with Adam's beta1 = 0 and beta2 0.99
  (a recipe adds the schedules: beta2 from 0.9, a cosine decay of lr and gamma).
- Blocks: x + conv1x1(act(conv3x3_grouped(act(conv1x1_expand(x))))), leaky ReLU 0.2 (not in
  place: D runs twice before a backward). No BatchNorm, no other normalisation: nothing mixes the
  images of a batch (one image's score never depends on the others).
- Initialisation (fix-up style): the last conv of every residual branch starts at zero, so each
  block starts as the identity and the network as a shallow linear map; the branches' other
  layers are He-initialised and scaled by L^(-1/(2m-2)) = L^(-1/4), with L the network's number
  of blocks and m = 3 layers per branch, so the variance of the output stays bounded however
  many blocks are added.
- Resampling by the [1, 2, 1] filter (separable, per channel): up is zero-insertion followed
  by that filter, which is linear interpolation between neighbours; down is the filter followed
  by keeping every other pixel. Both repeat the border pixel instead of padding with zeros (no
  dark frame). No transposed convs, no strided convs: no checkerboard.
- G: z (joined to a label embedding when conditional) -> linear -> an s0 x s0 map (the linear
  layer's bias is the learned constant start; s0 = 4 for 16/32/64 px, 7 for 28 px), then per
  stage: blocks, and between stages a 1x1 conv to the next width and an upsampling (the width
  change first, where it is cheap); at the end a 1x1 conv to the image's channels and tanh (the
  [-1, 1] images gancli's networks deal in).
- D mirrors G: a 1x1 conv from the image, per stage blocks then a downsampling and a 1x1 conv to
  the next width, and at s0 x s0 a head: flatten -> linear -> act -> linear to one logit; when
  conditional, plus the projection <embed(y), h> of the head's features (Miyato & Koyama, 2018).
- Any size s0 * 2^n (dcgan's size plan); a higher resolution is one more stage.

model_args: noise_dim (64), noise ("normal"), width (the finest stage's width, 32), max_width
(256: each coarser stage doubles the width up to this), widths (the list of widths per stage,
coarsest first, instead of width/max_width), blocks (per stage, 1), expand (the blocks' inner
width ratio, 2), group_size (channels per group of the 3x3 conv, 16), conditional (false: true
takes the data's labels, an embedding in G and a projection in D), embed_dim (G's label
embedding, 32).

The paper's networks are far wider than the CPU presets in the recipes: as we read it, stages of
several hundred channels (up to about 1,000 at the coarse stages of its 256 px model), two or
more blocks per stage, inner expansion and groups of 16 channels, batches of several hundred,
trained on GPUs for millions of images. The recipes' comments give a GPU starting point.
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
                                RELATIVISTIC, g_adversarial, real_logits_for_g)
from gancli.models.dcgan import size_plan
from gancli.recipes import Config

SLOPE = 0.2
ARGS = {**NOISE_ARGS, "width": Arg("int", 1, 4096), "max_width": Arg("int", 1, 4096),
        "widths": Arg("int_list", 1, 4096), "blocks": Arg("int", 1, 64),
        "expand": Arg("int", 1, 16), "group_size": Arg("int", 1, 4096),
        "conditional": Arg("bool"), "embed_dim": Arg("int", 1, 4096)}
# Its own training settings: the loss and penalties R3GAN is (recipes and flags override them).
# gamma 1: on the 16 px digits 0.1 let the samples degrade after 500 steps (docs/r3gan.md).
GAMMA = 1.0
TRAIN_DEFAULTS = {"loss": "rpgan", "r1": GAMMA, "r2": GAMMA, "beta1": 0.0, "beta2": 0.99,
                  "lr_g": 2e-4, "lr_d": 2e-4}


# ---------------------------------------------------------------------- the pieces


def _filter(channels: int, gain: float) -> torch.Tensor:
    """The [1, 2, 1] x [1, 2, 1] filter, one per channel (a depthwise conv weight), summing to
    `gain`."""
    f = torch.tensor([1.0, 2.0, 1.0])
    k = torch.outer(f, f)
    return (k * gain / k.sum()).expand(channels, 1, 3, 3).contiguous()


class Up(nn.Module):
    """x2: zeros between the pixels, then the [1, 2, 1] filter at gain 4 (each output pixel is
    a pixel or the mean of two or four neighbours: linear interpolation). The last row and
    column repeat the border (padded by one before, cropped after)."""

    def __init__(self, channels: int) -> None:
        super().__init__()
        self.register_buffer("kernel", _filter(channels, 4.0), persistent=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h, w = x.shape[-2:]
        x = F.pad(x, (0, 1, 0, 1), mode="replicate")
        y = F.conv_transpose2d(x, self.kernel.to(x.dtype), stride=2, padding=1,
                               groups=x.shape[1])
        return y[..., : 2 * h, : 2 * w]


class Down(nn.Module):
    """/2: the [1, 2, 1] filter (gain 1, an average) on the border-repeated image, every other
    pixel kept."""

    def __init__(self, channels: int) -> None:
        super().__init__()
        self.register_buffer("kernel", _filter(channels, 1.0), persistent=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = F.pad(x, (1, 1, 1, 1), mode="replicate")
        return F.conv2d(x, self.kernel.to(x.dtype), stride=2, groups=x.shape[1])


def _he(layer: nn.Module, scale: float = 1.0, gain_slope: float | None = SLOPE) -> None:
    """He (fan-in) normal init for a layer followed by leaky ReLU (`gain_slope`; None: a linear
    layer), times `scale`; zero bias."""
    if gain_slope is None:
        nn.init.kaiming_normal_(layer.weight, nonlinearity="linear")
    else:
        nn.init.kaiming_normal_(layer.weight, a=gain_slope, nonlinearity="leaky_relu")
    with torch.no_grad():
        layer.weight.mul_(scale)
    if layer.bias is not None:
        nn.init.zeros_(layer.bias)


def _groups(inner: int, group_size: int) -> int:
    if inner <= group_size:
        return 1
    if inner % group_size:
        raise GancliError(f"r3gan: a block's inner width (width x expand = {inner}) must be a "
                          f"multiple of group_size ({group_size})")
    return inner // group_size


class Block(nn.Module):
    """x + conv1x1(act(conv3x3_grouped(act(conv1x1_expand(x))))); the last conv starts at zero
    (the block is the identity at step 0), the others at He x `scale` (fix-up)."""

    def __init__(self, width: int, expand: int, group_size: int, scale: float) -> None:
        super().__init__()
        inner = width * expand
        self.expand = nn.Conv2d(width, inner, 1)
        self.conv = nn.Conv2d(inner, inner, 3, padding=1, groups=_groups(inner, group_size))
        self.project = nn.Conv2d(inner, width, 1)
        self.act = nn.LeakyReLU(SLOPE)
        _he(self.expand, scale)
        _he(self.conv, scale)
        nn.init.zeros_(self.project.weight)
        nn.init.zeros_(self.project.bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + self.project(self.act(self.conv(self.act(self.expand(x)))))


def _width_change(cin: int, cout: int) -> nn.Module:
    """A 1x1 conv between stages of different widths (linear: the blocks carry the
    non-linearities); nothing when the widths agree."""
    if cin == cout:
        return nn.Identity()
    conv = nn.Conv2d(cin, cout, 1)
    _he(conv, gain_slope=None)
    return conv


class Plan:
    """The stages of a network for one image size: resolutions and widths, coarsest first."""

    def __init__(self, cfg: Config) -> None:
        a = cfg.model_args
        size = cfg.data.image_size
        try:
            self.s0, n = size_plan(size)
        except GancliError:
            raise GancliError(f"r3gan needs an image size of the form s*2^n with n >= 1 "
                              f"(e.g. 16, 28, 32, 64); got {size}") from None
        self.sizes = [self.s0 * 2 ** i for i in range(n + 1)]
        if "widths" in a:
            self.widths = [int(w) for w in a["widths"]]
            if len(self.widths) != len(self.sizes):
                raise GancliError(f"r3gan: widths needs one width per stage, "
                                  f"{len(self.sizes)} for {size} px "
                                  f"({', '.join(map(str, self.sizes))}); got {len(self.widths)}")
        else:
            width, top = int(a.get("width", 32)), int(a.get("max_width", 256))
            self.widths = [min(top, width * size // s) for s in self.sizes]
        self.blocks = int(a.get("blocks", 1))
        self.expand = int(a.get("expand", 2))
        self.group_size = int(a.get("group_size", 16))
        for w in self.widths:
            _groups(w * self.expand, self.group_size)
        # fix-up: L blocks of m = 3 layers each -> L^(-1/(2m-2))
        self.scale = (self.blocks * len(self.sizes)) ** -0.25

    def stage(self, width: int) -> nn.Sequential:
        return nn.Sequential(*[Block(width, self.expand, self.group_size, self.scale)
                               for _ in range(self.blocks)])


# ---------------------------------------------------------------------- the networks


class Generator(nn.Module):
    def __init__(self, spec: LatentSpec, plan: Plan, channels: int, embed_dim: int) -> None:
        super().__init__()
        self.spec, self.s0, self.w0 = spec, plan.s0, plan.widths[0]
        label = spec.label_code
        self.label_name = label.name if label is not None else None
        self.num_classes = label.size if label is not None else 0
        extra = 0
        if label is not None:   # a table of one embedding per class (takes soft labels too)
            self.embed = nn.Linear(label.size, embed_dim, bias=False)
            nn.init.normal_(self.embed.weight)
            extra = embed_dim
        # The bias of this layer is the learned s0 x s0 constant start; z moves it.
        self.start = nn.Linear(spec.noise_dim + extra, self.w0 * self.s0 * self.s0)
        _he(self.start, gain_slope=None)
        self.stages = nn.ModuleList([plan.stage(w) for w in plan.widths])
        self.transitions = nn.ModuleList(
            [nn.Sequential(_width_change(cin, cout), Up(cout))
             for cin, cout in zip(plan.widths[:-1], plan.widths[1:])])
        self.out = nn.Conv2d(plan.widths[-1], channels, 1)
        _he(self.out, gain_slope=None)

    def forward(self, latents: Latents) -> torch.Tensor:
        z = latents["z"]
        if self.label_name is not None:
            y = categorical_input(latents[self.label_name], self.num_classes).to(z.dtype)
            z = torch.cat([z, self.embed(y)], 1)
        h = self.start(z).view(-1, self.w0, self.s0, self.s0)
        h = self.stages[0](h)
        for transition, stage in zip(self.transitions, self.stages[1:]):
            h = stage(transition(h))
        return torch.tanh(self.out(h))


class Discriminator(nn.Module):
    """forward(x) (or forward(x, y) when conditional; y int64 [B] or soft [B, K]) returns one
    logit per image, shape [B]."""

    def __init__(self, plan: Plan, channels: int, num_classes: int = 0) -> None:
        super().__init__()
        widths = plan.widths[::-1]     # finest first, mirroring G
        self.inp = nn.Conv2d(channels, widths[0], 1)
        _he(self.inp, gain_slope=None)
        self.stages = nn.ModuleList([plan.stage(w) for w in widths])
        self.transitions = nn.ModuleList(
            [nn.Sequential(Down(cin), _width_change(cin, cout))
             for cin, cout in zip(widths[:-1], widths[1:])])
        w0, s0 = widths[-1], plan.s0
        self.head = nn.Linear(w0 * s0 * s0, w0)
        _he(self.head)
        self.act = nn.LeakyReLU(SLOPE)
        self.logit = nn.Linear(w0, 1)
        _he(self.logit, gain_slope=None)
        self.num_classes = num_classes
        if num_classes:
            self.embed = nn.Linear(num_classes, w0, bias=False)   # one row per class
            nn.init.normal_(self.embed.weight, 0.0, 1.0 / math.sqrt(w0))

    def forward(self, x: torch.Tensor, y: torch.Tensor | None = None) -> torch.Tensor:
        h = self.stages[0](self.inp(x))
        for transition, stage in zip(self.transitions, self.stages[1:]):
            h = stage(transition(h))
        h = self.act(self.head(h.flatten(1)))
        out = self.logit(h).squeeze(-1)
        if self.num_classes:
            if y is None:
                raise GancliError("this r3gan discriminator is conditional: it needs labels")
            e = self.embed(categorical_input(y, self.num_classes).to(h.dtype))
            out = out + (e * h).sum(-1)
        return out


# ---------------------------------------------------------------------- the family


def _conditional(cfg: Config) -> bool:
    return bool(cfg.model_args.get("conditional", False))


class R3GAN:
    name = "r3gan"
    description = ("R3GAN: residual nets with no normalisation, the relativistic loss and "
                   "R1 + R2 (2024)")
    args = ARGS
    train_defaults = TRAIN_DEFAULTS

    def latent_spec(self, cfg: Config) -> LatentSpec:
        a = cfg.model_args
        check_args(self.name, a, self.args)
        codes: tuple[Code, ...] = ()
        if _conditional(cfg):
            k = int(cfg.data.num_classes or 0)
            if k < 2:
                raise GancliError(f"r3gan: conditional = true needs a labelled data set, but "
                                  f"recipe '{cfg.recipe}' (data '{cfg.data.source}') has no "
                                  f"classes (data.num_classes = {k})")
            codes = (Code("label", "categorical", size=k, role="label"),)
        return LatentSpec(noise_dim=int(a.get("noise_dim", 64)), noise=a.get("noise", "normal"),
                          codes=codes)

    def build(self, cfg: Config, spec: LatentSpec) -> tuple[nn.Module, nn.Module]:
        check_args(self.name, cfg.model_args, self.args)
        plan = Plan(cfg)
        c = cfg.data.channels
        label = spec.label_code if _conditional(cfg) else None
        G = Generator(spec, plan, c, int(cfg.model_args.get("embed_dim", 32)))
        return G, Discriminator(plan, c, label.size if label is not None else 0)

    @staticmethod
    def _args(cfg: Config, labels: torch.Tensor | None) -> tuple[torch.Tensor, ...]:
        """What D takes beside the images: the labels, when conditional."""
        if not _conditional(cfg):
            return ()
        if labels is None:
            raise GancliError("r3gan with conditional = true needs labels, but this data set "
                              "yields none: set conditional = false")
        return (labels,)

    def d_loss(self, D: nn.Module, real: torch.Tensor, labels: torch.Tensor | None,
               fake: torch.Tensor, latents: Latents, cfg: Config) -> tuple[torch.Tensor, Logs]:
        real_logit = D(real, *self._args(cfg, labels))
        fake_logit = D(fake, *self._args(cfg, latents.get("label")))
        loss = d_adversarial(real_logit.float(), fake_logit.float(), cfg.train.loss)
        return loss, {"d_loss": loss.detach(), **d_figures(real_logit, fake_logit)}

    def g_loss(self, D: nn.Module, fake: torch.Tensor, latents: Latents, cfg: Config,
               real: torch.Tensor | None = None,
               labels: torch.Tensor | None = None) -> tuple[torch.Tensor, Logs]:
        kind = cfg.train.loss
        real_logit = (real_logits_for_g(D, real, kind, *self._args(cfg, labels))
                      if kind in RELATIVISTIC else None)
        fake_logit = D(fake, *self._args(cfg, latents.get("label")))
        loss = g_adversarial(fake_logit.float(), kind, real_logit)
        return loss, {"g_loss": loss.detach()}


register(R3GAN())
