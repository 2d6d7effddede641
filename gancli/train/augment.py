"""Training with little data: differentiable augmentation of every image D sees, its adaptive
strength, and the R1 and R2 penalties. The loop applies them around D, so no family changes.

- The ops are DiffAugment's (Zhao et al., 2020), differentiable functions of a batch
  (N x C x H x W in [-1, 1]) that draw from a given generator: colour (brightness, saturation,
  contrast; saturation is skipped on grey images), translation by up to 1/8 of the image (the
  border filled with 0) and cutout of a square half the image's size (filled with 0).
- ``--augment diffaug`` (or a comma list of colour, translation, cutout) applies them to every
  image; ``ada`` applies each (brightness, saturation, contrast, translation, cutout) to each
  image with a probability p that follows ADA's heuristic (Karras et al., 2020): every
  ``ADA_INTERVAL`` steps, p moves by sign(r - target) * images / ``ADA_SPEED_IMAGES``, with r =
  E[sign D(real)] over those steps. p lives on the device and is never read inside a step.
- :class:`AugmentedD` is D with its image input augmented: families call it as they call D, with
  labels and codes untouched. It holds no parameters of its own (it wraps the DDP module in D's
  step and the bare module in G's).
- :class:`Penalties`: R1, gamma/2 * E||grad_x D(x_real)||^2 on reals, and R2, the same on fakes
  (lazily every k steps, times k, as in StyleGAN2), through the augmentation as in StyleGAN2-ADA.
"""

from __future__ import annotations

from typing import Any, Callable

import torch
import torch.nn.functional as F
from torch import nn

from gancli.recipes import augment_policy

ADA_INTERVAL = 4              # steps between two adjustments of p
ADA_SPEED_IMAGES = 100_000    # p can go from 0 to 1 in this many real images (the paper: 500k,
                              # for runs of millions of images; gancli's runs are shorter)


def _draw(x: torch.Tensor, gen: torch.Generator) -> torch.Tensor:
    """One uniform [0, 1) number per image, shaped to broadcast over it (float32)."""
    return torch.rand(x.shape[0], 1, 1, 1, generator=gen, device=x.device)


def brightness(x: torch.Tensor, gen: torch.Generator, strength: float = 1.0) -> torch.Tensor:
    """Add a per-image offset in [-0.5, 0.5) * strength."""
    shift = (_draw(x, gen) - 0.5) * strength
    return x if strength == 0 else x + shift.to(x.dtype)


def saturation(x: torch.Tensor, gen: torch.Generator, strength: float = 1.0) -> torch.Tensor:
    """Scale each image's colours away from its grey by a factor in [0, 2) (at strength 1).
    Grey images have no colour to scale: returned as they are."""
    if x.shape[1] == 1:
        return x
    factor = 1 + (_draw(x, gen) * 2 - 1) * strength
    if strength == 0:
        return x
    mean = x.mean(dim=1, keepdim=True)
    return (x - mean) * factor.to(x.dtype) + mean


def contrast(x: torch.Tensor, gen: torch.Generator, strength: float = 1.0) -> torch.Tensor:
    """Scale each image away from its mean by a factor in [0.5, 1.5) (at strength 1)."""
    factor = 1 + (_draw(x, gen) - 0.5) * strength
    if strength == 0:
        return x
    mean = x.mean(dim=(1, 2, 3), keepdim=True)
    return (x - mean) * factor.to(x.dtype) + mean


def translation(x: torch.Tensor, gen: torch.Generator, ratio: float = 0.125) -> torch.Tensor:
    """Move each image by up to ratio of its size in whole pixels, filling the border with 0."""
    n, _, h, w = x.shape
    sh, sw = int(h * ratio + 0.5), int(w * ratio + 0.5)
    if sh == 0 and sw == 0:
        return x
    dy = torch.randint(-sh, sh + 1, (n, 1, 1), generator=gen, device=x.device)
    dx = torch.randint(-sw, sw + 1, (n, 1, 1), generator=gen, device=x.device)
    b, gy, gx = torch.meshgrid(torch.arange(n, device=x.device), torch.arange(h, device=x.device),
                               torch.arange(w, device=x.device), indexing="ij")
    gy = (gy + dy + 1).clamp(0, h + 1)
    gx = (gx + dx + 1).clamp(0, w + 1)
    padded = F.pad(x, [1, 1, 1, 1]).permute(0, 2, 3, 1)
    return padded[b, gy, gx].permute(0, 3, 1, 2)


def cutout(x: torch.Tensor, gen: torch.Generator, ratio: float = 0.5) -> torch.Tensor:
    """Set a square of ratio times the image's size, at a random place, to 0 (it may be cut by
    the image's edge)."""
    n, _, h, w = x.shape
    ch, cw = int(h * ratio + 0.5), int(w * ratio + 0.5)
    if ch == 0 or cw == 0:
        return x
    top = torch.randint(0, h + (1 - ch % 2), (n, 1, 1), generator=gen, device=x.device) - ch // 2
    left = torch.randint(0, w + (1 - cw % 2), (n, 1, 1), generator=gen, device=x.device) - cw // 2
    rows = torch.arange(h, device=x.device).view(1, h, 1)
    cols = torch.arange(w, device=x.device).view(1, 1, w)
    inside = (rows >= top) & (rows < top + ch) & (cols >= left) & (cols < left + cw)
    return x * (~inside).unsqueeze(1).to(x.dtype)


