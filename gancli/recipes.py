"""Recipes: TOML files that name a data set and the training settings per model family.

A recipe plus the model name plus CLI overrides resolve into one frozen :class:`Config`, which is
written to the run directory and into every generator checkpoint's metadata.
"""

from __future__ import annotations

import dataclasses
import functools
import json
import math
import re
import sys
import typing
from dataclasses import dataclass, field, fields
from importlib import resources
from pathlib import Path
from typing import Any, Mapping, NamedTuple

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover
    import tomli as tomllib

from gancli.errors import GancliError

DEFAULT_RECIPE = "digits"
MIXED_PRECISION = ("no", "bf16", "fp16", "auto")
ADAM_IMPLS = ("auto", "plain", "foreach", "fused")
COMPILE_MODES = ("auto", "default", "reduce-overhead", "max-autotune", "max-autotune-no-cudagraphs")
LOSSES = ("bce", "lsgan", "hinge", "rpgan")
EVAL_METRICS = ("score", "fid")
ON_NAN = ("stop", "skip")          # what a non-finite loss does: end the run, or roll back
AUGMENT_GROUPS = ("colour", "translation", "cutout")   # --augment's ops (gancli.train.augment)
BACKGROUNDS = {"white": (255, 255, 255), "black": (0, 0, 0), "grey": (128, 128, 128),
               "gray": (128, 128, 128)}  # named backgrounds; any #rrggbb works too
VENDORS = ("twitter", "google", "both")   # the emoji source's drawing sets
VENDOR_SOURCES = ("emoji",)               # the sources that read data.vendor


@dataclass(frozen=True)
class DataConfig:
    source: str                      # loader name in gancli.data
    image_size: int
    channels: int
    num_classes: int = 0             # 0: the data set has no labels
    path: str | None = None          # a local copy (--data); else `env`, else a download
    env: str | None = None           # environment variable that may name a local copy
    hf_id: str | None = None         # HuggingFace hub id for the download path
    crop: int | None = None          # center-crop to this size before resizing
    limit: int | None = None         # use only the first N images (quick experiments, tests)
    stream: str = "auto"             # auto | device | stream: keep the set on the device or stream it
    background: str = "white"        # what transparent pixels become: white, black, grey, #rrggbb
    vendor: str | None = None        # emoji's drawings: twitter | google | both (None: twitter)


@dataclass(frozen=True)
class TrainConfig:
    batch_size: int = 64
    steps: int | None = None         # exactly one of steps/epochs decides the length
    epochs: float | None = None
    lr_g: float = 2e-4
    lr_d: float = 2e-4
    beta1: float = 0.5
    beta2: float = 0.999
    loss: str = "bce"                # bce (non-saturating) | lsgan | hinge | rpgan (relativistic)
    g_steps: int = 1                 # generator updates per discriminator update
    seed: int = 0
    mixed_precision: str = "no"
    cpu: bool = False
    ema: bool = True
    ema_decay: float = 0.999
    log_every: int = 50
    sample_every: int = 500
    checkpoint_every: int = 2000
    eval_every: int = 0
    eval_metric: str = "score"
    eval_samples: int = 2000
    keep_last: int = 0               # keep only the K newest step checkpoints (0: all)
    on_nan: str = "stop"             # stop | skip: what a non-finite loss or weight does
    channels_last: bool = True       # channels_last memory for convolutional networks
    adam: str = "auto"               # auto | plain | foreach | fused (Adam's implementation)
    compile: bool = False            # torch.compile of G and D
    compile_mode: str = "auto"       # auto (reduce-overhead: CUDA graphs on a GPU) | default | ...
    tf32: bool = True                # TF32 for fp32 matrix work on Ampere+ GPUs
    sync_bn: bool = False            # SyncBatchNorm across GPUs (CUDA only)
    log_with: str = ""               # Accelerate trackers, comma list: tensorboard, wandb, ...
    balance_classes: bool = False    # draw real images class-balanced (labelled data only)
    augment: str = "none"            # none | diffaug | ada | a comma list of colour, translation, cutout
    ada_target: float = 0.6          # ada: the E[sign D(real)] p is adjusted towards
    r1: float = 0.0                  # R1 penalty's gamma on reals (0: off)
    r1_every: int = 1                # lazy R1 and R2: every K steps (times K)
    r2: float = 0.0                  # R2 penalty's gamma on generated images (0: off)
    # Schedules (gancli.train.schedules), each a cosine from its start to its end over
    # decay_steps, then held; each value is a function of the step alone, so a resumed run
    # takes them up exactly where it stopped.
    decay_steps: int = 0             # the schedules' length in steps (0: every value constant)
    lr_decay_to: float = 1.0         # lr_g and lr_d end at this fraction of themselves
    gamma_decay_to: float = 1.0      # r1 and r2 end at this fraction of themselves
    beta2_start: float | None = None  # Adam's beta2 rises from this to beta2 (None: constant)
    ema_half_life: float = 0.0       # EMA half-life in images (0: ema_decay, warmed up)
    ema_ramp: float = 0.0            # half-life at most ema_ramp x the images seen (0: no ramp)
    out: str | None = None


