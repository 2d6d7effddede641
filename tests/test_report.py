"""`gancli report`: one self-contained HTML page per run, for every family, also for a run with a
single checkpoint, none, or a metrics.jsonl still being written; checked in headless Chromium
where it is installed."""

import base64
import io
import json
import os
import re
import shutil
import subprocess
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from conftest import invoke
from gancli.checkpoint import step_dirs
from test_families import trained

ALL = ("gan", "cgan", "infogan", "dcgan", "r3gan")
SECTIONS = ("run", "curves", "evaluation", "samples", "checkpoint", "results")
IMG = re.compile(r"<img\b[^>]*>", re.I)
SRC = re.compile(r'\bsrc="([^"]*)"')
ALT = re.compile(r'\balt="([^"]*)"')


@pytest.fixture(params=ALL)
def family_run(request, tmp_path_factory):
    if request.param == "infogan":   # conftest's tiny InfoGAN: 4 steps, checkpoints at 2 and 4
        return request.param, request.getfixturevalue("tiny_run")
    return request.param, trained(request.param, tmp_path_factory)   # 2 steps, one checkpoint


def copy_run(run: Path, tmp_path: Path) -> Path:
    """The session's runs are shared: each test reports on its own copy, with only the training
    records (other tests' `gancli score`/`fid` append their results to the shared run)."""
    copy = Path(shutil.copytree(run, tmp_path / "run"))
    metrics = copy / "metrics.jsonl"
    if metrics.exists():
        lines = [x for x in metrics.read_text().splitlines() if '"kind"' not in x]
        metrics.write_text("".join(f"{x}\n" for x in lines))
    return copy


def files(run: Path) -> dict[str, bytes]:
    return {str(p.relative_to(run)): p.read_bytes() for p in sorted(run.rglob("*")) if p.is_file()}


def report(*args) -> str:
    r = invoke("report", *args)
    assert r.exit_code == 0, r.output
    assert "wrote" in r.stdout and "self-contained" in r.stdout
    return r.stdout


def pictures(page: str) -> dict[str, np.ndarray]:
    """Every <img> of the page: a PNG data URI, decoded; by alt text."""
    out = {}
    tags = IMG.findall(page)
    assert tags, "no pictures"
    for tag in tags:
        src, alt = SRC.search(tag).group(1), ALT.search(tag).group(1)
        assert src.startswith("data:image/png;base64,"), src[:60]
        png = base64.b64decode(src.split(",", 1)[1], validate=True)
        assert png[:8] == b"\x89PNG\r\n\x1a\n"
        Image.open(io.BytesIO(png)).verify()
        out[alt] = np.asarray(Image.open(io.BytesIO(png)))
    return out


def check_page(page: str) -> dict[str, np.ndarray]:
    """Self-contained: nothing to fetch, no script, every section; returns its pictures."""
    assert page.startswith("<!DOCTYPE html>")
    assert not re.search(r"""\b(?:src|href|action|poster)\s*=\s*["']?\s*(?:https?:|//|file:)""",
                         page, re.I)
    assert not re.search(r"https?://", page.replace("http-equiv", ""))
    assert not re.search(r"<(?:script|link|iframe|object|embed)\b", page, re.I)
    assert "url(" not in page and "@import" not in page
    assert "default-src 'none'" in page                     # and the browser is told so
    for s in SECTIONS:
        assert f'<section id="{s}">' in page
    return pictures(page)


def test_report_for_every_family(family_run, tmp_path):
    name, shared = family_run
    run = copy_run(shared, tmp_path)
    before = files(run)
    stdout = report(run)
    page = (run / "report.html").read_text(encoding="utf-8")
    pics = check_page(page)
    after = files(run)
    assert set(after) - set(before) == {"report.html"}      # nothing else written into the run
    assert all(after[k] == v for k, v in before.items())
    assert f"{len(IMG.findall(page))} pictures" in stdout

    assert f"<td>{name}  (" in page and "digits: 16x16 px" in page
    steps = 4 if name == "infogan" else 2
    assert f"{steps:,} of {steps:,} (finished)" in page
    assert "training curves" in pics and "No evaluation while training" in page
    samples = [a for a in pics if a.startswith("samples at step")]
    assert f"samples at step {steps}" in samples
    assert "interpolation" in pics
    codes = {"infogan": ["c1", "c2", "c3"], "cgan": ["label"], "gan": [], "dcgan": [],
             "r3gan": []}[name]
    assert sorted(a[len("traversal of "):] for a in pics if a.startswith("traversal of ")) == codes
    if not codes:
        assert "has no named codes" in page
    if name != "infogan":
        assert len(step_dirs(run)) == 1                     # a run with a single checkpoint
    assert "None in metrics.jsonl yet" in page


