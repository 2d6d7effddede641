"""Training throughput: gancli's loop against a baseline written the way the source texts train.

Both train InfoGAN on MNIST with the *same networks* (gancli's), back to back in one invocation,
each in a fresh process so that start-up and peak memory are its own. The baseline is what the
texts (PyTorch-GAN's infogan.py and the Korean posts) do: torchvision's MNIST dataset with
per-sample Resize/ToTensor/Normalize in a DataLoader, the latents drawn on the CPU and copied,
a third optimiser over G and D for the information term, `.item()` on every loss every step, fp32.
gancli runs its own loop (`gancli.train.train`) on the recipe, with whatever options are given.

    python benchmarks/throughput.py [--data ../shared/data/MNIST/raw] [--steps 300] [--warmup 50]
        [--model infogan|gan|cgan|dcgan|all] [--batch-size N] [--mixed-precision no|bf16|fp16|auto]
        [--device cpu] [--no-channels-last] [--adam plain|foreach|fused] [--compile]
        [--baseline-batch-size 64] [--only gancli|baseline] [--json]

    python benchmarks/throughput.py --recipe emoji --data EMOJI_DIR --model dcgan,r3gan

Distance to the hardware's limit: each gancli row also gives the FLOP per image of one training
step (matmuls and convolutions, forward and backward, penalties included; counted by
torch.utils.flop_counter over one step), the FLOP/s that makes at the measured images/s, and the
device's own large matrix-product rate at the same precision and threads, measured in the same
process right after (2048^2 on a CPU, 8192^2 on a GPU): their ratio is the utilisation.

With no options gancli trains at the recipe's defaults (its batch size and precision) and the
baseline at the texts' own batch of 64, in fp32: the ratio is what a user of either sees.

Images/s counts real images through D per second over the measured steps (after the warm-up),
start-up and data loading before the first step excluded. Peak memory is the process's maximum
resident set. Run it on a quiet machine; the two figures are only comparable from one invocation.
"""

from __future__ import annotations

import argparse
import gzip
import json
import os
import resource
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

DEFAULT_DATA = Path(__file__).resolve().parents[2] / "shared" / "data" / "MNIST" / "raw"


def _config(a: argparse.Namespace, out: Path, steps: int, log_every: int, model: str | None = None):
    from gancli.recipes import resolve

    return resolve(model or a.model, a.recipe,
                   {"steps": steps, "batch_size": a.batch_size, "mixed_precision": a.mixed_precision,
                    "out": str(out), "log_every": log_every, "sample_every": 10 ** 9,
                    "checkpoint_every": 10 ** 9, "cpu": a.device == "cpu", "seed": a.seed,
                    "channels_last": a.channels_last, "adam": a.adam, "compile": a.compile},
                   {"path": str(a.data)} if a.data else {})


def step_flops(a: argparse.Namespace, tmp: Path) -> int:
    """Floating-point operations of one training step (matmuls and convolutions, forward and
    backward, penalties included), by torch.utils.flop_counter's formulas: a 2-step run minus a
    1-step run, so set-up, the last step's sample grid and checkpoint cancel out."""
    from torch.utils._python_dispatch import TorchDispatchMode
    from torch.utils.flop_counter import flop_registry

    from gancli.train import train

    class Count(TorchDispatchMode):
        # FlopCounterMode itself tracks modules with backward hooks, which autograd.grad (the
        # R1/R2 penalties' double backward) refuses; counting at the dispatcher needs no hooks.
        def __init__(self) -> None:
            super().__init__()
            self.flops = 0

        def __torch_dispatch__(self, func, types, args=(), kwargs=None):
            kwargs = kwargs or {}
            out = func(*args, **kwargs)
            formula = flop_registry.get(func._overloadpacket)
            if formula is not None:
                self.flops += formula(*args, **kwargs, out_val=out)
            return out

    totals = []
    for steps in (1, 2):
        cfg = _config(a, tmp / f"flops-{steps}", steps, 1)
        with Count() as counter:
            train(cfg, print_fn=lambda s: None, progress=False)
        totals.append(counter.flops)
    return totals[1] - totals[0]


