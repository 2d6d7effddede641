"""The benchmark scripts run (a handful of steps; no timing is asserted: figures belong in
reports, not in tests)."""

import json

import pytest
import torch
import shutil
import subprocess
import sys

from conftest import REPO


def test_throughput_benchmark_runs_both_loops(mnist_raw):
    r = subprocess.run([sys.executable, str(REPO / "benchmarks" / "throughput.py"), "--data",
                        str(mnist_raw), "--steps", "4", "--warmup", "2", "--device", "cpu", "--json"],
                       capture_output=True, text=True, timeout=600)
    assert r.returncode == 0, r.stderr[-2000:]
    res = json.loads(r.stdout)
    for r in (res["baseline"], res["gancli"]["infogan"]):
        assert r["images_per_s"] > 0 and r["peak_host_mib"] > 0
    assert res["ratio"] > 0
    # gancli at the recipe's batch, the baseline at the texts' 64
    assert res["baseline"]["batch_size"] == 64 and res["baseline"]["mixed_precision"] == "no"
    assert res["gancli"]["infogan"]["batch_size"] == 256


def test_throughput_benchmark_every_family(mnist_raw):
    r = subprocess.run([sys.executable, str(REPO / "benchmarks" / "throughput.py"), "--data",
                        str(mnist_raw), "--steps", "2", "--warmup", "2", "--device", "cpu",
                        "--model", "all", "--only", "gancli", "--batch-size", "8", "--json"],
                       capture_output=True, text=True, timeout=600)
    assert r.returncode == 0, r.stderr[-2000:]
    res = json.loads(r.stdout)
    assert sorted(res["gancli"]) == ["cgan", "dcgan", "gan", "infogan", "r3gan"]
    assert "baseline" not in res and "ratio" not in res
    assert all(v["batch_size"] == 8 for v in res["gancli"].values())
    for v in res["gancli"].values():   # the distance to the machine's matrix-product rate
        assert v["gflop_per_image"] > 0 and v["matmul_gflops"] > 0
        assert v["utilisation"] == pytest.approx(v["achieved_gflops"] / v["matmul_gflops"])
    # r3gan's penalties (a double backward) are counted: more FLOP than its plain forward
    # and backward would be is not asserted, only that the count ran through autograd.grad


def test_step_flops_counts_one_step_of_a_known_network(tmp_path):
    """A gan step's matmul FLOP, against the count by hand from its layer sizes."""
    sys.path.insert(0, str(REPO / "benchmarks"))
    try:
        import throughput
    finally:
        sys.path.pop(0)
    import argparse

    from gancli.recipes import resolve
    a = argparse.Namespace(model="gan", recipe="digits", data=None, batch_size=4,
                           mixed_precision="no", device="cpu", seed=0, channels_last=True,
                           adam="plain", compile=False)
    flops = throughput.step_flops(a, tmp_path)
    cfg = resolve("gan", "digits", {"batch_size": 4})
    assert flops > 0 and flops % 4 == 0
    # every Linear layer of G and D runs forward (2 FLOP per weight per image) and backward
    # (twice that); D runs on reals and fakes: the count sits within those bounds
    from gancli.models import get_family
    family = get_family("gan")
    G, D = family.build(cfg, family.latent_spec(cfg))
    g = sum(m.weight.numel() for m in G.modules() if isinstance(m, torch.nn.Linear))
    d = sum(m.weight.numel() for m in D.modules() if isinstance(m, torch.nn.Linear))
    assert 2 * 4 * (g + 2 * d) <= flops <= 6 * 4 * (2 * g + 3 * d)


def test_little_data_benchmark_trains_and_scores(tmp_path):
    cmd = [sys.executable, str(REPO / "benchmarks" / "little_data.py"), "--recipe", "digits",
           "--limit", "64", "--steps", "3", "--score-at", "2", "--models", "dcgan", "--augment", "none,ada",
           "--seeds", "0", "--n", "200", "--device", "cpu", "--eval-every", "1",
           "--parallel", "2", "--out", str(tmp_path), "--json", "--", "--eval-samples", "50"]
    r = subprocess.run(cmd, capture_output=True, text=True, timeout=600)
    assert r.returncode == 0, r.stderr[-2000:]
    rows = json.loads(r.stdout)
    assert [(x["model"], x["augment"]) for x in rows] == [("dcgan", "none"), ("dcgan", "ada")]
    assert all(x["fd"] > 0 for x in rows)
    assert rows[0]["aug_p"] is None and 0 <= rows[1]["aug_p"] <= 1
    assert all([s for s, _ in x["eval_fd"]] == [1, 2, 3] for x in rows)
    assert all(sorted(x["at"]) == ["2", "3"] and x["at"]["3"]["fd"] == x["fd"]
               for x in rows)
    # a second invocation finds the results in --out and trains nothing again; one stopped
    # part-way through a run continues it from its checkpoint
    before = {p: p.stat().st_mtime_ns for p in tmp_path.rglob("*.safetensors")}
    again = subprocess.run(cmd, capture_output=True, text=True, timeout=600)
    assert again.returncode == 0 and json.loads(again.stdout) == rows
    assert {p: p.stat().st_mtime_ns for p in tmp_path.rglob("*.safetensors")} == before
    ada = tmp_path / "dcgan-ada-s0"
    shutil.rmtree(ada / "checkpoints" / "step-0000003")
    (ada / "little_data.json").unlink()
    resumed = subprocess.run(cmd, capture_output=True, text=True, timeout=600)
    assert resumed.returncode == 0, resumed.stderr[-2000:]
    assert (ada / "checkpoints" / "step-0000003").is_dir()
    assert json.loads(resumed.stdout)[1]["at"]["2"] == rows[1]["at"]["2"]
    kept = ada / "checkpoints" / "step-0000002" / "generator.safetensors"
    assert kept.stat().st_mtime_ns == before[kept]    # the run went on from step 2
    assert [r["step"] for r in map(json.loads, (ada / "metrics.jsonl").read_text().splitlines())
            if r.get("eval")] == [1, 2, 3]


