"""The fast path computes what the plain path computes, and the step never waits on the device."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from gancli.recipes import resolve
from gancli.train import fast, train
from test_resume import recipe


def losses(run_dir: Path) -> list[dict]:
    return [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]


def run(tmp_path: Path, name: str, model: str, steps: int = 8, **over) -> Path:
    cfg = resolve(model, str(recipe(tmp_path)),
                  {"steps": steps, "out": str(tmp_path / name), "cpu": True, "log_every": 2, **over})
    return train(cfg, print_fn=lambda s: None, progress=False)


@pytest.mark.parametrize("model", ["infogan", "dcgan", "cgan", "gan"])
def test_channels_last_and_foreach_adam_match_the_plain_path(model, tmp_path):
    """One step from the same weights, inputs and random state: the same losses and the same
    updated weights, to float rounding."""
    from gancli.models import get_family

    cfg = resolve(model, str(recipe(tmp_path)), {"steps": 1})
    family = get_family(model)
    spec = family.latent_spec(cfg)
    torch.manual_seed(0)
    G0, D0 = family.build(cfg, spec)
    real = torch.rand(8, 1, 16, 16) * 2 - 1
    labels = torch.randint(0, 10, (8,))
    latents = spec.sample(8, torch.Generator().manual_seed(1), labels=labels)

    def grads(layout):
        import copy
        G, D = copy.deepcopy(G0).to(memory_format=layout), copy.deepcopy(D0).to(memory_format=layout)
        torch.manual_seed(2)            # InfoGAN's random_affine draws from the global stream
        loss, _ = family.d_loss(D, real.contiguous(memory_format=layout), labels,
                                G(latents).detach(), latents, cfg)
        loss.backward()
        return loss.item(), [p.grad.clone() for p in D.parameters()]

    loss_a, grads_a = grads(torch.contiguous_format)
    loss_b, grads_b = grads(fast.memory_format(True, G0, D0))
    assert loss_a == pytest.approx(loss_b, abs=1e-5)
    for a, b in zip(grads_a, grads_b):
        # oneDNN sums in another order per layout (AMX Xeon: 2e-5 seen on one of 64 elements)
        torch.testing.assert_close(a, b, atol=1e-4, rtol=1e-4)


@pytest.mark.parametrize("impl", ["foreach", "fused"])
def test_adam_implementations_agree(impl):
    torch.manual_seed(0)
    params = [torch.randn(64, 32), torch.randn(32), torch.randn(8, 4, 3, 3)]
    grads = [[torch.randn_like(p) for p in params] for _ in range(3)]

    def steps(which):
        ps = [torch.nn.Parameter(p.clone()) for p in params]
        opt = fast.adam(ps, which, torch.device("cpu"), lr=1e-3, betas=(0.5, 0.999))
        for gs in grads:
            for p, g in zip(ps, gs):
                p.grad = g.clone()
            opt.step()
        return ps

    for a, b in zip(steps("plain"), steps(impl)):
        torch.testing.assert_close(a.detach(), b.detach(), atol=1e-6, rtol=1e-6)


def test_the_fast_loop_logs_what_the_plain_loop_logs(tmp_path):
    plain = run(tmp_path, "plain", "dcgan", steps=2, channels_last=False, adam="plain")
    quick = run(tmp_path, "fast", "dcgan", steps=2, channels_last=True, adam="foreach")
    a, b = losses(plain)[0], losses(quick)[0]
    for k in ("d_loss", "g_loss", "d_real", "d_fake"):
        assert a[k] == pytest.approx(b[k], abs=1e-4), k


def test_bf16_autocast_stays_close_to_fp32(tmp_path):
    fp32 = run(tmp_path, "fp32", "infogan", steps=2, mixed_precision="no")
    bf16 = run(tmp_path, "bf16", "infogan", steps=2, mixed_precision="bf16")
    a, b = losses(fp32)[0], losses(bf16)[0]
    for k in ("d_loss", "g_loss", "d_real", "d_fake"):
        assert a[k] == pytest.approx(b[k], rel=0.05, abs=0.02), k


def test_auto_precision_names_a_choice_and_why():
    precision, why = fast.auto_precision(torch.device("cpu"))
    assert precision == ("bf16" if fast.cpu_has_fast_bf16() else "no") and why


def test_memory_format_only_for_convolutional_networks():
    conv, mlp = torch.nn.Conv2d(1, 2, 3), torch.nn.Linear(2, 2)
    assert fast.memory_format(True, conv, mlp) == torch.channels_last
    assert fast.memory_format(True, mlp) == torch.contiguous_format
    assert fast.memory_format(False, conv) == torch.contiguous_format


def test_no_step_reads_the_device(tmp_path, monkeypatch):
    """Count every device-to-host read (item, float(), cpu(), ...) that gancli's code makes: a
    run of 30 steps makes no more than a run of 6 with the same logging, checkpoints and
    pictures, so no step makes one. (torch's own reads of CPU-held scalars, such as Adam's step
    counts, are not device reads on a GPU and are not counted.)"""
    import sys

    package = str(Path(fast.__file__).parents[1])
    counts = {"n": 0}
    for name in ("item", "cpu", "tolist", "numpy", "__float__", "__int__", "__bool__"):
        original = getattr(torch.Tensor, name)

        def counted(self, *a, _original=original, **kw):
            if sys._getframe(1).f_code.co_filename.startswith(package):
                counts["n"] += 1
            return _original(self, *a, **kw)
        monkeypatch.setattr(torch.Tensor, name, counted)

    def reads(steps: int) -> int:
        counts["n"] = 0
        run(tmp_path, f"r{steps}", "infogan", steps=steps, log_every=1000, sample_every=1000,
            checkpoint_every=1000)
        return counts["n"]

    assert reads(30) == reads(6)


@pytest.mark.parametrize("model", ["gan", "cgan", "infogan", "dcgan"])
def test_step_flop_estimate_matches_a_counted_step(model, tmp_path):
    """The estimate (meta tensors, nothing computed) against the FLOP counted over one real step
    of the same losses and their backwards: backward as twice the forward holds to 25%."""
    from torch.utils.flop_counter import FlopCounterMode

    from gancli.models import get_family

    cfg = resolve(model, str(recipe(tmp_path)), {"steps": 1})
    family, n = get_family(model), cfg.train.batch_size
    spec = family.latent_spec(cfg)
    torch.manual_seed(0)
    G, D = family.build(cfg, spec)
    real = torch.rand(n, 1, 16, 16) * 2 - 1
    labels = torch.randint(0, 10, (n,))
    latents = spec.sample(n, torch.Generator().manual_seed(1), labels=labels)
    with FlopCounterMode(display=False) as counter:
        fake = G(latents)
        family.d_loss(D, real, labels, fake.detach(), latents, cfg)[0].backward()
        family.g_loss(D, fake, latents, cfg, real=real, labels=labels)[0].backward()
    estimate = fast.step_flop_estimate(cfg)
    assert estimate > 0 and torch.isfinite(torch.tensor(estimate))
    assert 0.75 < estimate / counter.get_total_flops() < 1.25


def test_auto_precision_keeps_a_launch_bound_gpu_step_in_fp32(monkeypatch):
    """On a GPU a small step stays fp32 (TF32 on Ampere+) and says why; a large one gets bf16,
    or fp16 where bf16 is not native. (The GPU is faked: the rule is what is tested.)"""
    monkeypatch.setattr(torch.cuda, "get_device_name", lambda device=None: "NVIDIA H200")
    monkeypatch.setattr(torch.cuda, "get_device_capability", lambda device=None: (9, 0))
    monkeypatch.setattr(torch.cuda, "is_bf16_supported", lambda *a, **k: True)
    gpu = torch.device("cuda")
    precision, why = fast.auto_precision(gpu, 84e9)         # InfoGAN on MNIST at batch 256
    assert precision == "no" and "launch-bound" in why and "TF32" in why
    assert fast.auto_precision(gpu, 5e12)[0] == "bf16"
    assert fast.auto_precision(gpu)[0] == "bf16"              # size unknown: as before
    monkeypatch.setattr(torch.cuda, "get_device_capability", lambda device=None: (7, 0))
    assert "TF32" not in fast.auto_precision(gpu, 84e9)[1]
    monkeypatch.setattr(torch.cuda, "is_bf16_supported", lambda *a, **k: False)
    assert fast.auto_precision(gpu, 5e12)[0] == "fp16"


def test_run_precision_is_the_loops_choice(tmp_path, monkeypatch):
    """What a run trains with: a set precision as set; auto by the device, and on a GPU by the
    step's size unless CUDA graphs replay it (then launches no longer bound it)."""
    monkeypatch.setattr(torch.cuda, "get_device_name", lambda device=None: "NVIDIA H200")
    monkeypatch.setattr(torch.cuda, "get_device_capability", lambda device=None: (9, 0))
    monkeypatch.setattr(torch.cuda, "is_bf16_supported", lambda *a, **k: True)
    gpu, cpu = torch.device("cuda"), torch.device("cpu")
    cfg = lambda **over: resolve("infogan", str(recipe(tmp_path)), {"steps": 1, **over})
    assert fast.run_precision(cfg(mixed_precision="bf16"), gpu) == ("bf16", None)
    assert fast.run_precision(cfg(mixed_precision="auto"), cpu) == fast.auto_precision(cpu)
    assert fast.run_precision(cfg(mixed_precision="auto"), gpu)[0] == "no"     # a tiny step
    graphed = cfg(mixed_precision="auto", compile=True)                         # mode auto
    assert fast.run_precision(graphed, gpu)[0] == "bf16"


def test_compile_mode_auto_is_cuda_graphs_on_a_gpu_only():
    assert fast.compile_mode("auto", torch.device("cuda")) == "reduce-overhead"
    assert fast.compile_mode("auto", torch.device("cpu")) == "default"
    assert fast.compile_mode("max-autotune", torch.device("cpu")) == "max-autotune"


def test_compiled_networks_compute_what_eager_ones_compute(tmp_path):
    """`--compile` (torch.compile of G and D through Accelerate's dynamo plugin, the path CUDA
    graphs take on a GPU) logs the same losses as the eager loop, to float rounding."""
    eager = run(tmp_path, "eager", "gan", steps=3, log_every=1)
    compiled = run(tmp_path, "compiled", "gan", steps=3, log_every=1, compile=True)
    a, b = losses(eager), losses(compiled)
    assert len(a) == len(b) == 3
    for x, y in zip(a, b):
        for k in ("d_loss", "g_loss", "d_real", "d_fake"):
            assert x[k] == pytest.approx(y[k], abs=1e-4), k
