"""gancli export and gancli report: a generator for other programs, a page for people."""

from __future__ import annotations

from pathlib import Path
from typing import Optional

import typer

from gancli.cli.base import (OVERWRITE_HELP, RUN_HELP, STEP_HELP, app, check_outputs,
                             default_output, friendly, out, run_or_newest, run_root, wrote)
from gancli.errors import GancliError


@app.command()
@friendly
def export(
    run: Optional[str] = typer.Argument(None, help=RUN_HELP),
    fmt: str = typer.Option("onnx", "--format", "-f", help="onnx (a model for onnxruntime; needs the export extra) or safetensors (the generator file alone, which sample, traverse, interpolate, fid and score take)."),
    output: Optional[str] = typer.Option(None, "--output", help="ONNX only: the image output, uint8 (NCHW, 0..255; the default) or float (NCHW, [-1, 1])."),
    out_path: Optional[str] = typer.Option(None, "--out", "-o", help="Output file (default <run>/export/generator.onnx or .safetensors)."),
    overwrite: bool = typer.Option(False, "--overwrite", help=OVERWRITE_HELP),
    ema: bool = typer.Option(True, "--ema/--no-ema", help="Export the EMA generator when the checkpoint has one."),
    step: Optional[int] = typer.Option(None, "--step", help=STEP_HELP),
) -> None:
    """Export the generator: an ONNX model (checked against torch in onnxruntime) or a generator file."""
    run = run_or_newest(run)
    from gancli import export as E

    explicit = Path(out_path) if out_path else None
    kind = E.check_options(fmt, output, explicit)
    if explicit:
        check_outputs((explicit, False), overwrite=overwrite)
    if fmt == "onnx":
        E.require_onnx()
    g = E.load(run, ema, step)
    target = explicit or default_output(run_root(g.path), "export", f"generator{E.SUFFIX[fmt]}")
    if not explicit:
        check_outputs((target, False), overwrite=True)
    what = f"{g.config.model} step {g.step}" + (" (EMA)" if g.ema else "")
    if fmt == "safetensors":
        res = E.export_safetensors(g, target)
        wrote(res["path"], f"{what}, generator file, {res['bytes']:,} bytes")
        return
    res = E.export_onnx(g, target, kind)
    c, s = g.config.data.channels, g.config.data.image_size
    wrote(res["path"], f"{what}, ONNX opset {E.OPSET}: {', '.join(res['inputs'])} -> image "
                       f"{kind} [batch, {c}, {s}, {s}], {res['bytes']:,} bytes")
    out.print(f"checked in onnxruntime against torch on {res['checked']} random latents "
              f"(batches of {' and '.join(map(str, E.CHECK_BATCHES))}): max abs difference "
              f"{res['max_abs_diff']:.3g}{res['unit']} (tolerance {res['tolerance']:g})",
              soft_wrap=True)


# ---------------------------------------------------------------------------- report


@app.command()
@friendly
def report(
    run: Optional[str] = typer.Argument(None, help="A run directory (default: the newest run under ./runs)."),
    out_path: Optional[str] = typer.Option(None, "--out", "-o", help="Output .html file (default <run>/report.html)."),
    overwrite: bool = typer.Option(False, "--overwrite", help=OVERWRITE_HELP),
    open_page: bool = typer.Option(False, "--open", help="Open the report in the default web browser."),
    device: Optional[str] = typer.Option(None, "--device", help="Where the latest checkpoint's pictures are made: cpu, cuda, cuda:1 (default: a GPU if present)."),
) -> None:
    """One self-contained HTML page about a run: what was trained, curves, samples over time,
    traversals and an interpolation from the latest checkpoint, score and FID results."""
    from gancli.generate import pick_device
    from gancli.report import check_run, write_report

    explicit = Path(out_path) if out_path else None
    if explicit:
        if explicit.suffix.lower() not in (".html", ".htm"):
            raise GancliError(f"--out {explicit}: report writes an .html file")
        check_outputs((explicit, False), overwrite=overwrite)
    run_dir = check_run(run_or_newest(run))
    dev = pick_device(device)
    target = explicit or run_dir / "report.html"
    if not explicit:
        check_outputs((target, False), overwrite=True)
    res = write_report(run_dir, target, dev)
    wrote(res["path"], f"{res['pictures']} pictures, {res['bytes'] / 2 ** 20:.1f} MiB, "
                       f"self-contained")
    if open_page:
        import webbrowser

        if not webbrowser.open(res["path"].resolve().as_uri()):
            out.print(f"no web browser found: open {res['path']} yourself", markup=False,
                      soft_wrap=True)
