"""The gancli command line: parse, call, print. A user error is one line on stderr and exit 2.

This package's face: `app` (the Typer app, every command registered on it) and `main` (the console
script). `base` holds what the commands share; each other module holds one job's commands.
"""

from gancli.cli.base import app, debugging, default_output, explain, friendly

# Importing a module registers its commands; `gancli --help` lists them in this order.
from gancli.cli import training  # noqa: E402
from gancli.cli import data  # noqa: E402
from gancli.cli import pictures  # noqa: E402
from gancli.cli import measures  # noqa: E402
from gancli.cli import sharing  # noqa: E402
from gancli.cli import projection  # noqa: E402
from gancli.cli import explore  # noqa: E402

__all__ = ["app", "debugging", "default_output", "explain", "friendly", "main"]
COMMAND_MODULES = (training, data, pictures, measures, sharing, projection, explore)


def main() -> None:
    app()
