"""The generator's inputs: noise z, categorical and continuous codes, class labels.

Latents travel as a dict of tensors: ``{"z": [B, noise_dim], "c1": [B] int64, "c2": [B] float,
"label": [B] int64, ...}``. Every generation command (sample, traverse, interpolate) works on this
dict, so it needs to know nothing about the model family behind it.

A categorical value may also be a float tensor [B, K] of class weights (a soft one-hot); generators
accept both, which lets `interpolate` walk from one category or label to another.
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass, field, replace

import torch

from gancli.errors import GancliError

Latents = dict[str, torch.Tensor]
_Z_NAME = re.compile(r"z([0-9]+)")
MAX_VALUE = 1e4      # largest |value| a continuous code or noise dimension may be set to
MAX_LISTED = 24      # class names listed in one error line; past this, a count


def name_list(names: "tuple[str, ...] | list[str]") -> str:
    """'0 Activities, 1 Animals & Nature, ...': values and names for an error line (one line
    even for an image folder of a thousand classes)."""
    shown = ", ".join(f"{i} {n}" for i, n in enumerate(names[:MAX_LISTED]))
    return shown + (f", ... ({len(names)} in all)" if len(names) > MAX_LISTED else "")


def check_value(value: float, what: str) -> float:
    """A value for a continuous code or noise dimension: finite and within +-MAX_VALUE."""
    if not math.isfinite(value) or abs(value) > MAX_VALUE:
        raise GancliError(f"{what}: values must be finite numbers within +-{MAX_VALUE:g}")
    return value


@dataclass(frozen=True)
class Code:
    name: str
    kind: str                    # "categorical" | "continuous"
    size: int = 0                # number of values of a categorical code
    low: float = -1.0            # a continuous code's training range (uniform)
    high: float = 1.0
    role: str = "code"           # "code": drawn at random; "label": the data's class when training
    # A label's class names, one per value, when the checkpoint records them (or its source's
    # classes are fixed): `--label Flags` then means the value of "Flags". Not part of equality:
    # the same network with or without names is the same spec.
    value_names: tuple[str, ...] = field(default=(), compare=False)

    @property
    def categorical(self) -> bool:
        return self.kind == "categorical"

    def value_of(self, text: str, what: str) -> int:
        """The value a class name stands for: its exact name, case-insensitive, or a prefix of
        only one name. `what` starts the error line (e.g. "--label Flagz")."""
        values = f"{self.name} takes integers 0..{self.size - 1}"
        if not self.value_names:
            why = (" and this checkpoint records no class names" if self.role == "label"
                   else "")   # an InfoGAN code's values are found, never named
            raise GancliError(f"{what}: {text!r} is not a number{why}: {values}")
        key = text.strip().casefold()
        folded = [n.casefold() for n in self.value_names]
        if key in folded:
            return folded.index(key)
        hits = [i for i, n in enumerate(folded) if key and n.startswith(key)]
        if len(hits) == 1:
            return hits[0]
        if hits:
            raise GancliError(f"{what}: {text!r} starts several class names "
                              f"({', '.join(self.value_names[i] for i in hits)}): give more of it")
        raise GancliError(f"{what}: unknown class {text!r}; {values} or a class name: "
                          f"{name_list(self.value_names)}")


@dataclass(frozen=True)
class LatentSpec:
    noise_dim: int
    noise: str = "normal"        # "normal" N(0, 1) | "uniform" U(-1, 1)
    codes: tuple[Code, ...] = field(default_factory=tuple)

    # ------------------------------------------------------------------ names
    def code(self, name: str) -> Code:
        for c in self.codes:
            if c.name == name:
                return c
        raise GancliError(f"unknown code '{name}'; this model's codes: {self.describe_names()}")

    def names(self) -> list[str]:
        return [c.name for c in self.codes]

    def describe_names(self) -> str:
        named = ", ".join(self.describe(c) for c in self.codes)
        z = f"z0..z{self.noise_dim - 1} (noise dimensions)"
        return f"{named}, {z}" if named else z

    @staticmethod
    def describe(c: Code) -> str:
        if c.categorical:
            return f"{c.name} (categorical, {c.size} values)"
        return f"{c.name} (continuous, {c.low:g}..{c.high:g})"

    def z_index(self, name: str) -> int | None:
        m = _Z_NAME.fullmatch(name)
        if not m:
            return None
        digits = m.group(1)
        i = int(digits) if len(digits) <= 18 else self.noise_dim  # (no 4,300-digit int parse)
        if i >= self.noise_dim:
            raise GancliError(f"'{name}' is out of range: the noise has {self.noise_dim} "
                              f"dimensions (z0..z{self.noise_dim - 1})")
        return i

    def check_name(self, name: str) -> None:
        if self.z_index(name) is None:
            self.code(name)

    @property
    def label_code(self) -> Code | None:
        return next((c for c in self.codes if c.role == "label"), None)

    def with_class_names(self, names: "tuple[str, ...] | list[str] | None") -> "LatentSpec":
        """This spec with the label code's values named (unchanged without a label code, or
        when the names do not fit its values one for one)."""
        lc = self.label_code
        if lc is None or not names or len(names) != lc.size:
            return self
        if list(names) == [str(i) for i in range(lc.size)]:
            return self     # digits named "0".."9": the names add nothing to the numbers
        named = replace(lc, value_names=tuple(str(n) for n in names))
        return replace(self, codes=tuple(named if c is lc else c for c in self.codes))

    # ------------------------------------------------------------------ drawing
    def sample(self, n: int, generator: torch.Generator | None = None,
               device: torch.device | str | None = None,
               labels: torch.Tensor | None = None) -> Latents:
        """Draw n latents on the generator's device (the CPU without one), then move them to
        `device`. Generation commands draw on a CPU generator, so the same seed gives the same
        latents on every device; training draws on a generator that lives on the training
        device, so no latents are copied from the host each step. `labels`, when given, fill
        the code whose role is "label"."""
        out: Latents = {}
        at = generator.device if generator is not None else None
        if self.noise == "uniform":
            out["z"] = torch.rand(n, self.noise_dim, generator=generator, device=at) * 2 - 1
        else:
            out["z"] = torch.randn(n, self.noise_dim, generator=generator, device=at)
        for c in self.codes:
            if c.categorical:
                out[c.name] = torch.randint(0, c.size, (n,), generator=generator, device=at)
            else:
                out[c.name] = (torch.rand(n, generator=generator, device=at) * (c.high - c.low)
                               + c.low)
        if device is not None:
            out = {k: v.to(device) for k, v in out.items()}
        if labels is not None and self.label_code is not None:
            out[self.label_code.name] = labels.to(out["z"].device, torch.int64)
        return out

    def parse_value(self, name: str, text: str, option: str = "--code",
                    what: str | None = None) -> float | int:
        """Turn a CLI value for a code into a number, checking it fits the code: a categorical
        code takes one of its values (or, when they are named, a name: see :meth:`Code.value_of`;
        a number always means the value itself); a continuous code or noise dimension any finite
        number within +-MAX_VALUE (far past any training range, short of float32's overflow).
        `what` starts an error line (default "OPTION NAME=TEXT")."""
        what = what or f"{option} {name}={text}"
        categorical = self.z_index(name) is None and self.code(name).categorical
        try:
            value = float(text)
        except ValueError:
            if categorical:     # a class name (`--label Flags`), when the values have names
                return self.code(name).value_of(text, what)
            raise GancliError(f"{what}: {text!r} is not a number") from None
        if categorical:
            c = self.code(name)
            if not math.isfinite(value) or value != int(value) or not 0 <= value < c.size:
                named = f", or a class name: {name_list(c.value_names)}" if c.value_names else ""
                raise GancliError(f"{what}: {name} takes integers 0..{c.size - 1}{named}")
            return int(value)
        check_value(value, what)
        return value

    def fix(self, latents: Latents, name: str, value: float | int | torch.Tensor) -> Latents:
        """A copy of `latents` with one code (or noise dimension zN) set to `value` for every row
        (or, if `value` is a tensor of B values, row by row)."""
        out = dict(latents)
        i = self.z_index(name)
        if i is not None:
            z = out["z"].clone()
            z[:, i] = torch.as_tensor(value, dtype=z.dtype, device=z.device)
            out["z"] = z
            return out
        c = self.code(name)
        ref = out["z"]
        n = ref.shape[0]
        dtype = torch.int64 if c.categorical else ref.dtype
        out[name] = torch.as_tensor(value, dtype=dtype, device=ref.device).expand(n).clone()
        return out

    def traversal_values(self, name: str, steps: int = 9,
                         value_range: tuple[float, float] = (-2.0, 2.0)) -> torch.Tensor:
        """The values a traversal walks: every value of a categorical code, else `steps` evenly
        spaced values over `value_range` (which may go past the training range on purpose)."""
        if steps < 2:
            raise GancliError(f"--steps must be at least 2, got {steps}")
        if self.z_index(name) is None and self.code(name).categorical:
            return torch.arange(self.code(name).size)
        lo, hi = (float(v) for v in value_range)
        check_value(lo, f"--range {lo:g} {hi:g}")
        check_value(hi, f"--range {lo:g} {hi:g}")
        if not lo < hi:
            raise GancliError(f"--range {lo:g} {hi:g}: the start must be below the end "
                              f"(e.g. --range -2 2)")
        return torch.linspace(lo, hi, steps)

    def traversal(self, name: str, rows: int, values: torch.Tensor,
                  generator: torch.Generator | None = None) -> Latents:
        """rows x len(values) latents, row-major: each row one noise draw held fixed, each column
        one value of `name`."""
        base = self.sample(rows, generator)
        cols = len(values)
        grid = {k: v.repeat_interleave(cols, dim=0) for k, v in base.items()}
        return self.fix(grid, name, values.repeat(rows))

    def preview(self, generator: torch.Generator, n: int = 64) -> tuple[Latents, int]:
        """Fixed latents for the progress grids written while training, and the grid's row length.

        With a categorical code (or label) of up to 16 values the grid is square in it: each
        column one value, each row one noise draw, so what the code controls is visible at once."""
        cat = next((c for c in self.codes if c.categorical and c.size <= 16), None)
        if cat is None:
            return self.sample(n, generator), int(math.sqrt(n)) or 1
        return self.traversal(cat.name, cat.size, torch.arange(cat.size), generator), cat.size


# ---------------------------------------------------------------------- interpolation


def lerp(a: torch.Tensor, b: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
    """Linear interpolation; t has one value per output row."""
    t = t.view(-1, *([1] * (a.dim() - 1))).to(a.dtype)
    return a + (b - a) * t


def slerp(a: torch.Tensor, b: torch.Tensor, t: torch.Tensor, eps: float = 1e-7) -> torch.Tensor:
    """Spherical interpolation of the direction with the norm interpolated linearly.

    Walking straight between two Gaussian draws passes through low-norm points the generator
    rarely saw; slerp keeps the walk on the shell where the draws live (and keeps the norm exactly
    when both ends share it)."""
    t = t.view(-1, *([1] * (a.dim() - 1))).to(a.dtype)
    na, nb = a.norm(dim=-1, keepdim=True), b.norm(dim=-1, keepdim=True)
    ua, ub = a / na.clamp_min(eps), b / nb.clamp_min(eps)
    dot = (ua * ub).sum(-1, keepdim=True).clamp(-1 + eps, 1 - eps)
    omega = torch.acos(dot)
    so = torch.sin(omega)
    direction = (torch.sin((1 - t) * omega) / so) * ua + (torch.sin(t * omega) / so) * ub
    direction = direction / direction.norm(dim=-1, keepdim=True).clamp_min(eps)
    return direction * (na + (nb - na) * t)


def interpolate(spec: LatentSpec, start: Latents, end: Latents, steps: int, method: str = "slerp",
                walk: tuple[str, ...] = ()) -> Latents:
    """`steps` latents from `start` to `end` (each a batch of one or more rows: one strip per row),
    row-major. The noise walks by `method`; codes stay at `start`'s values unless named in `walk`
    (continuous codes then lerp; categorical codes walk as soft one-hot weights)."""
    if method not in ("slerp", "lerp"):
        raise GancliError(f"--method must be slerp or lerp, got '{method}'")
    if steps < 2:
        raise GancliError(f"--steps must be at least 2, got {steps}")
    for name in walk:
        spec.check_name(name)
    rows = start["z"].shape[0]
    t = torch.linspace(0, 1, steps).repeat(rows)

    def expand(x: torch.Tensor) -> torch.Tensor:
        return x.repeat_interleave(steps, dim=0)

    def ends(x: torch.Tensor, a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
        # Float rounding leaves slerp/lerp a few ulps off at t = 0 and 1: pin the ends, so the
        # first and last images of a strip are exactly those of the two draws.
        tt = t.view(-1, *([1] * (x.dim() - 1))).to(x.device)
        return torch.where(tt == 0, a, torch.where(tt == 1, b, x))

    fn = slerp if method == "slerp" else lerp
    za, zb = expand(start["z"]), expand(end["z"])
    out: Latents = {"z": ends(fn(za, zb, t), za, zb)}
    for c in spec.codes:
        a, b = expand(start[c.name]), expand(end[c.name])
        if c.name not in walk:
            out[c.name] = a
        elif c.categorical:
            # (an end read from a file may already be soft weights)
            oa, ob = categorical_input(a, c.size), categorical_input(b, c.size)
            out[c.name] = lerp(oa, ob, t)
        else:
            out[c.name] = ends(lerp(a.unsqueeze(-1), b.unsqueeze(-1), t).squeeze(-1), a, b)
    return out


def categorical_input(value: torch.Tensor, size: int) -> torch.Tensor:
    """A categorical code as the float [B, size] a network eats: one-hot for int64 values, the
    weights themselves for a soft [B, size] tensor."""
    if value.dtype in (torch.int64, torch.int32, torch.int16, torch.uint8):
        return torch.nn.functional.one_hot(value.long(), size).float()
    return value.float()


# ---------------------------------------------------------------------- truncation

MAX_TRUNCATION = 2.0    # past 2 the draws leave the region the generator was trained on for good


def check_truncation(psi: float, option: str = "--truncation") -> float:
    """A truncation factor: finite, 0 < psi <= MAX_TRUNCATION (1 changes nothing; below 1 pulls
    the noise toward its mean, above 1 pushes it out, for a look at what diversity costs)."""
    if not math.isfinite(psi) or not 0 < psi <= MAX_TRUNCATION:
        raise GancliError(f"{option} must be a number in (0, {MAX_TRUNCATION:g}] (1: no "
                          f"truncation; 0.7 is a common choice), got {psi:g}")
    return psi


def truncate(latents: Latents, psi: float) -> Latents:
    """The truncation trick: a copy of `latents` with the noise z drawn toward its mean,
    z = mean + psi * (z - mean). Both noises gancli draws, N(0, 1) and U(-1, 1), have mean 0.

    Only z moves. Categorical codes and labels are choices, not draws around a mean; InfoGAN's
    continuous codes are the controls a user sets on purpose (`--code c2=1.5`), so they are
    left as drawn too (the usual trick truncates the noise alone). psi = 1 returns the very
    same tensors, so an untruncated command gives its images bit for bit."""
    check_truncation(psi)
    if psi == 1:
        return latents
    out = dict(latents)
    out["z"] = latents["z"] * psi
    return out
