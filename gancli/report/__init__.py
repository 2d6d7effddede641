"""`gancli report`: one self-contained HTML page about a run.

What was trained on what, the curves (losses, D(real)/D(fake), evaluation figures, the best
checkpoint marked), the fixed-latent sample grids over time, a traversal of every named code and
an interpolation strip from the latest checkpoint, and the score/fid results of metrics.jsonl.

Everything is inside the one file: pictures are PNG data URIs (plots drawn on matplotlib's Agg
canvas in memory), the style is inline, there is no script, and a Content-Security-Policy lets
the page load nothing but its own data URIs, so it opens from disk, offline, anywhere. It reads
what exists: a run still training (a half-written last line of metrics.jsonl is skipped), a run
with no checkpoint yet (no generated pictures). Nothing but the report itself is written.
"""

from __future__ import annotations

import base64
import html
import io
import time
from pathlib import Path
from typing import Any, Callable

from gancli import __version__
from gancli.errors import GancliError
from gancli.files import atomic_path
from gancli.report.pictures import curves_png, evals_png, explore, sample_grids
from gancli.report.run import _when, best_step, number, read_metrics, step_of, summary

__all__ = ["write_report", "build_page"]

MAX_TABLE = 200                  # newest score/fid records in the table
TABLE = ("code_accuracy", "code_purity", "label_agreement", "classifier_fd", "min_share",
         "classes_under_5pct", "fid", "kid", "isc", "precision", "recall")
CSP = "default-src 'none'; img-src data:; style-src 'unsafe-inline'"
STYLE = """
body{font:15px/1.45 system-ui,sans-serif;margin:0 auto;max-width:1180px;padding:0 20px 40px;
color:#222}
h1{margin:18px 0 4px}h2{border-bottom:1px solid #ccc;padding-bottom:3px;margin-top:34px}
nav a{margin-right:14px}.note{color:#666}code{background:#f3f3f3;padding:0 3px}
table{border-collapse:collapse;margin:8px 0}
td,th{border:1px solid #ddd;padding:3px 9px;text-align:left}
th{background:#f5f5f5}td.n{text-align:right;font-variant-numeric:tabular-nums}
tr.best td{background:#eaf6ea}img{max-width:100%;height:auto}
img.px{image-rendering:pixelated}.strip{display:flex;gap:10px;overflow-x:auto;padding-bottom:8px}
figure{margin:8px 0}.strip figure{flex:none;width:300px}
.strip img{width:300px;image-rendering:auto}
figcaption{font-size:13px;color:#555}
"""


def esc(x: Any) -> str:
    return html.escape(str(x), quote=True)


def data_uri(png: bytes) -> str:
    return "data:image/png;base64," + base64.b64encode(png).decode("ascii")


def img(png: bytes, alt: str, pixels: bool = False) -> str:
    from PIL import Image

    w, h = Image.open(io.BytesIO(png)).size
    cls = ' class="px"' if pixels else ""
    return f'<img{cls} src="{data_uri(png)}" width="{w}" height="{h}" alt="{esc(alt)}">'


def _fmt(v: Any) -> str:
    """A table cell: a finite number, shortened; a string, escaped and cut to 40 characters;
    anything else metrics.jsonl may hold there (NaN, inf, a table, an integer of 400 digits)
    is left blank."""
    if isinstance(v, bool):
        return "yes" if v else ""
    if isinstance(v, str):
        return esc(v if len(v) <= 40 else v[:39] + "…")
    f = number(v)
    if f is None:
        return ""
    if isinstance(v, int) and abs(v) < 10 ** 15:
        return str(v)
    return f"{f:.4f}" if abs(f) < 1e4 else f"{f:.4g}"


def results_table(results: list[dict[str, Any]], best: int | None) -> str:
    """Every score/fid record, newest last; the evaluation that is checkpoints/best shaded."""
    rows = results[-MAX_TABLE:]
    current = next((r for r in reversed(results) if r.get("eval") is True
                    and r.get("best") is True and step_of(r) == best), None)
    cols = [k for k in TABLE if any(k in r for r in rows)]
    names = ("step", "from", "kind", "n", "EMA", *cols, "best")
    head = "".join(f"<th>{esc(c)}</th>" for c in names)
    body = []
    for r in rows:
        src = "training (--eval-every)" if r.get("eval") is True else f"gancli {r.get('kind')}"
        ema = "yes" if r.get("ema") is True else "no" if r.get("ema") is False else ""
        cells = [_fmt(step_of(r)), esc(src), esc(r.get("kind")), _fmt(r.get("n")), ema,
                 *(_fmt(r.get(c)) for c in cols),
                 ("checkpoints/best" if r is current else "new best")
                 if r.get("best") is True else ""]
        cls = ' class="best"' if r is current else ""
        body.append(f"<tr{cls}>" + "".join(f'<td{"" if i in (1, 2) else " class=n"}>{c}</td>'
                                           for i, c in enumerate(cells)) + "</tr>")
    more = (f'<p class="note">The newest {MAX_TABLE} of {len(results)} records.</p>'
            if len(results) > MAX_TABLE else "")
    return f"<table><tr>{head}</tr>{''.join(body)}</table>{more}"


