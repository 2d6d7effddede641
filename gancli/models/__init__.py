"""The model registry: a family registers its name; everything else looks families up here."""

from __future__ import annotations

from gancli.errors import GancliError
from gancli.models.base import Family

_REGISTRY: dict[str, Family] = {}


def register(family: Family) -> Family:
    if family.name in _REGISTRY:
        raise ValueError(f"model family '{family.name}' registered twice")
    _REGISTRY[family.name] = family
    return family


def get_family(name: str) -> Family:
    _load_builtin()
    if name not in _REGISTRY:
        raise GancliError(f"unknown model '{name}'; known models: {', '.join(names())}")
    return _REGISTRY[name]


def names() -> list[str]:
    _load_builtin()
    return sorted(_REGISTRY)


def _load_builtin() -> None:
    # Imported lazily so the registry module stays importable on its own (and cheap for --help).
    import importlib

    for mod in BUILTIN:
        importlib.import_module(f"gancli.models.{mod}")


BUILTIN = ("gan", "cgan", "infogan", "dcgan", "r3gan")
