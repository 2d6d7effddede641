"""The benchmark scripts run (a handful of steps; no timing is asserted: figures belong in
reports, not in tests)."""

import json
import subprocess
import sys

from conftest import REPO


def test_throughput_benchmark_runs_both_loops(mnist_raw):
    r = subprocess.run([sys.executable, str(REPO / "benchmarks" / "throughput.py"), "--data",
                        str(mnist_raw), "--steps", "4", "--warmup", "2", "--device", "cpu", "--json"],
                       capture_output=True, text=True, timeout=600)
    assert r.returncode == 0, r.stderr[-2000:]
    res = json.loads(r.stdout)
    for side in ("baseline", "gancli"):
        assert res[side]["images_per_s"] > 0 and res[side]["peak_host_mib"] > 0
    assert res["ratio"] > 0 and res["settings"]["batch_size"] == 64