def matmul_rate(device: str, precision: str, n: int | None = None, repeats: int = 8) -> float:
    """The device's own large matrix-product rate (FLOP/s) at this precision, on the threads
    this process trains with: the yardstick a training step is held against."""
    import torch

    dtype = {"bf16": torch.bfloat16, "fp16": torch.float16}.get(precision, torch.float32)
    dev = torch.device(device)
    n = n or (8192 if dev.type == "cuda" else 2048)
    x = torch.randn(n, n, device=dev).to(dtype)
    y = torch.randn(n, n, device=dev).to(dtype)
    sync = torch.cuda.synchronize if dev.type == "cuda" else (lambda: None)
    best = float("inf")
    for i in range(repeats + 2):
        sync()
        t = time.perf_counter()
        torch.mm(x, y)
        sync()
        if i >= 2:                                   # two warm-up products
            best = min(best, time.perf_counter() - t)
    return 2 * n ** 3 / best


def measure_gancli(a: argparse.Namespace, tmp: Path) -> dict:
    """gancli's loop: per-window images/s from metrics.jsonl, the warm-up window left out."""
    import torch

    from gancli.train import train
    from gancli.train.fast import run_precision

    cfg = _config(a, tmp / "run", a.warmup + a.steps, a.warmup)
    train(cfg, print_fn=lambda s: None, progress=False)
    records = [json.loads(line) for line in (tmp / "run" / "metrics.jsonl").read_text().splitlines()]
    measured = [r for r in records if "images_per_s" in r and r["step"] > a.warmup]
    batch = cfg.train.batch_size
    seconds = sum(a.warmup * batch / r["images_per_s"] for r in measured)
    precision = run_precision(cfg, torch.device(a.device.split(":")[0]))[0]   # the loop's choice
    ips = a.steps * batch / seconds
    flops = step_flops(a, tmp) / batch
    rate = matmul_rate(a.device, precision)
    return {"images_per_s": ips, "ms_per_step": 1000 * seconds / a.steps,
            "batch_size": batch, "mixed_precision": precision, "gflop_per_image": flops / 1e9,
            "achieved_gflops": ips * flops / 1e9, "matmul_gflops": rate / 1e9,
            "utilisation": ips * flops / rate}


