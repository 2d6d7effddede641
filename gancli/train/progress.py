"""What the loop reports: the progress bar (step, images/s, the latest losses, anything that
went wrong) and the window of figures behind each line of metrics.jsonl."""

from __future__ import annotations

import time
from typing import Any

import torch


class Progress:
    """A rich progress bar with step, images/s and the latest losses (a no-op when hidden)."""

    def __init__(self, enabled: bool, total: int, start: int) -> None:
        self.enabled = enabled
        if not enabled:
            return
        from rich.progress import (BarColumn, MofNCompleteColumn, Progress, TextColumn,
                                   TimeElapsedColumn, TimeRemainingColumn)

        self.progress = Progress(TextColumn("[bold]train"), BarColumn(), MofNCompleteColumn(),
                                 TextColumn("{task.fields[ips]}"), TimeElapsedColumn(),
                                 TimeRemainingColumn(), TextColumn("{task.fields[losses]}"),
                                 TextColumn("[yellow]{task.fields[counters]}"),
                                 transient=False)
        self.task = self.progress.add_task("train", total=total, completed=start, ips="",
                                           losses="", counters="")
        self.progress.start()

    def update(self, step: int, ips: float | None, logs: dict[str, float] | None,
               counters: dict[str, int] | None = None) -> None:
        if not self.enabled:
            return
        fields: dict[str, Any] = {}
        if counters:
            notes = [f"{counters[k]} {what}" for k, what in
                     (("scaler_skipped", "fp16-skipped"), ("nan_rollbacks", "NaN rollbacks"))
                     if counters.get(k)]
            fields["counters"] = ("  " + ", ".join(notes)) if notes else ""
        if ips is not None:
            fields["ips"] = f"{ips:,.0f} img/s"
        if logs:
            keys = [k for k in ("d_loss", "g_loss", "d_real", "d_fake", "info_ce", "c1_acc",
                                "aug_p", "r1", "r2")
                    if k in logs] or list(logs)[:4]
            fields["losses"] = " ".join(f"{k}={logs[k]:.3f}" for k in keys)
        self.progress.update(self.task, completed=step, **fields)

    def close(self) -> None:
        if self.enabled:
            self.progress.stop()


class Window:
    """The figures of the steps since the last log line, summed on the device: they are read
    back once per window, never per step."""

    def __init__(self) -> None:
        self.reset()

    def reset(self) -> None:
        self.sums: dict[str, torch.Tensor] = {}
        self.count, self.images, self.start = 0, 0, time.perf_counter()
        self.cpu_start = time.process_time()

    def add(self, figures: dict[str, torch.Tensor], images: int) -> None:
        for k, v in figures.items():
            self.sums[k] = self.sums.get(k, 0) + v
        self.count += 1
        self.images += images

    def means(self, accelerator: Any) -> dict[str, float]:
        """The window's means over steps and processes (the one read back)."""
        n = max(self.count, 1)
        return {k: float(accelerator.reduce(v / n, "mean")) for k, v in self.sums.items()}

    def images_per_s(self, num_processes: int) -> float:
        return self.images * num_processes / max(time.perf_counter() - self.start, 1e-9)

    def cpu_s(self) -> float:
        """This process's CPU seconds in the window (all its threads): unlike wall time, not
        inflated when other work shares the machine, so runs compare at equal CPU time."""
        return time.process_time() - self.cpu_start
