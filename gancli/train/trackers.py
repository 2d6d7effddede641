"""Experiment trackers (`--log-with tensorboard,wandb,mlflow,...`) through Accelerate's own
trackers: the figures of metrics.jsonl as scalars, the sample grids as images, the config as
hyperparameters. gancli writes no tracker files itself; metrics.jsonl stays the record."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
from accelerate import Accelerator

from gancli.errors import GancliError
from gancli.recipes import Config

# Accelerate's tracker names (LoggerType) and the package each needs.
PACKAGES = {"tensorboard": "tensorboard", "wandb": "wandb", "mlflow": "mlflow",
            "comet_ml": "comet_ml", "aim": "aim", "clearml": "clearml", "dvclive": "dvclive",
            "swanlab": "swanlab", "trackio": "trackio"}


def parse(log_with: str) -> list[str]:
    """'tensorboard,wandb' -> names, each known and installed; else one GancliError."""
    import accelerate.utils as au

    names = [n.strip() for n in log_with.split(",") if n.strip()]
    for name in names:
        if name not in PACKAGES:
            raise GancliError(f"--log-with: unknown tracker '{name}' (choose from "
                              f"{', '.join(PACKAGES)})")
        if not getattr(au, f"is_{name}_available")():
            extra = " (pip install 'gancli[tensorboard]')" if name == "tensorboard" else ""
            raise GancliError(f"--log-with {name} needs the {PACKAGES[name]} package: pip install "
                              f"{PACKAGES[name]}{extra}")
    return names


def hyperparameters(cfg: Config) -> dict[str, Any]:
    """The config flattened to the scalar types every tracker takes (lists as text)."""
    flat: dict[str, Any] = {}

    def walk(prefix: str, v: Any) -> None:
        if isinstance(v, dict):
            for k, x in v.items():
                walk(f"{prefix}.{k}" if prefix else k, x)
        elif v is None or isinstance(v, (bool, int, float, str)):
            flat[prefix] = "none" if v is None else v
        else:
            flat[prefix] = str(v)

    walk("", cfg.to_dict())
    return flat


def start(accelerator: Accelerator, cfg: Config, run_dir: Path) -> None:
    """Open the trackers (TensorBoard writes under RUN/trackers/) on the main process."""
    if not cfg.train.log_with:
        return
    accelerator.project_configuration.set_directories(str(run_dir))
    accelerator.project_configuration.logging_dir = str(run_dir / "trackers")
    accelerator.init_trackers(run_dir.name, config=hyperparameters(cfg))


def log(accelerator: Accelerator, record: dict[str, Any], step: int) -> None:
    values = {k: v for k, v in record.items()
              if k not in ("step", "time", "eval") and isinstance(v, (int, float))
              and not isinstance(v, bool)}
    if values and getattr(accelerator, "trackers", None):
        accelerator.log(values, step=step)


def log_grid(accelerator: Accelerator, grid: np.ndarray, step: int) -> None:
    """One sample grid (H x W x C uint8) to every tracker that takes images."""
    for tracker in accelerator.trackers:
        if not hasattr(tracker, "log_images"):
            continue
        if tracker.name == "tensorboard":
            tracker.log_images({"samples": grid[None]}, step=step, dataformats="NHWC")
        else:
            tracker.log_images({"samples": [grid]}, step=step)