OPS: dict[str, Callable[..., torch.Tensor]] = {
    "brightness": brightness, "saturation": saturation, "contrast": contrast,
    "translation": translation, "cutout": cutout}
GROUPS = {"colour": ("brightness", "saturation", "contrast"),
          "translation": ("translation",), "cutout": ("cutout",)}


def parse_policy(policy: str) -> tuple[tuple[str, ...], bool]:
    """(the ops to apply, in order, whether p adapts) for an --augment value; a GancliError
    for one it does not know."""
    groups, adaptive = augment_policy(policy)
    return tuple(op for g in groups for op in GROUPS[g]), adaptive


def positive_fraction(real_logits: torch.Tensor) -> torch.Tensor:
    """The fraction of D's outputs on reals that are positive: (1 + E[sign D(real)]) / 2."""
    return (real_logits.detach() > 0).float().mean()


class Augment:
    """The augmentation of D's inputs (callable on a batch) and, for ``ada``, its strength p.

    ``observe`` takes each step's fraction of positive outputs on reals (a device tensor, summed
    on the device); ``adjust`` moves p from them. Both stay on the device: no step reads back.
    Under several processes ``reduce_mean`` averages the sum over ranks at each adjustment and p
    moves by every rank's images (``world_size``), so all ranks hold the same p."""

    def __init__(self, policy: str, generator: torch.Generator, *, target: float = 0.6,
                 speed_images: float = ADA_SPEED_IMAGES, interval: int = ADA_INTERVAL,
                 reduce_mean: Callable[[torch.Tensor], torch.Tensor] | None = None,
                 world_size: int = 1) -> None:
        self.ops, self.adaptive = parse_policy(policy)
        self.generator, self.target = generator, float(target)
        self.speed_images, self.interval = float(speed_images), int(interval)
        self.reduce_mean, self.world_size = reduce_mean, int(world_size)
        device = generator.device
        self.p = torch.zeros((), device=device) if self.adaptive else torch.ones((), device=device)
        self.positive = torch.zeros((), device=device)   # summed since the last adjustment
        self.seen, self.images = 0, 0

    @property
    def active(self) -> bool:
        return bool(self.ops)

    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        for name in self.ops:
            y = OPS[name](x, self.generator)
            if self.adaptive:   # each op, each image, with probability p (every draw is made)
                chosen = torch.rand(x.shape[0], generator=self.generator, device=x.device) < self.p
                y = torch.where(chosen.view(-1, 1, 1, 1), y, x)
            x = y
        return x

    def observe(self, real_positive: torch.Tensor, images: int) -> None:
        self.positive = self.positive + real_positive.detach().float()
        self.seen, self.images = self.seen + 1, self.images + int(images)

    def adjust(self) -> None:
        if not self.adaptive or self.seen == 0:
            return
        positive = self.positive if self.reduce_mean is None else self.reduce_mean(self.positive)
        r = 2 * positive / self.seen - 1                        # E[sign D(real)]
        step = torch.sign(r - self.target) * (self.images * self.world_size / self.speed_images)
        self.p = (self.p + step).clamp(0.0, 1.0)
        self.positive = torch.zeros_like(self.positive)
        self.seen, self.images = 0, 0

    def update(self, real_positive: torch.Tensor | None, images: int) -> dict[str, torch.Tensor]:
        """The loop's one call a step: observe, adjust every `interval` steps, and the figures
        to log (p for ada)."""
        if not self.adaptive:
            return {}
        if real_positive is not None:
            self.observe(real_positive, images)
        if self.seen >= self.interval:
            self.adjust()
        return {"aug_p": self.p}

    def state_dict(self) -> dict[str, Any]:
        """For state.json (read back at checkpoints only)."""
        return {"p": float(self.p), "positive": float(self.positive), "seen": self.seen,
                "images": self.images}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        device = self.p.device
        self.p = torch.tensor(float(state["p"]), device=device)
        self.positive = torch.tensor(float(state.get("positive", 0.0)), device=device)
        self.seen, self.images = int(state.get("seen", 0)), int(state.get("images", 0))


class AugmentedD(nn.Module):
    """D with its image input augmented: forward(x, *args, **kw) = D(augment(x), *args, **kw).
    D is held outside the module's registry: the wrapper has no parameters or state of its own."""

    def __init__(self, D: nn.Module, augment: Callable[[torch.Tensor], torch.Tensor]) -> None:
        super().__init__()
        object.__setattr__(self, "inner", D)
        object.__setattr__(self, "augment", augment)

    def forward(self, x: torch.Tensor, *args: Any, **kw: Any) -> Any:
        return self.inner(self.augment(x), *args, **kw)


