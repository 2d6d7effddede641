"""Several processes on the CPU (gloo): two on one machine, and two single-process "nodes" on
localhost through torchrun's multi-node arguments. After training the parameters are identical
on every rank, there is one run directory, the checkpoint samples in one process, and an
evaluation made by two processes equals the one-process figure."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
from pathlib import Path

import pytest

from conftest import TINY_RECIPE, invoke

BIN = Path(sys.executable).parent
WORKER = Path(__file__).with_name("dist_worker.py")
RECIPE = TINY_RECIPE.replace("checkpoint_every = 2", "checkpoint_every = 2\neval_samples = 40")


@pytest.fixture(scope="module")
def torchrun() -> Path:
    if not (BIN / "torchrun").exists():
        pytest.skip("torchrun is not installed beside this python")
    return BIN / "torchrun"


@pytest.fixture(scope="module")
def recipe(tmp_path_factory) -> Path:
    p = tmp_path_factory.mktemp("dist") / "tiny.toml"
    p.write_text(RECIPE)
    return p


def _env(tmp: Path) -> dict[str, str]:
    return {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(Path(__file__).parent)}


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _digests(d: Path, ranks: int) -> list[dict]:
    return [json.loads((d / f"rank-{r}.json").read_text()) for r in range(ranks)]


def test_two_processes_one_machine_train_evaluate_and_agree(torchrun, recipe, tmp_path):
    from gancli.checkpoint import load_generator
    from gancli.classifier import load_or_train
    from gancli.recipes import resolve
    from gancli.score import score_generator

    cfg = resolve("infogan", str(recipe))
    # A quick classifier in the shared cache, so neither process trains one.
    classifier, info = load_or_train(cfg.data, "cpu", epochs=0.2)
    out, digests = tmp_path / "runs" / "two", tmp_path / "digests"
    r = subprocess.run([str(torchrun), "--standalone", "--nproc_per_node", "2", str(WORKER),
                        "train", str(recipe), str(out), "4", "2", str(digests)],
                       cwd=tmp_path, env=_env(tmp_path), capture_output=True, text=True,
                       timeout=600)
    assert r.returncode == 0, r.stdout[-3000:] + r.stderr[-3000:]
    # the semantics, printed once, by the main process
    assert r.stdout.count("batch 16 per process, 32 per step") == 1, r.stdout
    assert "not scaled by 2" in r.stdout
    assert [p.name for p in (tmp_path / "runs").iterdir()] == ["two"]
    d0, d1 = _digests(digests, 2)
    assert sorted(d0) == ["2", "4"] and d0 == d1           # the same weights on both ranks
    assert d0["2"] != d0["4"]                              # and they did train

    # the figure two processes logged at step 4 is the one-process figure of that checkpoint
    evals = [json.loads(x) for x in (out / "metrics.jsonl").read_text().splitlines()]
    evals = {e["step"]: e for e in evals if e.get("eval")}
    assert sorted(evals) == [2, 4]
    g = load_generator(out / "checkpoints" / "step-0000004")
    g.generator.eval()
    alone = score_generator(g, 40, cfg.train.seed, "cpu", classifier, classifier_info=info)
    for key in ("code_accuracy", "class_shares"):
        assert evals[4][key] == pytest.approx(alone[key], abs=1e-4), key
    # The FD of 40 samples (a rank-deficient covariance through a matrix square root) amplifies
    # float32 rounding of features made in two processes: 106.4546 against 106.4554 seen on a
    # loaded AVX2 CPU, 99.8389 against 99.8622 (2.3e-4) on an AVX-512 one. A relative bound of
    # 1e-3 still catches a real disagreement (other samples or weights); the code accuracy and
    # class shares above agree to 1e-4.
    assert evals[4]["classifier_fd"] == pytest.approx(alone["classifier_fd"], rel=1e-3)
    # and the checkpoint samples in one process
    assert invoke("sample", out, "--n", "4", "--out", tmp_path / "s.png").exit_code == 0


def test_two_nodes_on_localhost(torchrun, recipe, tmp_path):
    out, digests, port = tmp_path / "runs" / "nodes", tmp_path / "digests", _free_port()
    procs = [subprocess.Popen([str(torchrun), "--nnodes", "2", "--nproc_per_node", "1",
                               "--node_rank", str(rank), "--master_addr", "127.0.0.1",
                               "--master_port", str(port), str(WORKER), "train", str(recipe),
                               str(out), "4", "0", str(digests), "ada"],
                              cwd=tmp_path, env=_env(tmp_path), stdout=subprocess.PIPE,
                              stderr=subprocess.STDOUT, text=True) for rank in (0, 1)]
    logs = [p.communicate(timeout=600)[0] for p in procs]
    assert [p.returncode for p in procs] == [0, 0], logs[0][-3000:] + logs[1][-3000:]
    assert "processes: 2" in logs[0] and "run: " not in logs[1]   # node 1 prints nothing
    d0, d1 = _digests(digests, 2)
    assert d0 == d1 and sorted(d0) == ["2", "4"]   # weights and ADA's p (reduced over ranks)
    assert "p" in d0["4"]
    assert [p.name for p in (tmp_path / "runs").iterdir()] == ["nodes"]
    assert invoke("sample", out, "--n", "4", "--out", tmp_path / "s.png").exit_code == 0


@pytest.mark.parametrize("n", [5, 1])
def test_generate_shared_is_generate(torchrun, tmp_path, n):
    """Uneven shares (5 over 2) and a process with nothing to make (1 over 2)."""
    r = subprocess.run([str(torchrun), "--standalone", "--nproc_per_node", "2", str(WORKER),
                        "generate", str(n), str(tmp_path)], env=_env(tmp_path),
                       capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stderr[-3000:]
    for res in _digests(tmp_path, 2):
        assert res == {"shape": [n, 3, 8, 8], "equal": True}


def test_sync_bn_is_refused_on_the_cpu(recipe, tmp_path):
    r = invoke("train", "infogan", "--recipe", recipe, "--out", tmp_path / "r", "--cpu",
               "--sync-bn", "--no-progress")
    assert r.exit_code == 2
    assert "--sync-bn needs CUDA GPUs" in r.stderr and "Traceback" not in r.output
    assert not (tmp_path / "r").exists()


def test_sync_bn_converts_and_keeps_checkpoint_keys():
    from torch import nn

    from gancli.models import get_family
    from gancli.recipes import resolve
    from gancli.train.ranks import sync_batchnorm

    cfg = resolve("infogan", "digits", {"sync_bn": True})
    G, D = get_family("infogan").build(cfg, get_family("infogan").latent_spec(cfg))
    keys = (set(G.state_dict()), set(D.state_dict()))
    G2, D2 = sync_batchnorm(cfg.train, G, D)
    assert any(isinstance(m, nn.SyncBatchNorm) for m in D2.modules())
    assert not any(type(m) in (nn.BatchNorm1d, nn.BatchNorm2d) for m in G2.modules())
    assert (set(G2.state_dict()), set(D2.state_dict())) == keys


def test_score_launched_as_two_processes_equals_one(torchrun, recipe, tmp_path):
    """`gancli score` under torchrun: each process makes half the images, the main one reports
    the one-process figures; the other prints nothing."""
    from gancli.classifier import load_or_train
    from gancli.recipes import resolve

    load_or_train(resolve("infogan", str(recipe)).data, "cpu", epochs=0.2)  # cached for both
    run = tmp_path / "run"
    assert invoke("train", "infogan", "--recipe", recipe, "--out", run, "--steps", "2",
                  "--no-progress").exit_code == 0
    alone = invoke("score", run, "--n", "30", "--json")
    assert alone.exit_code == 0, alone.output
    r = subprocess.run([str(torchrun), "--standalone", "--nproc_per_node", "2", "--no-python",
                        # "--" ends torchrun's options: it would take --n for one of its own
                        "--", str(BIN / "gancli"), "score", str(run), "--n", "30", "--json"],
                       env=_env(tmp_path), capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stderr[-3000:]
    lines = [x for x in r.stdout.splitlines() if x.startswith("{")]
    assert len(lines) == 1                      # one report, from the main process
    two, one = json.loads(lines[0]), json.loads(alone.stdout.strip().splitlines()[-1])
    for key in ("code_accuracy", "class_shares", "classifier_fd", "n"):
        assert two[key] == pytest.approx(one[key], abs=1e-4), key
