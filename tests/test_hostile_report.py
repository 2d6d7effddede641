"""`gancli report` over a metrics.jsonl that holds anything (issue 23): figures at any magnitude,
columns of NaN/inf/strings/bools/tables, a single point, thousands of points, steps that go back
after a resume, huge integers and timestamps. The report draws what is finite, skips the rest,
exits 0, and no library warning reaches the terminal. Each test writes its hostile file itself
into a copy of the session's tiny run."""

from __future__ import annotations

import json
import math
import os
import shutil
import subprocess
import sys
import warnings
from pathlib import Path

import pytest

from conftest import REPO, invoke
from gancli.report.pictures import scale, thin
from gancli.report.run import Metrics, latest_branch, number, read_metrics, step_of

BIG = 1.7976931348623157e308            # the largest float


def rec(step: int, **kw) -> dict:
    return {"step": step, "time": 1.7e9 + step, "epoch": step / 100, "g_loss": 1.0,
            "d_loss": 0.5, **kw}


def lines(*records) -> str:
    """JSON lines; a str is written as it is (for NaN, Infinity and 400-digit numbers)."""
    return "".join((r if isinstance(r, str) else json.dumps(r)) + "\n" for r in records)


VARIANTS = {
    "huge": lines(*(rec(i, g_loss=1e300 * (i + 1), d_loss=-1e300) for i in range(5))),
    "largest float, both signs": lines(*(rec(i, g_loss=(-1) ** i * BIG) for i in range(5))),
    "tiny": lines(*(rec(i, g_loss=1e-300 * (i + 1), d_loss=5e-324) for i in range(5))),
    "huge and tiny mixed": lines(*(rec(i, g_loss=[1e300, 1e-300, -1e300, 0.0][i % 4],
                                       d_loss=[1e-310, 1e308][i % 2]) for i in range(8))),
    "columns of nothing finite": lines(
        '{"step": 2, "g_loss": NaN, "d_loss": "x", "q": true, "r": {"a": [1]}, "s": null}',
        '{"step": 4, "g_loss": Infinity, "d_loss": [1, 2], "q": false, "r": -Infinity}'),
    "only NaN": lines('{"step": 2, "g_loss": NaN}', '{"step": 4, "d_loss": -Infinity}'),
    "a single point": lines(rec(2)),
    "thousands of points": lines(*(rec(i, g_loss=math.sin(i) * 10.0 ** (i % 600 - 300))
                                   for i in range(6000))),
    "a step that goes back (resume)": lines(*(rec(s) for s in (0, 100, 50, 200, 10, 300))),
    "huge integers": lines('{"step": 1' + "0" * 400 + ', "g_loss": 1}',
                           '{"step": 3, "g_loss": 1' + "0" * 400 + ', "images_per_s": 2}',
                           rec(10 ** 30), rec(4, images_per_s=1e300)),
    "times and epochs out of range": lines(rec(2, time=1e300, epoch=5e-324),
                                           rec(4, time=-1e300), rec(6, time=BIG)),
    "schedules over their first": lines(rec(1, lr_g=5e-324, beta2=0.0), rec(2, lr_g=1e308),
                                        rec(3, lr_g=-1e308)),
    "names matplotlib would parse": lines(*(rec(i, **{"$\\frac{": 1.0, "$x$": 2.0, "k" * 500: 3.0})
                                            for i in range(3)),
                                          {"step": 2, "event": "$\\bad{"},
                                          {"step": 1, "event": {"not": "text"}}),
    "hundreds of columns": lines(*(rec(i, **{f"k{j}": j * 1e200 for j in range(300)})
                                   for i in range(3))),
    "evaluations and results": lines(
        rec(2),
        *({"step": i, "eval": True, "kind": "fid", "fid": (-1) ** i * BIG, "kid": 1e-300,
           "n": 10 ** 400 if i else "x", "best": True, "key_metric": {"a": 1} if i else "fid",
           "code_accuracy": float("nan") if i else 0.5, "classifier_fd": 1e-320}
          for i in range(4)),
        '{"kind": "score", "step": 4, "label_agreement": NaN, "fid": 1' + "0" * 400 + '}'),
}