def measure_baseline(a: argparse.Namespace, tmp: Path) -> dict:
    """The source texts' loop around gancli's InfoGAN networks."""
    import torch
    import torch.nn.functional as F
    import torchvision
    from torchvision import transforms

    from gancli.models import get_family

    # torchvision reads MNIST from ROOT/MNIST/raw, uncompressed.
    raw = tmp / "tv" / "MNIST" / "raw"
    raw.mkdir(parents=True)
    for f in Path(a.data).glob("*-ubyte.gz"):
        with gzip.open(f) as src, open(raw / f.name[:-3], "wb") as dst:
            shutil.copyfileobj(src, dst)
    tf = transforms.Compose([transforms.Resize(28), transforms.ToTensor(),
                             transforms.Normalize([0.5], [0.5])])
    ds = torchvision.datasets.MNIST(str(tmp / "tv"), train=True, download=False, transform=tf)
    loader = torch.utils.data.DataLoader(ds, batch_size=a.baseline_batch_size, shuffle=True,
                                         drop_last=True)

    torch.manual_seed(a.seed)
    cfg = _config(a, tmp / "unused", 1, 1, model="infogan")
    family = get_family("infogan")
    spec = family.latent_spec(cfg)
    G, D = family.build(cfg, spec)
    device = torch.device(a.device)
    G.to(device), D.to(device)
    betas = (cfg.train.beta1, cfg.train.beta2)
    opt_g = torch.optim.Adam(G.parameters(), lr=cfg.train.lr_g, betas=betas)
    opt_d = torch.optim.Adam(D.parameters(), lr=cfg.train.lr_d, betas=betas)
    opt_info = torch.optim.Adam(list(G.parameters()) + list(D.parameters()), lr=cfg.train.lr_d,
                                betas=betas)
    cats = [c for c in spec.codes if c.categorical]
    conts = [c for c in spec.codes if not c.categorical]
    bce = torch.nn.BCEWithLogitsLoss()
    logs = []

    def latents(n: int) -> dict:
        return {k: v.to(device) for k, v in spec.sample(n).items()}

    def info_loss(q: torch.Tensor, lat: dict) -> torch.Tensor:
        loss, i = q.new_zeros(()), 0
        for c in cats:
            loss = loss + F.cross_entropy(q[:, i: i + c.size], lat[c.name])
            i += c.size
        for c in conts:
            loss = loss + 0.1 * F.mse_loss(q[:, i], lat[c.name])
            i += 1
        return loss

    step, start = 0, None
    while step < a.warmup + a.steps:
        for real, _ in loader:
            if step == a.warmup:
                start = time.perf_counter()
            if step == a.warmup + a.steps:
                break
            real = real.to(device)
            n = real.shape[0]
            ones, zeros = torch.ones(n, device=device), torch.zeros(n, device=device)
            opt_g.zero_grad()
            lat = latents(n)
            fake = G(lat)
            g_loss = bce(D(fake)[0], ones)
            g_loss.backward()
            opt_g.step()
            opt_d.zero_grad()
            d_loss = (bce(D(real)[0], ones) + bce(D(fake.detach())[0], zeros)) / 2
            d_loss.backward()
            opt_d.step()
            opt_info.zero_grad()
            lat = latents(n)
            i_loss = info_loss(D(G(lat))[1], lat)
            i_loss.backward()
            opt_info.step()
            logs.append((d_loss.item(), g_loss.item(), i_loss.item()))
            step += 1
    seconds = time.perf_counter() - start
    return {"images_per_s": a.steps * a.baseline_batch_size / seconds,
            "ms_per_step": 1000 * seconds / a.steps, "batch_size": a.baseline_batch_size,
            "mixed_precision": "no"}