def build_page(run_dir: Path, device: Any = "cpu",
               say: Callable[[str], None] = lambda s: None) -> tuple[str, int]:
    """The page's HTML and how many pictures it holds."""
    from gancli.checkpoint import read_run_config, step_dirs
    from gancli.models import get_family

    cfg = read_run_config(run_dir)
    spec = get_family(cfg.model).latent_spec(cfg)
    m = read_metrics(run_dir / "metrics.jsonl")
    ckpts = [s for s, _ in step_dirs(run_dir)]
    best = best_step(run_dir, m)
    count = 0
    parts = [f"<h1>gancli report: {esc(run_dir.name)}</h1>",
             f'<p class="note">{esc(run_dir.resolve())}: written {_when(time.time())} by gancli '
             f'{esc(__version__)}.</p>',
             '<nav><a href="#run">run</a><a href="#curves">curves</a><a href="#evaluation">'
             'evaluation</a><a href="#samples">samples over time</a><a href="#checkpoint">latest '
             'checkpoint</a><a href="#results">score and FID</a></nav>',
             '<section id="run"><h2>What was trained on what</h2><table>']
    parts += [f"<tr><th>{esc(k)}</th><td>{esc(v)}</td></tr>"
              for k, v in summary(run_dir, cfg, spec, m, ckpts, best)]
    parts.append("</table>")
    if m.skipped:
        parts.append(f'<p class="note">{m.skipped} unreadable line{"s" * (m.skipped > 1)} of '
                     f'metrics.jsonl skipped (a line still being written, or damaged).</p>')
    parts.append('</section><section id="curves"><h2>Training curves</h2>')
    say("plotting the curves")
    png = curves_png(m, best)
    if png:
        count += 1
        parts.append(img(png, "training curves") + '<p class="note">Means over each logging '
                     'window of ' + esc(cfg.train.log_every) + ' steps.'
                     + (' Dashed green: the best checkpoint.' if best is not None else '') + '</p>')
    else:
        parts.append('<p class="note">No training records yet in metrics.jsonl.</p>')
    parts.append('</section><section id="evaluation"><h2>Evaluation over the steps</h2>')
    png = evals_png(m, best)
    if png:
        count += 1
        parts.append(img(png, "evaluation figures"))
    else:
        parts.append('<p class="note">No evaluation while training (train with <code>--eval-every '
                     'N</code> to score checkpoints as they come and keep the best).</p>')
    parts.append('</section><section id="samples"><h2>Samples over time</h2>')
    grids, total = sample_grids(run_dir)
    if grids:
        count += len(grids)
        *earlier, (last, png) = grids
        shown = f"{len(grids)} of {total}, evenly spaced" if total > len(grids) else f"all {total}"
        if earlier:
            parts.append(f'<p class="note">The same fixed latents at every step ({shown}; '
                         f'scroll sideways), then the latest at full size.</p><div class="strip">')
            parts += [f"<figure>{img(p, f'samples at step {s}')}<figcaption>step {s:,}"
                      f"</figcaption></figure>" for s, p in earlier]
            parts.append("</div>")
        parts.append(f"<figure>{img(png, f'samples at step {last}', True)}<figcaption>step "
                     f"{last:,}, the latest grid</figcaption></figure>")
    else:
        parts.append('<p class="note">No sample grids yet (RUN/samples/step-*.png).</p>')
    parts.append('</section><section id="checkpoint"><h2>Latest checkpoint</h2>')
    if ckpts:
        say("generating traversals and an interpolation from the latest checkpoint")
        try:
            which, pics = explore(run_dir, device)
        except (GancliError, OSError) as e:  # e.g. pruned or damaged under a run still training
            parts.append(f'<p class="note">Could not use the latest checkpoint: {esc(e)}</p>')
        else:
            parts.append(f"<p>{esc(which)}. Generated for this page (nothing written to the run)."
                         + ("" if spec.codes else f" {esc(cfg.model)} has no named codes: only "
                            "the noise, walked below.") + "</p>")
            for title, caption, command, png in pics:
                count += 1
                parts.append(f"<h3>{esc(title)}</h3><figure>{img(png, title, True)}<figcaption>"
                             f"{esc(caption)}. The same picture: <code>{esc(command)}</code>"
                             f"</figcaption></figure>")
    else:
        parts.append('<p class="note">No checkpoint yet: traversals and interpolations come with '
                     'the first one.</p>')
    parts.append('</section><section id="results"><h2>Score and FID results</h2>')
    if m.results:
        parts.append(results_table(m.results, best) + '<p class="note">best: the evaluation '
                     'set a new best and its checkpoint was kept as checkpoints/best (shaded: the '
                     'one kept now).</p>')
    else:
        parts.append('<p class="note">None in metrics.jsonl yet (<code>gancli score RUN</code>, '
                     '<code>gancli fid RUN</code>, or training with <code>--eval-every</code>).'
                     '</p>')
    parts.append("</section>")
    head = (f'<!DOCTYPE html>\n<html lang="en"><head><meta charset="utf-8">'
            f'<meta http-equiv="Content-Security-Policy" content="{CSP}">'
            f'<meta name="viewport" content="width=device-width, initial-scale=1">'
            f"<title>gancli report: {esc(run_dir.name)}</title><style>{STYLE}</style></head>")
    return head + "<body>\n" + "\n".join(parts) + "\n</body></html>\n", count


def check_run(path: str | Path) -> Path:
    p = Path(path)
    if not p.exists():
        raise GancliError(f"no such run: {path}")
    if not (p / "config.json").is_file():
        raise GancliError(f"{path} is not a run directory (no config.json): gancli report takes "
                          f"the directory gancli train wrote")
    return p


def write_report(run: str | Path, target: str | Path, device: Any = "cpu",
                 say: Callable[[str], None] = lambda s: None) -> dict[str, Any]:
    """Write the report of `run` to `target` (atomically); returns its path, size and picture
    count."""
    run_dir = check_run(run)
    page, count = build_page(run_dir, device, say)
    target = Path(target)
    with atomic_path(target) as tmp:
        tmp.write_text(page, encoding="utf-8")
    return {"path": target, "bytes": len(page.encode()), "pictures": count}
