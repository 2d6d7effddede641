"""Exact resume for every family, checkpoint pruning, numerical faults.

A run stopped at step k and resumed to step n must end bit-identical to an uninterrupted n-step
run: every tensor of the generator, its EMA, the discriminator and both optimisers.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from conftest import invoke
from gancli.checkpoint import step_dirs
from gancli.errors import GancliError
from gancli.models import get_family
from gancli.recipes import resolve
from gancli.train import resume_config, train

# 64 images in batches of 8: 8 steps an epoch, so k = 11 stops mid-epoch and n = 18 crosses one.
RECIPE = """
description = "resume tests"
[data]
source = "digits"
image_size = 16
channels = 1
num_classes = 10
limit = 64
stream = "{stream}"
[train]
batch_size = 8
steps = 18
log_every = 4
sample_every = 6
checkpoint_every = 6
[models.gan]
noise_dim = 8
hidden = 32
[models.cgan]
noise_dim = 8
channels = 8
[models.dcgan]
noise_dim = 8
channels = 8
kernel = 4
[models.infogan]
noise_dim = 8
categorical = [10]
continuous = 2
"""
FILES = ("generator", "generator_ema", "discriminator", "optimizer_g", "optimizer_d")


def recipe(tmp_path: Path, stream: str = "device") -> Path:
    p = tmp_path / f"resume-{stream}.toml"
    p.write_text(RECIPE.format(stream=stream))
    return p


def run(model: str, rec: Path, out: Path, steps: int, **over) -> Path:
    cfg = resolve(model, str(rec), {"steps": steps, "out": str(out), "cpu": True, **over})
    return train(cfg, print_fn=lambda s: None, progress=False)


def resume(run_dir: Path, steps: int, **over) -> Path:
    cfg = resume_config(run_dir, {"steps": steps, **over})
    return train(cfg, resume=run_dir, print_fn=lambda s: None, progress=False)


def final(run_dir: Path) -> dict[str, torch.Tensor]:
    last = step_dirs(run_dir)[-1][1]
    return {f"{f}/{k}": v for f in FILES for k, v in load_file(str(last / f"{f}.safetensors")).items()}


def assert_identical(a: Path, b: Path) -> None:
    ta, tb = final(a), final(b)
    assert ta.keys() == tb.keys()
    differ = [k for k in ta if not torch.equal(ta[k], tb[k])]
    assert not differ, f"{len(differ)} of {len(ta)} tensors differ, e.g. {differ[:3]}"


@pytest.mark.parametrize("model,stream", [("gan", "device"), ("cgan", "device"),
                                          ("infogan", "device"), ("dcgan", "device"),
                                          ("infogan", "stream")])
def test_resume_is_bit_exact(model, stream, tmp_path):
    rec = recipe(tmp_path, stream)
    straight = run(model, rec, tmp_path / "straight", 18)
    parted = run(model, rec, tmp_path / "parted", 11)
    assert step_dirs(parted)[-1][0] == 11
    resume(parted, 18)
    assert_identical(straight, parted)
    # The logs are those of the straight run too: no step logged twice, none missing.
    steps = [json.loads(line)["step"] for line in (parted / "metrics.jsonl").read_text().splitlines()]
    assert steps == sorted(set(steps)) and steps[-1] == 18


def test_resume_is_bit_exact_with_ada_and_lazy_r1(tmp_path):
    """--augment ada draws from its own generator and carries p (and the signal gathered since
    its last adjustment) in state.json; lazy R1 follows the global step."""
    rec = recipe(tmp_path)
    over = {"augment": "ada", "r1": 1.0, "r1_every": 3}
    straight = run("dcgan", rec, tmp_path / "straight", 18, **over)
    parted = run("dcgan", rec, tmp_path / "parted", 11, **over)
    saved = json.loads((step_dirs(parted)[-1][1] / "state.json").read_text())["augment"]
    assert saved["p"] > 0 and saved["seen"] == 11 % 4
    resume(parted, 18)
    assert_identical(straight, parted)
    p = [json.loads((step_dirs(r)[-1][1] / "state.json").read_text())["augment"]["p"]
         for r in (straight, parted)]
    assert p[0] == p[1] > saved["p"]


def test_resume_twice_and_preview_grids_match(tmp_path):
    rec = recipe(tmp_path)
    straight = run("infogan", rec, tmp_path / "straight", 18)
    parted = run("infogan", rec, tmp_path / "parted", 5)
    resume(parted, 13)
    resume(parted, 18)
    assert_identical(straight, parted)
    for name in ("step-0000012.png", "step-0000018.png"):
        assert (straight / "samples" / name).read_bytes() == (parted / "samples" / name).read_bytes()


def test_a_run_killed_before_its_first_checkpoint_resumes_from_zero(tmp_path):
    rec = recipe(tmp_path)
    straight = run("gan", rec, tmp_path / "straight", 8)
    partial = run("gan", rec, tmp_path / "partial", 8)
    shutil.rmtree(partial / "checkpoints")          # as if killed before step 6
    (partial / "metrics.jsonl").unlink()
    resume(partial, 8)
    assert_identical(straight, partial)


def test_resume_refuses_settings_that_would_change_the_run(tmp_path):
    r = invoke("train", "gan", "--recipe", recipe(tmp_path), "--out", tmp_path / "r",
               "--steps", 6, "--no-progress", "--cpu")
    assert r.exit_code == 0, r.output
    r = invoke("train", "gan", "--resume", tmp_path / "r", "--steps", 8, "--lr-d", "1e-3")
    assert r.exit_code == 2 and "--lr-d" in r.stderr and "Traceback" not in r.stderr
    assert len(r.stderr.strip().splitlines()) == 1


def test_keep_last_prunes_old_steps_but_never_best(tmp_path):
    rec = recipe(tmp_path)
    out = run("gan", rec, tmp_path / "k", 12, checkpoint_every=2)
    assert [s for s, _ in step_dirs(out)] == [2, 4, 6, 8, 10, 12]
    shutil.copytree(out / "checkpoints" / "step-0000004", out / "checkpoints" / "best")
    resume(out, 18, keep_last=2)
    assert [s for s, _ in step_dirs(out)] == [16, 18]
    assert (out / "checkpoints" / "best" / "generator.safetensors").is_file()
    assert not [p for p in (out / "checkpoints").iterdir() if p.name.startswith(".")]


def test_resume_removes_what_an_interrupted_writer_left(tmp_path):
    rec = recipe(tmp_path)
    out = run("gan", rec, tmp_path / "s", 6)
    half = out / "checkpoints" / ".step-0000008.x1y2.tmp"
    half.mkdir()
    (half / "generator.safetensors").write_bytes(b"\0" * 10)
    (out / "samples" / ".step-0000008.tmp.abc.png").write_bytes(b"")
    # killed between atomic_dir's two renames while replacing best/: the old one comes back
    shutil.copytree(out / "checkpoints" / "step-0000006", out / "checkpoints" / ".best.old")
    resume(out, 8)
    assert not half.exists() and not list((out / "samples").glob(".*"))
    assert (out / "checkpoints" / "best" / "generator.safetensors").is_file()
    assert not list((out / "checkpoints").glob(".*"))
    assert [s for s, _ in step_dirs(out)] == [6, 8]


def _nan_at(monkeypatch, model: str, calls: set[int]) -> None:
    """Make the family's D loss non-finite on the given (1-based) calls."""
    family = get_family(model)
    original = family.d_loss
    seen = {"n": 0}

    def d_loss(*args, **kw):
        loss, logs = original(*args, **kw)
        seen["n"] += 1
        if seen["n"] in calls:
            loss = loss * float("nan")
            logs = {**logs, "d_loss": loss.detach()}
        return loss, logs

    monkeypatch.setattr(family, "d_loss", d_loss)