def test_pictures_are_the_commands_pictures(tiny_run, tmp_path):
    """The traversal and interpolation shown are exactly what the named commands draw from the
    latest checkpoint."""
    run = copy_run(tiny_run, tmp_path)
    report(run, "--device", "cpu")
    pics = pictures((run / "report.html").read_text(encoding="utf-8"))
    for args, alt in ((["traverse", run, "--code", "c2"], "traversal of c2"),
                      (["interpolate", run, "--seeds", "0,1", "--rows", 4], "interpolation")):
        out = tmp_path / f"{alt.replace(' ', '-')}.png"
        r = invoke(*args, "--out", out, "--device", "cpu")
        assert r.exit_code == 0, r.output
        assert np.array_equal(np.asarray(Image.open(out)), pics[alt]), alt
    assert f"gancli traverse {run} --code c1" in (run / "report.html").read_text()


def test_evaluations_results_and_a_torn_last_line(tiny_run, tmp_path):
    """A run still training: evaluation lines, score/fid results, a best checkpoint, and a last
    line cut off mid-write."""
    run = copy_run(tiny_run, tmp_path)
    shutil.copytree(run / "checkpoints" / "step-0000002", run / "checkpoints" / "best")
    t = json.loads((run / "metrics.jsonl").read_text().splitlines()[-1])["time"]
    lines = [
        {"kind": "score", "eval": True, "step": 2, "best": True, "code_accuracy": 0.4321,
         "key_metric": "code_accuracy",
         "classifier_fd": 12.5, "n": 200, "ema": True, "time": t},
        {"kind": "score", "eval": True, "step": 4, "best": False, "code_accuracy": 0.3999,
         "key_metric": "code_accuracy",
         "classifier_fd": 11.25, "n": 200, "ema": True, "time": t + 1},
        {"kind": "fid", "step": 4, "fid": 87.654321, "kid": 0.0123, "n": 500, "ema": True,
         "time": t + 2},
        {"kind": "score", "step": 4, "code_accuracy": 0.3888, "n": "<b>300</b>", "ema": False,
         "time": t + 3},
    ]
    with open(run / "metrics.jsonl", "a") as f:
        f.write("".join(json.dumps(x) + "\n" for x in lines))
        f.write('{"step": 6, "epoch": 0.05, "d_loss": 1.2')       # being written
    report(run)
    page = (run / "report.html").read_text(encoding="utf-8")
    pics = check_page(page)
    assert "evaluation figures" in pics and "No evaluation while training" not in page
    assert "1 unreadable line of metrics.jsonl skipped" in page
    assert "step 2 (checkpoints/best)" in page and "Dashed green: the best checkpoint" in page
    table = page[page.index('<section id="results">'):]
    for figure in ("0.4321", "0.3999", "87.6543", "0.0123", "0.3888", "12.5000"):
        assert figure in table
    assert table.count("<tr") == 1 + 4 and table.count('<tr class="best">') == 1
    assert "gancli fid" in table and "training (--eval-every)" in table
    assert "checkpoints/best</td>" in table and ">no</td>" in table
    assert "<b>" not in page and "&lt;b&gt;300" in table       # nothing from a file is markup


def test_a_run_without_a_checkpoint_yet(tiny_run, tmp_path):
    run = copy_run(tiny_run, tmp_path)
    shutil.rmtree(run / "checkpoints")
    report(run)
    page = (run / "report.html").read_text(encoding="utf-8")
    pics = check_page(page)
    assert "No checkpoint yet" in page and "not recorded (no checkpoint yet)" in page
    assert "training curves" in pics and "samples at step 4" in pics
    assert not any(a.startswith("traversal") or a == "interpolation" for a in pics)


def test_a_run_with_nothing_yet(tiny_run, tmp_path):
    run = tmp_path / "fresh"
    run.mkdir()
    shutil.copy(tiny_run / "config.json", run)
    (run / "metrics.jsonl").write_text('{"step": 2, "d_lo')   # the first line, half written
    report(run)
    page = (run / "report.html").read_text(encoding="utf-8")
    assert "No training records yet" in page and "No sample grids yet" in page
    assert "<img" not in page


def test_outputs(tiny_run, tmp_path):
    run = copy_run(tiny_run, tmp_path)
    report(run)
    report(run)                                  # the default output is gancli's own: replaced
    out = tmp_path / "elsewhere" / "r.html"
    report(run, "--out", out)
    out.write_text("mine")
    r = invoke("report", run, "--out", out)
    assert r.exit_code == 2 and "exists: pass --overwrite" in r.stderr
    assert len(r.stderr.strip().splitlines()) == 1 and out.read_text() == "mine"
    report(run, "--out", out, "--overwrite")
    assert out.read_text(encoding="utf-8").startswith("<!DOCTYPE html>")
    r = invoke("report", run, "--out", tmp_path / "r.png")
    assert r.exit_code == 2 and ".html" in r.stderr
    r = invoke("report", tmp_path / "elsewhere")
    assert r.exit_code == 2 and "not a run directory" in r.stderr and "Traceback" not in r.output
    r = invoke("report", tmp_path / "missing")
    assert r.exit_code == 2 and "no such run" in r.stderr