def one(a: argparse.Namespace) -> None:
    """Measure one side in this process and print its JSON line."""
    import torch

    tmp = Path(tempfile.mkdtemp(prefix="gancli-bench-"))
    try:
        fn = measure_gancli if a.one == "gancli" else measure_baseline
        res = fn(a, tmp)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    res["peak_host_mib"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    if a.device.startswith("cuda"):
        res["peak_device_mib"] = torch.cuda.max_memory_allocated() / 2 ** 20
    print(json.dumps(res))


def _cuda() -> bool:
    import torch

    return torch.cuda.is_available()


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--recipe", default="mnist", help="gancli's side: a recipe name or .toml "
                    "(the baseline is MNIST's InfoGAN and runs with the mnist recipe only)")
    ap.add_argument("--data", default=None, help="the recipe's data (default for mnist: "
                    "$GANCLI_MNIST_DIR or ../shared/data/MNIST/raw)")
    ap.add_argument("--steps", type=int, default=300, help="measured steps")
    ap.add_argument("--warmup", type=int, default=50)
    ap.add_argument("--batch-size", type=int, help="gancli's side (default: the recipe's)")
    ap.add_argument("--baseline-batch-size", type=int, default=64,
                    help="the baseline's batch (default: the texts' 64)")
    ap.add_argument("--model", default="infogan", help="gancli's side: a family, a comma list, "
                    "or 'all' (the baseline is InfoGAN's, so the ratio is printed for infogan only)")
    ap.add_argument("--mixed-precision", help="gancli's side: no, bf16, fp16, auto (default: "
                    "the recipe's)")
    ap.add_argument("--device", default="cuda" if _cuda() else "cpu")
    ap.add_argument("--channels-last", action=argparse.BooleanOptionalAction, default=True)
    ap.add_argument("--adam", default="auto", help="auto, plain, foreach or fused")
    ap.add_argument("--compile", action=argparse.BooleanOptionalAction, default=False)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--only", choices=("gancli", "baseline"))
    ap.add_argument("--json", action="store_true")
    ap.add_argument("--one", choices=("gancli", "baseline"), help=argparse.SUPPRESS)
    a = ap.parse_args()
    mnist = a.recipe == "mnist"
    if mnist:
        a.data = a.data or os.environ.get("GANCLI_MNIST_DIR", str(DEFAULT_DATA))
        if not (Path(a.data) / "train-images-idx3-ubyte.gz").is_file():
            print(f"no MNIST at {a.data} (pass --data DIR with the IDX .gz files)", file=sys.stderr)
            return 2
    if a.steps % a.warmup:
        print("--steps must be a multiple of --warmup (the log windows)", file=sys.stderr)
        return 2
    if a.one:
        one(a)
        return 0
    families = (["gan", "cgan", "infogan", "dcgan", "r3gan"] if a.model == "all"
                else [m.strip() for m in a.model.split(",") if m.strip()])
    sides = [] if a.only == "gancli" or not mnist else [("baseline", "infogan")]
    sides += [] if a.only == "baseline" else [("gancli", m) for m in families]
    results: dict = {"gancli": {}}
    for side, model in sides:
        args = [sys.executable, __file__, "--one", side]
        for k, v in {**vars(a), "model": model}.items():
            flag = f"--{k.replace('_', '-')}"
            if k in ("one", "only", "json") or v is None:
                continue
            if isinstance(v, bool):
                args.append(flag if v else f"--no-{flag[2:]}")
            else:
                args += [flag, str(v)]
        r = subprocess.run(args, capture_output=True, text=True)
        if r.returncode:
            print(r.stderr[-2000:], file=sys.stderr)
            return 1
        res = json.loads(r.stdout.strip().splitlines()[-1])
        if side == "baseline":
            results["baseline"] = res
        else:
            results["gancli"][model] = res
    if "baseline" in results and "infogan" in results["gancli"]:
        results["ratio"] = (results["gancli"]["infogan"]["images_per_s"]
                            / results["baseline"]["images_per_s"])
    import torch

    results["settings"] = {"model": a.model, "recipe": a.recipe, "device": a.device,
                           "channels_last": a.channels_last, "adam": a.adam, "compile": a.compile,
                           "steps": a.steps, "warmup": a.warmup, "cores": os.cpu_count(),
                           "threads": torch.get_num_threads(), "date": time.strftime("%Y-%m-%d")}
    if a.json:
        print(json.dumps(results))
        return 0
    rows = ([("baseline (infogan)", results["baseline"])] if "baseline" in results else [])
    rows += [(f"gancli {m}", r) for m, r in results["gancli"].items()]
    for name, r in rows:
        mem = f"peak host {r['peak_host_mib']:.0f} MiB"
        if "peak_device_mib" in r:
            mem += f", device {r['peak_device_mib']:.0f} MiB"
        util = (f"  {r['gflop_per_image']:.3f} GFLOP/img, {r['achieved_gflops']:.1f} of "
                f"{r['matmul_gflops']:.1f} GFLOP/s ({100 * r['utilisation']:.0f}% of matmul)"
                if "utilisation" in r else "")
        print(f"{name:18s} {r['images_per_s']:8.1f} img/s  {r['ms_per_step']:7.1f} ms/step  "
              f"batch {r['batch_size']:4d}  {r['mixed_precision']:4s}  {mem}{util}")
    if "ratio" in results:
        print(f"ratio              {results['ratio']:.2f}x  (gancli infogan against the baseline)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
