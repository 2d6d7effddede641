"""Run under torchrun by tests/test_distributed.py (not a test module).

    dist_worker.py train RECIPE OUT STEPS EVAL_EVERY DIGESTS [AUGMENT]   # gancli's loop; each
        rank writes DIGESTS/rank-R.json: a digest of G's and D's parameters at every step
        checkpoint (and ADA's p there, under --augment ada)
    dist_worker.py generate N OUT                              # generate_shared vs generate
"""

from __future__ import annotations

import hashlib
import json
import sys
from pathlib import Path

import torch


def digest(module: torch.nn.Module) -> str:
    h = hashlib.sha256()
    for name, p in sorted(module.named_parameters()):
        h.update(name.encode())
        h.update(p.detach().float().cpu().numpy().tobytes())
    return h.hexdigest()


def train_main(recipe: str, out: str, steps: str, eval_every: str, digests: str,
               augment: str = "none") -> None:
    from gancli.evaluate import make_evaluator
    from gancli.recipes import resolve
    from gancli.train import run as run_mod
    from gancli.train import train

    rank = int(__import__("os").environ["RANK"])
    seen: dict[int, dict[str, str]] = {}
    save = run_mod.Checkpoints.save

    def spying_save(self, step, counters, name=None):
        if name is None:
            seen[step] = {"G": digest(self.G), "D": digest(self.D)}
            if self.augment is not None and self.augment.adaptive:
                seen[step]["p"] = float(self.augment.p)
        return save(self, step, counters, name)

    run_mod.Checkpoints.save = spying_save
    cfg = resolve("infogan", recipe, {"out": out, "steps": int(steps),
                                      "eval_every": int(eval_every) or None,
                                      "augment": augment})
    evaluator = make_evaluator(cfg) if int(eval_every) else None
    train(cfg, progress=False, evaluator=evaluator)
    Path(digests).mkdir(parents=True, exist_ok=True)
    (Path(digests) / f"rank-{rank}.json").write_text(json.dumps(seen))


def generate_main(n: str, out: str) -> None:
    import torch.distributed as dist

    from gancli.generate import generate, generate_shared
    from gancli.latent import LatentSpec

    dist.init_process_group("gloo")
    torch.manual_seed(0)   # the same generator on every rank
    G = torch.nn.Sequential(torch.nn.Linear(4, 3 * 8 * 8), torch.nn.Tanh(),
                            torch.nn.Unflatten(1, (3, 8, 8)))

    class Wrap(torch.nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.g = G

        def forward(self, latents):
            return self.g(latents["z"])

    latents = LatentSpec(noise_dim=4).sample(int(n), torch.Generator().manual_seed(1))
    shared = generate_shared(Wrap().eval(), latents)
    alone = generate(Wrap().eval(), latents)
    Path(out).mkdir(parents=True, exist_ok=True)
    (Path(out) / f"rank-{dist.get_rank()}.json").write_text(json.dumps(
        {"shape": list(shared.shape), "equal": bool(torch.equal(shared, alone))}))
    dist.destroy_process_group()


if __name__ == "__main__":
    {"train": train_main, "generate": generate_main}[sys.argv[1]](*sys.argv[2:])