def test_open_and_the_newest_run(tiny_run, tmp_path, monkeypatch):
    import webbrowser

    opened = []
    monkeypatch.setattr(webbrowser, "open", lambda url, *a, **k: opened.append(url) or True)
    run = copy_run(tiny_run, tmp_path)
    report(run, "--open")
    assert opened == [(run / "report.html").resolve().as_uri()]
    import gancli.checkpoint

    if not hasattr(gancli.checkpoint, "newest_run"):
        pytest.skip("gancli.checkpoint.newest_run is not there yet")
    monkeypatch.chdir(tmp_path)
    (tmp_path / "runs").mkdir()
    shutil.move(run, tmp_path / "runs" / "mine")
    r = invoke("report")
    assert r.exit_code == 0, r.output
    assert (tmp_path / "runs" / "mine" / "report.html").is_file()


# --------------------------------------------------------------------------------- a browser

CHECKER = """<script>
window.addEventListener('securitypolicyviolation', e => (window.bad = window.bad || [])
  .push('csp ' + e.violatedDirective + ' ' + e.blockedURI));
window.addEventListener('error', e => (window.bad = window.bad || [])
  .push('error ' + (e.message || (e.target && e.target.alt))), true);
window.addEventListener('load', () => {
  const imgs = [...document.images];
  const broken = imgs.filter(i => !(i.complete && i.naturalWidth > 0)).map(i => i.alt);
  const pre = document.createElement('pre');
  pre.id = 'gancli-check';
  pre.textContent = JSON.stringify({images: imgs.length, broken: broken, bad: window.bad || []});
  document.body.appendChild(pre);
  console.log('gancli-check done');
});
</script>"""


def chromium() -> str:
    for name in ("chromium", "chromium-browser", "google-chrome", "google-chrome-stable"):
        if shutil.which(name):
            return shutil.which(name)
    pytest.skip("no Chromium here (Debian: apt-get install chromium)")


def headless(page: Path, tmp_path: Path, *args: str) -> subprocess.CompletedProcess:
    cmd = [chromium(), "--headless", "--disable-gpu", "--no-first-run", "--mute-audio",
           "--disable-dev-shm-usage", f"--user-data-dir={tmp_path / 'profile'}",
           "--enable-logging=stderr", "--v=0", "--virtual-time-budget=15000", *args,
           page.resolve().as_uri()]
    if hasattr(os, "geteuid") and os.geteuid() == 0:
        cmd.insert(1, "--no-sandbox")            # Chromium refuses to sandbox as root
    try:
        return subprocess.run(cmd, capture_output=True, text=True, timeout=180)
    except subprocess.TimeoutExpired:
        pytest.fail(f"headless Chromium did not finish in 180 s: {' '.join(cmd)}")


def console_lines(stderr: str) -> list[str]:
    return [line for line in stderr.splitlines() if "CONSOLE" in line]


def test_every_picture_shows_in_a_browser(tiny_run, tmp_path):
    run = copy_run(tiny_run, tmp_path)
    report(run)
    page = run / "report.html"
    html = page.read_text(encoding="utf-8")

    # A copy with a checker script (the page itself has none, and its policy forbids one).
    probe = tmp_path / "probe.html"
    probe.write_text(html.replace("default-src 'none';", "default-src 'none'; "
                                  "script-src 'unsafe-inline';", 1)
                     .replace("</body>", CHECKER + "</body>"), encoding="utf-8")
    r = headless(probe, tmp_path, "--dump-dom")
    found = re.search(r'<pre id="gancli-check">(.*?)</pre>', r.stdout, re.S)
    assert found, f"no check result in the DOM:\n{r.stdout[-2000:]}\n{r.stderr[-3000:]}"
    check = json.loads(found.group(1).replace("&quot;", '"').replace("&amp;", "&"))
    assert check["images"] == html.count("<img") and check["images"] >= 6
    assert check["broken"] == [] and check["bad"] == []
    logged = console_lines(r.stderr)
    if any("gancli-check done" in line for line in logged):   # console messages reach stderr
        assert [line for line in logged if "gancli-check" not in line] == []

    # The page as it is: renders with nothing on the console.
    shot = tmp_path / "report.png"
    r = headless(page, tmp_path, "--window-size=1200,3000", f"--screenshot={shot}")
    assert shot.is_file(), r.stderr[-3000:]
    assert console_lines(r.stderr) == []
    with Image.open(shot) as im:
        assert im.size == (1200, 3000)
        assert len(np.unique(np.asarray(im.convert("L").resize((60, 150))))) > 20   # not blank