TRAIN_KEYS = {f.name for f in fields(TrainConfig)}
DATA_KEYS = {f.name for f in fields(DataConfig)}


@dataclass(frozen=True)
class Config:
    model: str
    recipe: str
    data: DataConfig
    train: TrainConfig
    model_args: Mapping[str, Any] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        d = dataclasses.asdict(self)
        d["model_args"] = dict(self.model_args)
        return d

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), sort_keys=True)

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> "Config":
        """A config read back from a file (a run's config.json, a checkpoint's metadata): only
        known keys, each of its field's type, every value in range; else one GancliError."""
        bad = "not a gancli config"
        if not isinstance(d, Mapping):
            raise GancliError(f"{bad} (expected a JSON object, got {type(d).__name__})")
        for key, kind in (("model", str), ("recipe", str), ("data", Mapping), ("train", Mapping)):
            if not isinstance(d.get(key), kind):
                raise GancliError(f"{bad} (missing or bad field '{key}')")
        if not isinstance(d.get("model_args", {}), Mapping):
            raise GancliError(f"{bad} (model_args must be an object)")
        data_d = check_types(DataConfig, {k: v for k, v in d["data"].items() if k in DATA_KEYS},
                             f"{bad}: data.")
        train_d = check_types(TrainConfig,
                              {k: v for k, v in d["train"].items() if k in TRAIN_KEYS},
                              f"{bad}: train.")
        try:
            data = DataConfig(**data_d)
            train = TrainConfig(**train_d)
        except TypeError as e:
            raise GancliError(f"{bad} (missing or bad field: {e})") from None
        cfg = cls(model=d["model"], recipe=d["recipe"], data=data, train=train,
                  model_args=dict(d.get("model_args", {})))
        try:
            validate(cfg)
        except GancliError as e:
            raise GancliError(f"{bad} that gancli can use: {e}") from None
        return cfg

    @classmethod
    def from_json(cls, text: str) -> "Config":
        try:
            d = json.loads(text)
        except (ValueError, RecursionError) as e:  # JSONDecodeError, 4,300-digit ints, nesting
            raise GancliError(f"not a gancli config (bad JSON: {str(e)[:80]})") from None
        return cls.from_dict(d)


# ---------------------------------------------------------------------- types of fields

_TYPE_WORDS = {int: "an integer", float: "a number", bool: "true or false", str: "a string"}


def _shown(v: Any) -> str:
    if isinstance(v, int) and not isinstance(v, bool) and abs(v) > 10 ** 30:
        return f"a number of about {int(abs(v).bit_length() * 0.30103) + 1} digits"  # repr() fails past 4,300
    try:
        text = repr(v)
    except ValueError:      # a huge integer inside a list or table
        return f"a {type(v).__name__} holding a number too long to show"
    return text if len(text) <= 60 else text[:57] + "..."


@functools.lru_cache(maxsize=None)
def _field_types(cls: type) -> dict[str, tuple[type, ...]]:
    """Each field's allowed types, from its annotation: `int` -> (int,), `X | None` -> (X, None)."""
    out = {}
    for name, tp in typing.get_type_hints(cls).items():
        out[name] = tuple(typing.get_args(tp)) or (tp,)
    return out


