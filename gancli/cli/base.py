"""What every command shares: the app, one-line errors, outputs, loading a generator.

Every error, a user's or gancli's own, is one line on stderr and a non-zero exit, never a
traceback, unless `gancli --debug ...` (or GANCLI_DEBUG=1) asks for the traceback, for bug reports.
"""

from __future__ import annotations

import functools
import os
import sys
from pathlib import Path
from typing import Any, Callable, Optional, TypeVar

import typer
from rich.console import Console
from rich.markup import escape
from typer.core import TyperGroup
from typer.exceptions import Abort, Exit, TyperException

from gancli import __version__
from gancli.errors import GancliError

out = Console(highlight=False)
err = Console(stderr=True, highlight=False)
F = TypeVar("F", bound=Callable[..., Any])


class OneLineErrors(TyperGroup):
    """Click's own usage errors (a bad option value, a missing argument, an unknown option) as
    one line too, with where to look for help. `gancli` alone still shows the help."""

    def main(self, *args: Any, standalone_mode: bool = True, **kwargs: Any) -> Any:
        if not standalone_mode:
            return super().main(*args, standalone_mode=False, **kwargs)
        try:
            rv = super().main(*args, standalone_mode=False, **kwargs)
        except TyperException as e:  # click's usage errors
            if type(e).__name__ == "NoArgsIsHelpError":
                return super().main(*args, **kwargs)  # prints the help, as before
            ctx = getattr(e, "ctx", None)
            where = f" (see {ctx.command_path} --help)" if ctx is not None else ""
            say_error(e.format_message() + where)
            sys.exit(getattr(e, "exit_code", 2))
        except Abort:
            say_error("aborted")
            sys.exit(1)
        sys.exit(rv if isinstance(rv, int) else 0)


app = typer.Typer(cls=OneLineErrors, add_completion=False, no_args_is_help=True,
                  pretty_exceptions_enable=False,
                  help="Train, sample, explore and evaluate GANs: gan, cgan, infogan, dcgan.")


_debug_flag = False


def debugging() -> bool:
    """--debug on the command line, or GANCLI_DEBUG set to anything but 0/false/no."""
    env = os.environ.get("GANCLI_DEBUG", "").strip().lower()
    return _debug_flag or env not in ("", "0", "false", "no")


def _is_out_of_memory(e: BaseException) -> bool:
    if isinstance(e, MemoryError):
        return True
    text = str(e)
    return isinstance(e, RuntimeError) and ("out of memory" in text.lower()
                                            or "can't allocate memory" in text
                                            or "DefaultCPUAllocator" in text)


def explain(e: Exception) -> tuple[int, str]:
    """(exit status, one line) for an error that reached the command line."""
    if isinstance(e, GancliError):
        return getattr(e, "exit_code", 2), str(e)
    first = (str(e).strip().splitlines() or [type(e).__name__])[0][:300]
    if _is_out_of_memory(e):
        return 2, (f"out of memory ({first}): ask for less (a smaller --n, --rows, --steps or "
                   f"--batch-size), or use a machine with more memory")
    if isinstance(e, OSError):
        import errno
        if e.filename and e.errno in (errno.ENOSPC, errno.EDQUOT):
            from gancli.files import output_error  # a library's own write: the same line
            return 2, str(output_error(e.filename, e))
        where = f"{e.filename}: " if e.filename else ""
        return 2, f"{where}{e.strerror or first}"
    return 1, (f"internal error: {type(e).__name__}: {first} (a gancli bug: rerun with --debug "
               f"for the traceback and report it)")


def say_error(message: str, label: str = "error") -> None:
    # One line whatever the message holds (newlines, rich markup characters in a path).
    line = " ".join(message.split("\n")).replace("\r", " ")
    if label:
        err.print(f"[bold red]{label}:[/] {escape(line)}", soft_wrap=True)
    else:   # a stop the user asked for (Ctrl-C while training) is not an error
        err.print(f"[bold yellow]{escape(line)}[/]", soft_wrap=True)


