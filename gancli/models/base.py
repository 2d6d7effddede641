"""The model contract every family fulfils, and the adversarial losses they share."""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any, Mapping, Protocol

import torch
import torch.nn.functional as F
from torch import nn

from gancli.errors import GancliError
from gancli.latent import Latents, LatentSpec
from gancli.recipes import Config, _shown  # one way to show a bad value

Logs = dict[str, float | torch.Tensor]


# ---------------------------------------------------------------------- model settings


@dataclass(frozen=True)
class Arg:
    """One setting a family reads from cfg.model_args (a recipe's [models.<family>] section, or
    a checkpoint's metadata: both untrusted), with the type and range it must have."""

    kind: str                      # int | float | bool | choice | int_list
    lo: float = 0
    hi: float = 0
    choices: tuple[Any, ...] = ()
    max_len: int = 16              # int_list: at most this many entries

    def check(self, family: str, key: str, v: Any) -> None:
        def is_int(x: Any) -> bool:
            return isinstance(x, int) and not isinstance(x, bool)

        where = f"{family}: {key}"
        if self.kind == "int":
            if not (is_int(v) and self.lo <= v <= self.hi):
                raise GancliError(f"{where} must be an integer in {self.lo:g}..{self.hi:g}, "
                                  f"got {_shown(v)}")
        elif self.kind == "float":
            if not ((is_int(v) or isinstance(v, float)) and math.isfinite(v)
                    and self.lo <= v <= self.hi):
                raise GancliError(f"{where} must be a finite number in [{self.lo:g}, "
                                  f"{self.hi:g}], got {_shown(v)}")
        elif self.kind == "bool":
            if not isinstance(v, bool):
                raise GancliError(f"{where} must be true or false (got {_shown(v)})")
        elif self.kind == "choice":
            if not any(type(v) is type(c) and v == c for c in self.choices):
                names = " or ".join(_shown(c) if isinstance(c, str) else str(c)
                                    for c in self.choices)
                raise GancliError(f"{where} must be {names} (got {_shown(v)})")
        elif self.kind == "int_list":
            if not (isinstance(v, (list, tuple)) and len(v) <= self.max_len
                    and all(is_int(x) and self.lo <= x <= self.hi for x in v)):
                raise GancliError(f"{where} must be a list of at most {self.max_len} integers "
                                  f"in {self.lo:g}..{self.hi:g}, got {_shown(v)}")
        else:  # pragma: no cover - a family's schema is code, not input
            raise ValueError(f"unknown Arg kind {self.kind}")


# Every family draws noise; each adds its own settings to these.
NOISE_ARGS = {"noise_dim": Arg("int", 1, 4096),
              "noise": Arg("choice", choices=("normal", "uniform"))}


def check_args(family: str, args: Mapping[str, Any], schema: Mapping[str, Arg]) -> None:
    """Refuse unknown settings (a typo would be silently ignored) and values of the wrong type
    or out of range, with one line naming the setting."""
    if not isinstance(args, Mapping):
        raise GancliError(f"{family}: model settings must be a table, got {_shown(args)}")
    unknown = sorted(str(k) for k in args if k not in schema)
    if unknown:
        raise GancliError(f"{family}: unknown model setting{'s' if len(unknown) > 1 else ''} "
                          f"{', '.join(_shown(k) for k in unknown)}; {family} takes "
                          f"{', '.join(sorted(schema))}")
    for k, v in args.items():
        schema[k].check(family, k, v)


class Family(Protocol):
    """A model family: networks, the latent they eat, and the two losses of a GAN step.

    The training loop owns optimisers, devices, precision, EMA and files; a family owns nothing
    but the maths. `d_loss` gets the fake batch already detached; `g_loss` gets it with its graph,
    and the real batch (with its labels) for losses that compare the two in G's step too
    (`--loss rpgan`: see :func:`real_logits_for_g`). Both return a scalar loss and a dict of
    figures to log (tensors are fine: the loop converts). A family may also hold
    `train_defaults`, training settings it brings (below the recipe's and the command line's).
    """

    name: str
    description: str

    def latent_spec(self, cfg: Config) -> LatentSpec: ...

    def build(self, cfg: Config, spec: LatentSpec) -> tuple[nn.Module, nn.Module]: ...

    def d_loss(self, D: nn.Module, real: torch.Tensor, labels: torch.Tensor | None,
               fake: torch.Tensor, latents: Latents, cfg: Config) -> tuple[torch.Tensor, Logs]: ...

    def g_loss(self, D: nn.Module, fake: torch.Tensor, latents: Latents, cfg: Config,
               real: torch.Tensor | None = None,
               labels: torch.Tensor | None = None) -> tuple[torch.Tensor, Logs]: ...


# Losses whose generator step also needs D's view of the real batch.
RELATIVISTIC = ("rpgan",)