def check_types(cls: type, values: Mapping[str, Any], where: str = "") -> dict[str, Any]:
    """`values` for dataclass `cls`, each checked against its field's annotation (an int field
    takes no bool or float; a float field takes an int, made a float; `X | None` takes None).
    Unknown keys pass through (callers decide). One line naming the key, else."""
    types = _field_types(cls)
    out = {}
    for k, v in values.items():
        allowed = types.get(k)
        if allowed is None or not any(t in _TYPE_WORDS for t in allowed):
            out[k] = v  # an unknown key (callers decide), or a type this check does not know
        elif v is None and type(None) in allowed:
            out[k] = None
        elif isinstance(v, bool):
            if bool not in allowed:
                break
            out[k] = v
        elif isinstance(v, int) and int in allowed:
            out[k] = v
        elif isinstance(v, (int, float)) and float in allowed:
            if isinstance(v, int) and abs(v) > 10 ** 300:   # float() would overflow
                break
            out[k] = float(v)
        elif isinstance(v, str) and str in allowed:
            out[k] = v
        else:
            break
    else:
        return out
    want = " or ".join(_TYPE_WORDS[t] for t in allowed if t in _TYPE_WORDS)
    raise GancliError(f"{where}{k} must be {want}, got {_shown(v)}")


def builtin_recipes() -> list[str]:
    """Names of the recipes that ship with gancli."""
    root = resources.files("gancli._recipes")
    return sorted(p.name[:-5] for p in root.iterdir() if p.name.endswith(".toml"))


def read_recipe(name_or_path: str) -> tuple[str, dict[str, Any]]:
    """Return (recipe name, parsed TOML) for a built-in recipe name or a path to a TOML file."""
    path = Path(name_or_path)
    if name_or_path.endswith(".toml") or path.is_file():
        if not path.is_file():
            raise GancliError(f"recipe file not found: {name_or_path}")
        try:
            text, name = path.read_text(encoding="utf-8"), path.stem
        except (OSError, UnicodeDecodeError) as e:
            raise GancliError(f"cannot read recipe {name_or_path}: "
                              f"{getattr(e, 'strerror', None) or e}") from None
    else:
        res = resources.files("gancli._recipes") / f"{name_or_path}.toml"
        if not res.is_file():
            raise GancliError(f"unknown recipe '{name_or_path}'; known recipes: "
                              f"{', '.join(builtin_recipes())} (or a path to a .toml file)")
        text, name = res.read_text(), name_or_path
    check_toml_bounds(text, name_or_path)
    try:
        raw = tomllib.loads(text)
    except (tomllib.TOMLDecodeError, RecursionError) as e:
        raise GancliError(f"recipe '{name_or_path}' is not valid TOML: {str(e)[:120]}") from None
    except ValueError as e:   # an integer of thousands of digits
        raise GancliError(f"recipe '{name_or_path}' holds an unreadable number "
                          f"({str(e)[:80]})") from None
    return name, raw


# A recipe is a page of settings: these bounds are far past any real one, and checked before the
# TOML parser runs, so a crafted file is refused at once (not after minutes or gigabytes).
MAX_RECIPE_BYTES = 256 * 1024
MAX_RECIPE_DEPTH = 16            # nested [ and { outside strings
MAX_RECIPE_LINE = 4096           # characters of one line, so of any key or number


def check_toml_bounds(text: str, where: str) -> None:
    """Refuse a recipe text that is too large, too deeply nested or has too long a line."""
    if len(text) > MAX_RECIPE_BYTES:
        raise GancliError(f"recipe '{where}' is {len(text):,} characters, more than the "
                          f"{MAX_RECIPE_BYTES:,} a recipe may have")
    for n, line in enumerate(text.splitlines(), 1):
        if len(line) > MAX_RECIPE_LINE:
            raise GancliError(f"recipe '{where}': line {n} is {len(line):,} characters, more "
                              f"than the {MAX_RECIPE_LINE:,} a recipe line may have")
    # strip strings and comments (roughly: quotes never nest brackets), then count depth
    bare = re.sub(r'"""[\s\S]*?"""|\'\'\'[\s\S]*?\'\'\'|"(?:\\.|[^"\\\n])*"|\'[^\'\n]*\'|#[^\n]*',
                  "", text)
    depth = top = 0
    for ch in bare:
        if ch in "[{":
            depth += 1
            top = max(top, depth)
        elif ch in "]}":
            depth = max(0, depth - 1)
        if top > MAX_RECIPE_DEPTH:
            raise GancliError(f"recipe '{where}' nests tables or arrays more than "
                              f"{MAX_RECIPE_DEPTH} deep")


