"""gancli explore: a local page with a slider for every code, rendered live by the generator."""

from __future__ import annotations

import os
import sys
from typing import Optional

import typer

from gancli.cli.base import DEVICE_HELP, RUN_HELP, app, err, friendly, out, run_or_newest


@app.command()
@friendly
def explore(
    run: Optional[str] = typer.Argument(None, help=RUN_HELP),
    host: str = typer.Option("127.0.0.1", "--host", help="Address to listen on. The default answers this machine only; 0.0.0.0 answers every machine that can reach this one (no login)."),
    port: int = typer.Option(0, "--port", help="Port to listen on (default: a free one, printed)."),
    open_page: bool = typer.Option(False, "--open", help="Open the page in the default browser."),
    truncation: float = typer.Option(1.0, "--truncation", help="The page's truncation at the start (its slider changes it): the noise z drawn closer to its mean, z = psi * z (0 < psi <= 2; 1 = none), as sample --truncation."),
    device: Optional[str] = typer.Option(None, "--device", help=DEVICE_HELP),
) -> None:
    """Explore a generator in the browser: a slider per code, a selector per category and class,
    the noise seed, neighbours along the last code moved, the `gancli sample` line for each image."""
    run = run_or_newest(run)
    try:
        from gancli.explore import Explorer, make_server

        explorer = Explorer(run, device, truncation=truncation)   # loads the newest checkpoint: a bad run stops here
        server = make_server(explorer, host, port)
    except KeyboardInterrupt:
        err.print("interrupted before the server started")
        raise typer.Exit(130) from None
    g = explorer.generator(explorer.default)
    what = f"{g.config.model}, {len(explorer.checkpoints)} checkpoint" + (
        "s" if len(explorer.checkpoints) != 1 else "") + f", on {explorer.device}"
    out.print(f"exploring {run} ({what})", soft_wrap=True, markup=False)
    out.print(f"open {server.url}  (Ctrl-C stops)", soft_wrap=True, markup=False)
    if not server.loopback:
        err.print(f"note: --host {host} serves the page to every machine that can reach this "
                  f"one, with no login", soft_wrap=True, markup=False)
    if open_page:
        import webbrowser

        webbrowser.open(server.url)
    try:
        server.serve_forever()   # Werkzeug's returns on Ctrl-C and closes the socket
    except KeyboardInterrupt:
        pass
    finally:
        server.server_close()
    out.print("stopped")
    # The generator ran on the server's request threads; tearing torch down after that aborts
    # now and then ("terminate called without an active exception", exit -6, seen in 2 of 7
    # Ctrl-C runs on a CPU). Nothing is left to write or close: leave at once, exit 0.
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(0)