def d_adversarial(real_logits: torch.Tensor, fake_logits: torch.Tensor, kind: str) -> torch.Tensor:
    """The discriminator's loss on logits: bce (the original GAN), lsgan (least squares, targets
    1/0), hinge, or rpgan: the relativistic pairing loss of R3GAN (Huang et al., 2024), which
    scores each real image against the fake drawn beside it, softplus(-(D(x) - D(G(z)))). Real
    and fake logits pair up element by element (the loop draws one fake per real)."""
    if kind == "bce":
        return (F.binary_cross_entropy_with_logits(real_logits, torch.ones_like(real_logits))
                + F.binary_cross_entropy_with_logits(fake_logits, torch.zeros_like(fake_logits)))
    if kind == "lsgan":
        return 0.5 * ((real_logits - 1).pow(2).mean() + fake_logits.pow(2).mean())
    if kind == "hinge":
        return F.relu(1 - real_logits).mean() + F.relu(1 + fake_logits).mean()
    if kind == "rpgan":
        return F.softplus(fake_logits - real_logits).mean()
    raise ValueError(f"unknown loss {kind}")


def g_adversarial(fake_logits: torch.Tensor, kind: str,
                  real_logits: torch.Tensor | None = None) -> torch.Tensor:
    """The generator's loss: non-saturating for bce (maximise log D(G(z)), as the GAN paper
    recommends over minimising log(1 - D(G(z))))); rpgan's is the mirror of D's,
    softplus(-(D(G(z)) - D(x))), and needs `real_logits`."""
    if kind == "bce":
        return F.binary_cross_entropy_with_logits(fake_logits, torch.ones_like(fake_logits))
    if kind == "lsgan":
        return 0.5 * (fake_logits - 1).pow(2).mean()
    if kind == "hinge":
        return -fake_logits.mean()
    if kind == "rpgan":
        if real_logits is None:
            raise ValueError("rpgan's generator loss needs D's logits on the real batch")
        return F.softplus(real_logits - fake_logits).mean()
    raise ValueError(f"unknown loss {kind}")


def real_logits_for_g(D: Any, real: torch.Tensor | None, kind: str,
                      *args: Any) -> torch.Tensor | None:
    """D's logits on the real batch for G's step when the loss is relativistic, else None.
    Computed without a graph: D is frozen in G's step and the reals do not depend on G, so
    D(x) is a constant there (G learns through D(G(z)) alone). D may return a tuple whose
    first element is the logit (InfoGAN)."""
    if kind not in RELATIVISTIC:
        return None
    if real is None:
        raise GancliError(f"--loss {kind} compares fakes with reals in G's step, but no real "
                          f"batch was given to the generator's loss")
    with torch.no_grad():
        out = D(real, *args)
    return (out[0] if isinstance(out, tuple) else out).float()

def d_figures(real_logits: torch.Tensor, fake_logits: torch.Tensor) -> Logs:
    """D's mean belief on real and fake: the first thing to look at when a run goes wrong; and
    the fraction of its outputs on reals that are positive (ADA's overfitting signal: near 1, D
    has memorised the training set)."""
    return {"d_real": torch.sigmoid(real_logits.detach().float()).mean(),
            "d_fake": torch.sigmoid(fake_logits.detach().float()).mean(),
            "d_real_positive": (real_logits.detach() > 0).float().mean()}


def init_dcgan_weights(module: nn.Module) -> None:
    """N(0, 0.02) for conv/linear weights, N(1, 0.02) for norm scales, as in the DCGAN paper."""
    for m in module.modules():
        if isinstance(m, (nn.Conv2d, nn.ConvTranspose2d, nn.Linear, nn.Embedding)):
            nn.init.normal_(m.weight, 0.0, 0.02)
            if getattr(m, "bias", None) is not None:
                nn.init.zeros_(m.bias)
        elif isinstance(m, (nn.BatchNorm1d, nn.BatchNorm2d)):
            nn.init.normal_(m.weight, 1.0, 0.02)
            nn.init.zeros_(m.bias)


class UnconditionalLosses:
    """The two GAN losses for a D that maps images to logits (gan, dcgan). Real and fake go
    through D as two forwards, never one over cat(real, fake): with BatchNorm a joined batch lets
    D tell them apart by batch statistics alone."""

    def d_loss(self, D: nn.Module, real: torch.Tensor, labels: torch.Tensor | None,
               fake: torch.Tensor, latents: Latents, cfg: Config) -> tuple[torch.Tensor, Logs]:
        real_logit = D(real)
        fake_logit = D(fake)
        loss = d_adversarial(real_logit.float(), fake_logit.float(), cfg.train.loss)
        return loss, {"d_loss": loss.detach(), **d_figures(real_logit, fake_logit)}

    def g_loss(self, D: nn.Module, fake: torch.Tensor, latents: Latents, cfg: Config,
               real: torch.Tensor | None = None,
               labels: torch.Tensor | None = None) -> tuple[torch.Tensor, Logs]:
        kind = cfg.train.loss
        loss = g_adversarial(D(fake).float(), kind, real_logits_for_g(D, real, kind))
        return loss, {"g_loss": loss.detach()}