def friendly(fn: F) -> F:
    """Turn any error into one line on stderr and a non-zero exit: a GancliError (a user error)
    into its message and exit 2, anything else into a line that says it is a bug (exit 1).
    With --debug (or GANCLI_DEBUG=1) the error is raised again, so its traceback shows."""
    @functools.wraps(fn)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        try:
            return fn(*args, **kwargs)
        except (Exit, Abort, TyperException):
            raise  # typer's own ending and usage errors
        except KeyboardInterrupt:
            if debugging():
                raise
            err.print("interrupted at once: the step under way is lost; every file written "
                      "before it is whole, so --resume continues from the last checkpoint")
            raise typer.Exit(130) from None
        except Exception as e:
            if debugging():
                raise
            code, message = explain(e)
            if not getattr(e, "quiet", False):  # another process of the run says it
                say_error(message, getattr(e, "label", "error"))
            raise typer.Exit(code) from None
    return wrapper  # type: ignore[return-value]


def wrote(path: Path | str, what: str = "") -> None:
    out.print(escape(f"wrote {path}" + (f"  ({what})" if what else "")), soft_wrap=True)


RUN_HELP = ("A run directory, a step directory or a generator file (default: the newest run "
            "under ./runs).")


def run_or_newest(run: Optional[str]) -> str:
    """RUN as given, or the newest run under ./runs, said on stderr (stdout may be JSON)."""
    if run is not None:
        return run
    from gancli.checkpoint import newest_run

    path = newest_run()
    typer.echo(f"using the newest run: {path}", err=True)
    return str(path)


DEVICE_HELP = "cpu, cuda, cuda:1 (default: a GPU if present)."
EMA_HELP = "Use the EMA generator when the checkpoint has one."
STEP_HELP = "Use this checkpoint step of a run."

# The data options that `train` and `data` share: what the loop will see.
DATA_HELP = ("Local copy of the data set: a directory (IDX files, a folder of images, an emoji "
             "package, a datasets save_to_disk or parquet directory), a .parquet file, or for "
             "the hf recipe a hub id.")
LIMIT_HELP = "Use only the first N images."
IMAGE_SIZE_HELP = "Image size in pixels (the recipe's image_size), e.g. 32 for emoji."
BACKGROUND_HELP = ("What transparent pixels become: white (default), black, grey or #rrggbb.")
VENDOR_HELP = "The emoji recipe's drawings: twitter (default), google or both."


def data_flag(key: str) -> str:
    """The option that sets data setting `key` (path is --data)."""
    return "--data" if key == "path" else f"--{key.replace('_', '-')}"


OVERWRITE_HELP = ("Replace an --out that exists (a file, or a whole directory). Default outputs "
                  "inside the run directory are gancli's own and are always replaced.")


def check_outputs(*targets: tuple[Path, bool], overwrite: bool) -> None:
    """Check every output of a command before any image is made: (path, is a directory)."""
    from gancli.files import check_target

    for path, directory in targets:
        check_target(path, directory=directory, overwrite=overwrite)


def default_output(run_dir: Path, folder: str, name: str) -> Path:
    """A default output inside the run: the name is built from codes and seeds, some read from
    the checkpoint, so it must stay one plain file name inside `folder`."""
    from gancli.files import safe_name

    return run_dir / folder / safe_name(name, "output name")


def run_root(path: Path) -> Path:
    """The run directory that a run, step directory or generator file belongs to (where outputs
    go when no --out is given)."""
    p = path if path.is_dir() else path.parent
    for cand in (p, p.parent, p.parent.parent):
        if (cand / "config.json").is_file():
            return cand
    return p


def version_callback(value: bool) -> None:
    if value:
        out.print(f"gancli {__version__}")
        raise typer.Exit()


@app.callback()
def root(version: bool = typer.Option(False, "--version", callback=version_callback,
                                      is_eager=True, help="Print the version and exit."),
         debug: bool = typer.Option(False, "--debug",
                                    help="On an error, show the full Python traceback (for bug "
                                         "reports); also GANCLI_DEBUG=1.")) -> None:
    """gancli: GANs you can train, look inside and measure."""
    global _debug_flag
    _debug_flag = debug


# ---------------------------------------------------------------------------- train



def load(run: str, ema: bool, step: Optional[int], device: Optional[str]):
    from gancli.checkpoint import load_generator
    from gancli.generate import pick_device

    dev = pick_device(device)
    return load_generator(run, ema=ema, step=step, device=dev), dev


def fix_codes(spec, latents, codes: list[str] | None, option: str = "--code"):
    from gancli.generate import parse_assignments

    for name, value in parse_assignments(codes, option):
        spec.check_name(name)
        latents = spec.fix(latents, name, spec.parse_value(name, value, option))
    return latents