def wrap(D: nn.Module, augment: Augment) -> nn.Module:
    """D itself when nothing augments (the run is the same as without this module)."""
    return AugmentedD(D, augment) if augment.active else D


def gradient_penalty(D: Callable[..., Any], images: torch.Tensor, *args: Any) -> torch.Tensor:
    """E||grad_x D(x)||^2 over the batch, on a graph (create_graph) so that D learns from it:
    the zero-centred penalty of R1 (on reals) and R2 (on fakes). D may return a logit or a tuple
    whose first element is the logit (InfoGAN)."""
    x = images.detach().requires_grad_(True)
    out = D(x, *args)
    logit = out[0] if isinstance(out, tuple) else out
    (grad,) = torch.autograd.grad(logit.float().sum(), x, create_graph=True)
    return grad.float().pow(2).flatten(1).sum(1).mean()


r1_penalty = gradient_penalty   # the name it had when it was R1's alone


class Penalties:
    """The loop's zero-centred gradient penalties: R1, gamma_1/2 * E||grad D(real)||^2 (Mescheder
    et al., 2018), and R2, gamma_2/2 * E||grad D(fake)||^2 on the generated images (R3GAN: R1
    alone lets training circle, R1 + R2 converge). Both every `every` steps, times `every` (lazy
    regularisation, as StyleGAN2), with gamma scaled by `scale(step)` (a schedule's decay).

    `D` is the discriminator the penalties differentiate (the bare module, augmented: autograd.grad
    goes through neither DDP nor torch.compile); `conditional` when it takes the labels as its
    second argument (R2 reads the fakes' labels from their latents, under `label_key`).

    Reals and fakes go through D in two calls, as a D with BatchNorm needs. For a D without
    batch statistics one call over both would do; measured on this project's CPU it was no
    faster (r3gan at 64 px: 8% slower per penalty step, docs/r3gan.md), so there is one path."""

    def __init__(self, r1: float, r2: float, every: int, D: Callable[..., Any], conditional: bool,
                 device: torch.device, scale: Callable[[int], float] = lambda step: 1.0,
                 label_key: str = "label") -> None:
        self.r1, self.r2, self.every, self.D = float(r1), float(r2), int(every), D
        self.conditional, self.scale, self.label_key = conditional, scale, label_key
        self.last = {name: torch.zeros((), device=device)
                     for name, gamma in (("r1", self.r1), ("r2", self.r2)) if gamma > 0}

    def due(self, step: int) -> bool:
        return bool(self.last) and step % self.every == 0

    def __call__(self, step: int, real: torch.Tensor, labels: torch.Tensor | None,
                 fake: torch.Tensor | None = None,
                 latents: dict[str, torch.Tensor] | None = None) -> torch.Tensor | int:
        """The term to add to D's loss at `step` (0 when not due); R2 needs `fake` (detached)
        and, for a conditional D, the `latents` it was drawn from."""
        if not self.due(step):
            return 0
        batches = {"r1": (real, labels)}
        if "r2" in self.last and fake is not None:
            batches["r2"] = (fake, (latents or {}).get(self.label_key))
        scale = self.scale(step)
        total: torch.Tensor | int = 0
        for name, (x, y) in batches.items():
            if name not in self.last:
                continue
            norm = gradient_penalty(self.D, x, *((y,) if self.conditional else ()))
            term = getattr(self, name) * scale / 2 * norm
            self.last[name] = term.detach()
            total = total + term
        return total * self.every

    def figures(self) -> dict[str, torch.Tensor]:
        """Each penalty's last term (gamma/2 times its mean squared gradient norm)."""
        return dict(self.last)


def R1(gamma: float, every: int, D: Callable[..., Any], conditional: bool,
       device: torch.device) -> Penalties:
    """R1 alone: gamma/2 * E||grad D(real)||^2 every `every` steps, times `every`."""
    return Penalties(gamma, 0.0, every, D, conditional, device)


def from_config(t: Any, device: torch.device, rank: int, saved: dict[str, Any] | None,
                D: nn.Module, label_key: str | None, *, world_size: int = 1,
                reduce_mean: Callable[[torch.Tensor], torch.Tensor] | None = None,
                gamma_scale: Callable[[int], float] = lambda step: 1.0
                ) -> tuple[Augment, Penalties]:
    """The run's augmentation (inactive for --augment none) and its R1/R2 terms, with p as the
    checkpoint left it. The augmentation's generator is seeded like the noise's, apart from it.
    `label_key`: the latent holding the label a conditional D takes (None: D takes images only);
    `gamma_scale(step)`: the penalties' schedule (gancli.train.schedules)."""
    gen = torch.Generator(device=device).manual_seed(t.seed * 7919 + rank * 104729 + 1)
    aug = Augment(t.augment, gen, target=t.ada_target, world_size=world_size,
                  reduce_mean=reduce_mean)
    if saved and aug.adaptive:
        aug.load_state_dict(saved)
    penalties = Penalties(t.r1, t.r2, t.r1_every, wrap(D, aug), label_key is not None, device,
                          scale=gamma_scale, label_key=label_key or "label")
    return aug, penalties
