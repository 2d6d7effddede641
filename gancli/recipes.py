"""Recipes: TOML files that name a data set and the training settings per model family.

A recipe plus the model name plus CLI overrides resolve into one frozen :class:`Config`, which is
written to the run directory and into every generator checkpoint's metadata.
"""

from __future__ import annotations

import dataclasses
import json
import sys
from dataclasses import dataclass, field, fields
from importlib import resources
from pathlib import Path
from typing import Any, Mapping

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover
    import tomli as tomllib

from gancli.errors import GancliError

DEFAULT_RECIPE = "digits"
MIXED_PRECISION = ("no", "bf16", "fp16")
LOSSES = ("bce", "lsgan", "hinge")
EVAL_METRICS = ("score", "fid")


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


@dataclass(frozen=True)
class TrainConfig:
    batch_size: int = 64
    steps: int | None = None         # exactly one of steps/epochs decides the length
    epochs: float | None = None
    lr_g: float = 2e-4
    lr_d: float = 2e-4
    beta1: float = 0.5
    beta2: float = 0.999
    loss: str = "bce"                # bce (non-saturating) | lsgan | hinge
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
        try:
            data = DataConfig(**{k: v for k, v in d["data"].items() if k in DATA_KEYS})
            train = TrainConfig(**{k: v for k, v in d["train"].items() if k in TRAIN_KEYS})
            return cls(model=d["model"], recipe=d["recipe"], data=data, train=train,
                       model_args=dict(d.get("model_args", {})))
        except (KeyError, TypeError) as e:
            raise GancliError(f"not a gancli config (missing or bad field: {e})") from None

    @classmethod
    def from_json(cls, text: str) -> "Config":
        try:
            return cls.from_dict(json.loads(text))
        except json.JSONDecodeError as e:
            raise GancliError(f"not a gancli config (bad JSON: {e})") from None


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
        text, name = path.read_text(), path.stem
    else:
        res = resources.files("gancli._recipes") / f"{name_or_path}.toml"
        if not res.is_file():
            raise GancliError(f"unknown recipe '{name_or_path}'; known recipes: "
                              f"{', '.join(builtin_recipes())} (or a path to a .toml file)")
        text, name = res.read_text(), name_or_path
    try:
        return name, tomllib.loads(text)
    except tomllib.TOMLDecodeError as e:
        raise GancliError(f"recipe '{name_or_path}' is not valid TOML: {e}") from None


def resolve(model: str, recipe: str | None = None, overrides: Mapping[str, Any] | None = None,
            data_overrides: Mapping[str, Any] | None = None) -> Config:
    """Merge recipe defaults, the model family's section and CLI overrides into one Config.

    Precedence, lowest first: TrainConfig defaults, the recipe's [train], the recipe's
    [models.<model>], then `overrides` (None values are ignored, so unset CLI flags do not count).
    """
    name, raw = read_recipe(recipe or DEFAULT_RECIPE)
    if "data" not in raw:
        raise GancliError(f"recipe '{name}' has no [data] section")
    unknown = set(raw["data"]) - DATA_KEYS
    if unknown:
        raise GancliError(f"recipe '{name}': unknown [data] keys {sorted(unknown)}")
    data_d = dict(raw["data"])
    data_d.update({k: v for k, v in (data_overrides or {}).items() if v is not None})

    family = dict(raw.get("models", {}).get(model, {}))
    train_d: dict[str, Any] = {}
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
    try:
        cfg = Config(model=model, recipe=name, data=DataConfig(**data_d),
                     train=TrainConfig(**train_d), model_args=model_args)
    except TypeError as e:
        raise GancliError(f"recipe '{name}': {e}") from None
    validate(cfg)
    return cfg


def validate(cfg: Config) -> None:
    """Reject values no run could use, with one line naming the value."""
    t, d = cfg.train, cfg.data
    positive = {"batch_size": t.batch_size, "lr_g": t.lr_g, "lr_d": t.lr_d, "g_steps": t.g_steps,
                "log_every": t.log_every, "sample_every": t.sample_every,
                "checkpoint_every": t.checkpoint_every, "image_size": d.image_size,
                "channels": d.channels, "eval_samples": t.eval_samples}
    for k, v in positive.items():
        if not isinstance(v, (int, float)) or v <= 0:
            raise GancliError(f"--{k.replace('_', '-')} must be positive, got {v!r}")
    if t.steps is None and t.epochs is None:
        raise GancliError("the recipe sets neither steps nor epochs: pass --steps or --epochs")
    if t.steps is not None and t.steps <= 0:
        raise GancliError(f"--steps must be positive, got {t.steps}")
    if t.epochs is not None and t.epochs <= 0:
        raise GancliError(f"--epochs must be positive, got {t.epochs}")
    if t.eval_every < 0:
        raise GancliError(f"--eval-every must be 0 (off) or positive, got {t.eval_every}")
    if t.mixed_precision not in MIXED_PRECISION:
        raise GancliError(f"--mixed-precision must be one of {', '.join(MIXED_PRECISION)}, "
                          f"got '{t.mixed_precision}'")
    if t.loss not in LOSSES:
        raise GancliError(f"--loss must be one of {', '.join(LOSSES)}, got '{t.loss}'")
    if t.eval_metric not in EVAL_METRICS:
        raise GancliError(f"--eval-metric must be one of {', '.join(EVAL_METRICS)}, "
                          f"got '{t.eval_metric}'")
    if not 0.0 <= t.ema_decay < 1.0:
        raise GancliError(f"--ema-decay must be in [0, 1), got {t.ema_decay}")
    if d.stream not in ("auto", "device", "stream"):
        raise GancliError(f"data.stream must be auto, device or stream, got '{d.stream}'")
    if d.limit is not None and d.limit <= 0:
        raise GancliError(f"--limit must be positive, got {d.limit}")