def parse_background(value: Any) -> tuple[int, int, int]:
    """The RGB colour a background setting names: white, black, grey (gray) or #rrggbb, in any
    case. One GancliError line for anything else."""
    if isinstance(value, str):
        v = value.strip().lower()
        if v in BACKGROUNDS:
            return BACKGROUNDS[v]
        if re.fullmatch(r"#[0-9a-f]{6}", v):
            return int(v[1:3], 16), int(v[3:5], 16), int(v[5:7], 16)
    raise GancliError(f"--background must be white, black, grey or a #rrggbb colour, "
                      f"got {_shown(value)}")


def resolve(model: str, recipe: str | None = None, overrides: Mapping[str, Any] | None = None,
            data_overrides: Mapping[str, Any] | None = None) -> Config:
    """Merge recipe defaults, the model family's section and CLI overrides into one Config.

    Precedence, lowest first: TrainConfig defaults, the family's own `train_defaults`, the
    recipe's [train], the recipe's [models.<model>], then `overrides` (None values are ignored,
    so unset CLI flags do not count).
    """
    name, raw = read_recipe(recipe or DEFAULT_RECIPE)
    if "data" not in raw:
        raise GancliError(f"recipe '{name}' has no [data] section")
    unknown = sorted(set(raw) - {"description", "data", "train", "models"})
    if unknown:
        raise GancliError(f"recipe '{name}': unknown section{'s' if len(unknown) > 1 else ''} "
                          f"{', '.join(unknown)} (a recipe has description, [data], [train] "
                          f"and [models.<family>])")
    for section, table in (("data", raw["data"]), ("train", raw.get("train", {})),
                           ("models", raw.get("models", {})),
                           (f"models.{model}", raw.get("models", {}).get(model, {})
                            if isinstance(raw.get("models", {}), dict) else {})):
        if not isinstance(table, dict):
            raise GancliError(f"recipe '{name}': [{section}] must be a table of settings, "
                              f"got {_shown(table)}")
    data_d = _data_table(name, raw, data_overrides)

    family = dict(raw.get("models", {}).get(model, {}))
    # A family's own training defaults (r3gan: its loss, penalties, betas) come first, so that
    # it trains as itself on a recipe that never heard of it; the recipe and the CLI override.
    train_d: dict[str, Any] = dict(family_train_defaults(model))
    train_d.update(raw.get("train", {}))
    train_d.update({k: v for k, v in family.items() if k in TRAIN_KEYS})
    model_args = {k: v for k, v in family.items() if k not in TRAIN_KEYS}
    unknown = set(train_d) - TRAIN_KEYS
    if unknown:
        raise GancliError(f"recipe '{name}': unknown [train] keys {sorted(unknown)}")
    ov = {k: v for k, v in (overrides or {}).items() if v is not None}
    if ov.get("steps") is not None:
        train_d["epochs"] = None
    elif ov.get("epochs") is not None:
        train_d["steps"] = None
    train_d.update(ov)
    data_d = check_types(DataConfig, data_d, f"recipe '{name}': [data] ")
    train_d = check_types(TrainConfig, train_d, f"recipe '{name}': ")
    try:
        cfg = Config(model=model, recipe=name, data=DataConfig(**data_d),
                     train=TrainConfig(**train_d), model_args=model_args)
    except TypeError as e:
        raise GancliError(f"recipe '{name}': {e}") from None
    validate(cfg)
    check_model_args(cfg)
    return cfg


def _data_table(name: str, raw: Mapping[str, Any],
                data_overrides: Mapping[str, Any] | None) -> dict[str, Any]:
    """A recipe's [data] with the command line's data options over it (None: not given)."""
    if not isinstance(raw.get("data"), dict):
        raise GancliError(f"recipe '{name}' has no [data] section")
    unknown = set(raw["data"]) - DATA_KEYS
    if unknown:
        raise GancliError(f"recipe '{name}': unknown [data] keys {sorted(unknown)}")
    missing = [k for k in ("source", "image_size", "channels") if k not in raw["data"]]
    if missing:
        raise GancliError(f"recipe '{name}': [data] needs {', '.join(missing)}")
    data_d = dict(raw["data"])
    data_d.update({k: v for k, v in (data_overrides or {}).items() if v is not None})
    return data_d