def test_a_nan_stops_the_run_and_keeps_the_last_good_checkpoint(tmp_path, monkeypatch):
    _nan_at(monkeypatch, "gan", {7})
    with pytest.raises(GancliError) as e:
        run("gan", recipe(tmp_path), tmp_path / "n", 18, checkpoint_every=2, log_every=5)
    msg = str(e.value)
    assert "step 7" in msg and "d_loss=nan" in msg and "step-0000006" in msg and "\n" not in msg
    assert [s for s, _ in step_dirs(tmp_path / "n")] == [2, 4, 6]
    for _, d in step_dirs(tmp_path / "n"):
        assert all(torch.isfinite(v).all() for v in load_file(str(d / "generator.safetensors")).values())


def test_on_nan_skip_rolls_back_halves_the_rates_and_goes_on(tmp_path, monkeypatch):
    _nan_at(monkeypatch, "gan", {7})
    out = run("gan", recipe(tmp_path), tmp_path / "s", 12, checkpoint_every=4, log_every=2,
              on_nan="skip")
    assert step_dirs(out)[-1][0] == 12
    tensors = final(out)
    assert all(torch.isfinite(v).all() for v in tensors.values())
    events = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    nan = [e for e in events if e.get("event") == "non_finite"]
    assert len(nan) == 1 and nan[0]["first_bad_step"] == 7 and nan[0]["rolled_back_to"] == 6
    state = json.loads((step_dirs(out)[-1][1] / "state.json").read_text())
    groups = state["optimizers"]
    assert groups["optimizer_d"]["param_groups"][0]["lr"] == pytest.approx(2e-4 / 2)
    assert groups["optimizer_g"]["param_groups"][0]["lr"] == pytest.approx(2e-4 / 2)
    assert state["counters"]["nan_rollbacks"] == 1


def test_fp16_skipped_steps_are_counted_in_the_metrics(tmp_path, monkeypatch):
    # No GPU here: stand in for a GradScaler that skipped every optimiser step.
    from accelerate.optimizer import AcceleratedOptimizer

    monkeypatch.setattr(AcceleratedOptimizer, "step_was_skipped", property(lambda self: True))
    out = run("gan", recipe(tmp_path), tmp_path / "f", 8, log_every=4)
    records = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    assert [r["scaler_skipped"] for r in records] == [8, 16]   # D and G step, 4 steps a window


def test_loaded_moments_take_the_parameters_layout():
    """Moments come back from a file contiguous; under channels_last they must be channels_last,
    or fused Adam applies them to the wrong elements."""
    from gancli.checkpoint import load_optimizer, optimizer_tensors

    def make():
        torch.manual_seed(0)
        w = torch.nn.Parameter(torch.randn(4, 3, 2, 2).contiguous(memory_format=torch.channels_last))
        return w, torch.optim.Adam([w], lr=1e-2, fused=True)

    w, opt = make()
    for _ in range(2):
        w.grad = torch.randn(4, 3, 2, 2).contiguous(memory_format=torch.channels_last)
        opt.step()
    tensors, rest = optimizer_tensors(opt)
    tensors = {k: v.clone().contiguous() for k, v in tensors.items()}    # as read from a file
    w2, opt2 = make()
    w2.data.copy_(w.data)
    load_optimizer(opt2, tensors, json.loads(json.dumps(rest)))
    assert opt2.state[w2]["exp_avg"].stride() == w2.stride()
    g = torch.randn(4, 3, 2, 2).contiguous(memory_format=torch.channels_last)
    w.grad, w2.grad = g.clone(), g.clone()
    opt.step()
    opt2.step()
    assert torch.equal(w, w2)