def hostile_copy(run: Path, tmp_path: Path, text: str, checkpoints: bool = True) -> Path:
    copy = Path(shutil.copytree(run, tmp_path / "run"))
    if not checkpoints:      # the generated pictures do not read metrics.jsonl: spare the time
        shutil.rmtree(copy / "checkpoints")
    (copy / "metrics.jsonl").write_text(text)
    return copy


@pytest.mark.parametrize("name", list(VARIANTS))
def test_report_draws_what_is_finite_without_a_warning(name, tiny_run, tmp_path, monkeypatch):
    run = hostile_copy(tiny_run, tmp_path, VARIANTS[name], checkpoints=False)
    # As if run with `python -W error`: gancli keeps its own warning filters out of the way of
    # the user's, so every warning the plotting would raise is an exception here.
    monkeypatch.setattr(sys, "warnoptions", ["error"])
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        r = invoke("report", run, "--device", "cpu")
    assert r.exit_code == 0, r.output
    assert "Warning" not in r.output and "error" not in r.output.lower()
    page = (run / "report.html").read_text()
    assert page.rstrip().endswith("</html>")
    if name in ("columns of nothing finite", "only NaN"):
        assert "No training records yet" in page
    elif name not in ("evaluations and results",):
        assert 'alt="training curves"' in page
    if name == "evaluations and results":
        assert 'alt="evaluation figures"' in page
        cells = [c.lower() for c in page.split("<td")]
        assert not any(c.startswith((" class=n>nan<", " class=n>inf<")) for c in cells)


def test_report_in_a_terminal_with_every_warning_an_error(tiny_run, tmp_path):
    """The whole command, checkpoints included, in a fresh interpreter with PYTHONWARNINGS=error:
    exit 0, the report written, nothing on stderr."""
    text = "".join(VARIANTS[k] for k in ("huge", "largest float, both signs",
                                          "huge and tiny mixed", "a step that goes back (resume)",
                                          "names matplotlib would parse",
                                          "evaluations and results"))
    run = hostile_copy(tiny_run, tmp_path, text)
    env = {**os.environ, "PYTHONWARNINGS": "error"}
    p = subprocess.run([sys.executable, "-m", "gancli", "report", str(run), "--device", "cpu"],
                       capture_output=True, text=True, cwd=REPO, env=env, timeout=600)
    assert p.returncode == 0, p.stderr
    assert "Warning" not in p.stderr and "warning" not in p.stderr, p.stderr
    assert p.stderr.strip() == "", p.stderr
    assert (run / "report.html").stat().st_size > 1000
    assert "wrote" in p.stdout


def test_readers_skip_what_is_not_a_figure(tmp_path):
    assert number(10 ** 400) is None and number(True) is None and number("1") is None
    assert number(float("nan")) is None and number(BIG) == BIG and number(5e-324) == 5e-324
    assert step_of({"step": 2 ** 53}) == 2 ** 53 and step_of({"step": 2 ** 53 + 1}) is None
    assert step_of({"step": -1}) is None and step_of({"step": True}) is None
    # A resume from step 50 of a run that had logged to 100: the later records replace 50..100.
    kept = latest_branch([{"step": s} for s in (0, 50, 100, 50, 100, 150)])
    assert [r["step"] for r in kept] == [0, 50, 100, 150]
    p = tmp_path / "metrics.jsonl"
    p.write_text(VARIANTS["a step that goes back (resume)"])
    assert [r["step"] for r in read_metrics(p).training] == [0, 10, 300]
    assert isinstance(Metrics().times, list)


def test_plots_are_scaled_into_range_and_thinned():
    (pts,), unit = scale([[(0, BIG), (1, -BIG), (2, 1e-300)]])
    assert unit == "×1e308" and all(math.isfinite(v) and abs(v) < 10 for _, v in pts)
    (pts,), unit = scale([[(0, 5e-324), (1, 1e-310)]])
    assert unit == "×1e-310" and 0.9 < pts[1][1] < 1.1
    assert scale([[(0, 3.0)]])[1] == ""
    many = [(i, math.sin(i)) for i in range(100_000)]
    few = thin(many)
    assert len(few) <= 4000 and min(v for _, v in few) == min(v for _, v in many)
    assert [s for s, _ in few] == sorted(s for s, _ in few)