def resolve_data(recipe: str | None = None,
                 data_overrides: Mapping[str, Any] | None = None) -> tuple[str, DataConfig]:
    """(recipe name, data config) of a recipe with the command line's data options, for the
    commands that look at the data alone (`gancli data`): no model, no training settings."""
    name, raw = read_recipe(recipe or DEFAULT_RECIPE)
    data_d = check_types(DataConfig, _data_table(name, raw, data_overrides),
                         f"recipe '{name}': [data] ")
    try:
        data = DataConfig(**data_d)
    except TypeError as e:
        raise GancliError(f"recipe '{name}': {e}") from None
    validate_data(data)
    return name, data


def family_train_defaults(model: str) -> Mapping[str, Any]:
    """The training settings a model family brings (its `train_defaults`; most have none).
    Imported late, as in check_model_args."""
    from gancli.models import get_family

    return getattr(get_family(model), "train_defaults", {})


def check_model_args(cfg: Config) -> None:
    """Let the model family judge its settings (types, ranges, unknown keys) now, not when the
    run starts. Imported late: the families pull in torch, which recipes does not need."""
    from gancli.models import get_family

    try:
        get_family(cfg.model).latent_spec(cfg)
    except (TypeError, ValueError, KeyError) as e:
        raise GancliError(f"recipe '{cfg.recipe}': bad [models.{cfg.model}] settings "
                          f"({str(e)[:80]})") from None


class Range(NamedTuple):
    lo: float
    hi: float
    lo_open: bool = False   # lo itself is not allowed
    hi_open: bool = False


# The numbers a run may use. Past these no run is sane, and some would allocate without end.
TRAIN_RANGES = {
    "batch_size": Range(1, 65_536), "steps": Range(1, 10 ** 9), "epochs": Range(0, 1e6, True),
    "lr_g": Range(0, 10, True), "lr_d": Range(0, 10, True),
    "beta1": Range(0, 1, hi_open=True), "beta2": Range(0, 1, hi_open=True),
    "g_steps": Range(1, 100), "seed": Range(0, 2 ** 31 - 1),
    "ema_decay": Range(0, 1, hi_open=True),
    "log_every": Range(1, 10 ** 9), "sample_every": Range(1, 10 ** 9),
    "checkpoint_every": Range(1, 10 ** 9), "eval_every": Range(0, 10 ** 9),
    "eval_samples": Range(1, 100_000),
    "ada_target": Range(0, 1, True, True), "r1": Range(0, 1e9), "r1_every": Range(1, 1000),
    "r2": Range(0, 1e9), "decay_steps": Range(0, 10 ** 9), "lr_decay_to": Range(0, 1),
    "gamma_decay_to": Range(0, 1), "beta2_start": Range(0, 1, hi_open=True),
    "ema_half_life": Range(0, 1e12), "ema_ramp": Range(0, 1000),
}
DATA_RANGES = {
    "image_size": Range(1, 1024), "num_classes": Range(0, 100_000),
    "limit": Range(1, 10 ** 12), "crop": Range(1, 16_384),
}
_FLAGS = {"steps", "epochs", "batch_size", "lr_g", "lr_d", "g_steps", "seed", "ema_decay",
          "log_every", "sample_every", "checkpoint_every", "eval_every", "ada_target", "r1",
          "r1_every", "r2"}


def _check_range(name: str, v: Any, r: Range) -> None:
    if v is None:
        return
    if (not isinstance(v, (int, float)) or isinstance(v, bool)
            or (isinstance(v, int) and abs(v) > 10 ** 300) or not math.isfinite(v)):
        raise GancliError(f"{name} must be a finite number, got {_shown(v)}")
    if v < r.lo or (r.lo_open and v == r.lo):
        if r.lo in (0, 1) and (r.lo_open or r.lo == 1):
            raise GancliError(f"{name} must be positive, got {v}")
        raise GancliError(f"{name} must be at least {r.lo:g}, got {v}")
    if v > r.hi or (r.hi_open and v == r.hi):
        if r.hi_open:
            raise GancliError(f"{name} must be in [{r.lo:g}, {r.hi:g}), got {v}")
        raise GancliError(f"{name} must be at most {r.hi:,}, got {v}")


