"""The benchmark scripts run (a handful of steps; no timing is asserted: figures belong in
reports, not in tests)."""

import json
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
    assert sorted(res["gancli"]) == ["cgan", "dcgan", "gan", "infogan"]
    assert "baseline" not in res and "ratio" not in res
    assert all(v["batch_size"] == 8 for v in res["gancli"].values())


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
