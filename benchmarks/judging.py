"""What the comparison scripts (little_data.py, equal_time.py) share: running a gancli command,
and judging one checkpoint of a run, either by the recipe classifier (`gancli score`: its
Fréchet distance, class coverage, cGAN's label agreement) or by Inception (`gancli fid`: FID and
KID on the EMA generator, against the whole training split).

Each judged checkpoint is kept in RUN/judged/ (one JSON file per step and protocol), so a
comparison that is extended (more steps, more points) or run again judges only what is new: on
a CPU, one FID of 500 samples costs minutes, more than a short run's training.
"""

from __future__ import annotations

import contextlib
import json
import os
import subprocess
import sys
import threading
from pathlib import Path

GANCLI = [sys.executable, "-m", "gancli"]


def run(cmd: list[str], env: dict[str, str] | None = None) -> str:
    r = subprocess.run(cmd, capture_output=True, text=True, env=env)
    if r.returncode != 0:
        sys.exit(f"failed: {' '.join(cmd)}\n{r.stderr[-3000:]}")
    return r.stdout


class Judge:
    """judge(run_dir, step, env) -> the checkpoint's figures, `fd` always (classifier FD or FID)."""

    def __init__(self, kind: str, n: int, device: str, ref_n: int | None = None) -> None:
        if kind not in ("score", "fid"):
            raise ValueError(f"unknown judge {kind!r}")
        self.kind, self.n, self.device, self.ref_n = kind, n, device, ref_n
        # The first FID runs alone: it computes (and caches) the reference's features, which
        # every later one reuses; two computing them at once would each do the whole work.
        self._first = threading.Lock()
        self._ready = threading.Event()

    def key(self, step: int) -> str:
        ref = f"-ref{self.ref_n}" if self.kind == "fid" and self.ref_n else ""
        return f"step-{step:07d}-{self.kind}-n{self.n}{ref}"

    def __call__(self, run_dir: Path, step: int, env: dict[str, str] | None = None) -> dict:
        kept = Path(run_dir) / "judged" / f"{self.key(step)}.json"
        made = _made(Path(run_dir), step)
        if kept.is_file():
            res = json.loads(kept.read_text())
            if res.pop("checkpoint", None) == made:    # not a checkpoint written again since
                return res
        res = self._score(run_dir, step, env) if self.kind == "score" else self._fid(run_dir, step, env)
        kept.parent.mkdir(exist_ok=True)
        tmp = kept.with_suffix(".tmp")
        tmp.write_text(json.dumps({**res, "checkpoint": made}))
        os.replace(tmp, kept)
        return res

    def _score(self, run_dir: Path, step: int, env: dict[str, str] | None) -> dict:
        res = json.loads(run([*GANCLI, "score", str(run_dir), "--step", str(step), "--json",
                              "--n", str(self.n), "--device", self.device], env))
        return {"fd": res["classifier_fd"], "min_share": res["min_share"],
                "classes_under_5pct": res["classes_under_5pct"],
                "label_agreement": res.get("label_agreement")}

    def _fid(self, run_dir: Path, step: int, env: dict[str, str] | None) -> dict:
        # Real FID and KID on the EMA generator, against the whole training split (not only the
        # --limit images a run saw), the same n, seed and precision for every run.
        cmd = [*GANCLI, "fid", str(run_dir), "--step", str(step), "--json", "--n", str(self.n),
               "--whole-split", "--precision", "fp32", "--device", self.device,
               "--batch-size", "50"]
        cmd += ["--ref-n", str(self.ref_n)] if self.ref_n else []
        with self._first if not self._ready.is_set() else contextlib.nullcontext():
            res = json.loads(run(cmd, env).strip().splitlines()[-1])
            self._ready.set()
        return {"fd": res["fid"], "kid": res["kid"], "kid_std": res["kid_std"]}


def _made(run_dir: Path, step: int) -> list[int]:
    """When and how large the checkpoint's generator file is: a judged result is kept only for
    the very file it judged."""
    st = (run_dir / "checkpoints" / f"step-{step:07d}" / "generator.safetensors").stat()
    return [st.st_mtime_ns, st.st_size]


def records(run_dir: Path) -> list[dict]:
    """A run's metrics.jsonl, a half-written last line skipped."""
    out = []
    log = Path(run_dir) / "metrics.jsonl"
    for line in log.read_text().splitlines() if log.is_file() else []:
        try:
            out.append(json.loads(line))
        except json.JSONDecodeError:
            continue
    return out


def training_records(run_dir: Path) -> list[dict]:
    """The loop's own lines (not events, evaluations or fid/score results)."""
    return [r for r in records(run_dir) if "step" in r and "kind" not in r and "event" not in r
            and not r.get("eval")]


def checkpoint_steps(run_dir: Path) -> list[int]:
    return sorted(int(d.name[5:]) for d in Path(run_dir).glob("checkpoints/step-*"))