def validate(cfg: Config) -> None:
    """Reject values no run could use, with one line naming the value."""
    t, d = cfg.train, cfg.data
    for k, r in TRAIN_RANGES.items():
        _check_range(f"--{k.replace('_', '-')}" if k in _FLAGS else f"train.{k}", getattr(t, k), r)
    validate_data(d)
    if t.steps is None and t.epochs is None:
        raise GancliError("the recipe sets neither steps nor epochs: pass --steps or --epochs")
    if t.adam not in ADAM_IMPLS:
        raise GancliError(f"--adam must be one of {', '.join(ADAM_IMPLS)}, got '{t.adam}'")
    if t.compile_mode not in COMPILE_MODES:
        raise GancliError(f"--compile-mode must be one of {', '.join(COMPILE_MODES)}, "
                          f"got {_shown(t.compile_mode)}")
    if t.mixed_precision not in MIXED_PRECISION:
        raise GancliError(f"--mixed-precision must be one of {', '.join(MIXED_PRECISION)}, "
                          f"got '{t.mixed_precision}'")
    if t.loss not in LOSSES:
        raise GancliError(f"--loss must be one of {', '.join(LOSSES)}, got '{t.loss}'")
    if not isinstance(t.keep_last, int) or isinstance(t.keep_last, bool) or t.keep_last < 0:
        raise GancliError(f"--keep-last must be 0 (keep all) or positive, got {t.keep_last!r}")
    if t.on_nan not in ON_NAN:
        raise GancliError(f"--on-nan must be one of {', '.join(ON_NAN)}, got '{t.on_nan}'")
    if t.eval_metric not in EVAL_METRICS:
        raise GancliError(f"--eval-metric must be one of {', '.join(EVAL_METRICS)}, "
                          f"got '{t.eval_metric}'")
    augment_policy(t.augment)
    if not t.decay_steps:
        moving = [k for k, v in (("lr_decay_to", t.lr_decay_to != 1),
                                 ("gamma_decay_to", t.gamma_decay_to != 1),
                                 ("beta2_start", t.beta2_start is not None)) if v]
        if moving:   # a schedule with no length would silently hold its start value
            raise GancliError(f"train.{moving[0]} needs train.decay_steps (the steps over which "
                              f"the schedules run)")
    if t.ema_ramp and not t.ema_half_life:
        raise GancliError("train.ema_ramp needs train.ema_half_life (the half-life it ramps to)")


def validate_data(d: DataConfig) -> None:
    """Reject data settings no source could use, with one line naming the value."""
    for k, r in DATA_RANGES.items():
        _check_range("--limit" if k == "limit" else f"data.{k}", getattr(d, k), r)
    if d.channels not in (1, 3) or isinstance(d.channels, bool):
        raise GancliError(f"data.channels must be 1 (grey) or 3 (RGB), got {_shown(d.channels)}")
    if d.stream not in ("auto", "device", "stream"):
        raise GancliError(f"data.stream must be auto, device or stream, got '{d.stream}'")
    parse_background(d.background)
    if d.vendor is not None:
        if d.vendor not in VENDORS:
            raise GancliError(f"--vendor must be one of {', '.join(VENDORS)}, "
                              f"got {_shown(d.vendor)}")
        if d.source not in VENDOR_SOURCES:
            raise GancliError(f"--vendor is a setting of the emoji source, not of "
                              f"'{d.source}'")


def augment_policy(policy: str) -> tuple[tuple[str, ...], bool]:
    """(the op groups, whether their strength adapts) for an --augment value: none, diffaug
    (colour, translation, cutout), ada (the same, applied with an adaptive probability) or a
    comma list of colour, translation, cutout. One GancliError line for anything else."""
    words = [w.strip().lower() for w in str(policy).split(",")] if isinstance(policy, str) else []
    words = ["colour" if w == "color" else w for w in words]
    if words == ["none"]:
        return (), False
    if words in (["diffaug"], ["ada"]):
        return AUGMENT_GROUPS, words == ["ada"]
    if words and all(w in AUGMENT_GROUPS for w in words) and len(set(words)) == len(words):
        return tuple(words), False
    raise GancliError(f"--augment must be none, diffaug, ada or a comma list of "
                      f"{', '.join(AUGMENT_GROUPS)}; got {_shown(policy)}")