def test_little_data_benchmark_extends_runs_and_judges_only_new_steps(tmp_path):
    base = [sys.executable, str(REPO / "benchmarks" / "little_data.py"), "--recipe", "digits",
            "--limit", "64", "--models", "dcgan", "--augment", "none", "--seeds", "0",
            "--n", "100", "--device", "cpu", "--out", str(tmp_path), "--json"]
    first = subprocess.run([*base, "--steps", "2", "--score-at", "1"], capture_output=True,
                           text=True, timeout=600)
    assert first.returncode == 0, first.stderr[-2000:]
    judged = tmp_path / "dcgan-none-s0" / "judged"
    kept = {p.name: p.stat().st_mtime_ns for p in judged.iterdir()}
    assert sorted(kept) == ["step-0000001-score-n100.json", "step-0000002-score-n100.json"]
    longer = subprocess.run([*base, "--steps", "3", "--score-at", "1,2"], capture_output=True,
                            text=True, timeout=600)
    assert longer.returncode == 0, longer.stderr[-2000:]
    (row,) = json.loads(longer.stdout)
    assert sorted(row["at"]) == ["1", "2", "3"]
    assert row["at"]["2"]["fd"] == json.loads(first.stdout)[0]["at"]["2"]["fd"]
    assert {p.name: p.stat().st_mtime_ns for p in judged.iterdir() if p.name in kept} == kept
    assert (judged / "step-0000003-score-n100.json").is_file()


def test_equal_time_benchmark_stops_runs_at_the_budget(tmp_path):
    cmd = [sys.executable, str(REPO / "benchmarks" / "equal_time.py"), "--recipe", "digits",
           "--models", "dcgan,r3gan", "--seeds", "0", "--budget", "1.5", "--points", "2",
           "--every", "2", "--judge", "score", "--n", "100", "--parallel", "2",
           "--out", str(tmp_path), "--json", "--", "--batch-size", "16"]
    r = subprocess.run(cmd, capture_output=True, text=True, timeout=600)
    assert r.returncode == 0, r.stderr[-2000:]
    rows = json.loads(r.stdout)
    assert [x["model"] for x in rows] == ["dcgan", "r3gan"]
    for x in rows:
        cpu = 0.0
        for line in (tmp_path / f"{x['model']}-s0" / "metrics.jsonl").read_text().splitlines():
            cpu += json.loads(line).get("cpu_s", 0.0)
        assert cpu >= 1.5                      # trained to the budget, then stopped
        last = x["points"][-1]
        assert last["step"] is not None and last["cpu_used"] <= 1.5 and last["fd"] > 0
        assert last["images"] == 16 * last["step"]
    # again: nothing is trained or judged twice
    again = subprocess.run(cmd, capture_output=True, text=True, timeout=600)
    assert again.returncode == 0 and json.loads(again.stdout) == rows


def test_r3gan_penalties_benchmark_times_each_kind_of_step():
    r = subprocess.run([sys.executable, str(REPO / "benchmarks" / "r3gan_penalties.py"),
                        "--recipe", "digits", "--batch-size", "8", "--repeats", "2",
                        "--threads", "1", "--every", "1,4", "--set", "width=8", "--json"],
                       capture_output=True, text=True, timeout=600)
    assert r.returncode == 0, r.stderr[-2000:]
    res = json.loads(r.stdout)
    assert sorted(res["median_step_s"]) == ["dcgan", "joined", "plain", "separate"]
    assert all(len(v) == 2 and min(v) > 0 for v in res["step_s"].values())
    assert {"none", "every 1 (separate)", "every 4 (joined)"} <= set(res["images_per_s"])
    assert res["relative_to_none"]["none"] == 1.0 and res["settings"] == {"width": 8}
