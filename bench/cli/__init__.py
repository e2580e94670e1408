"""The ``bench`` command line. Bad input: a one-line ``error:`` message and exit code 2.

Commands live in small modules (``study``: run, ablate, tune; ``report``; ``tools``: methods, ui,
denoise, perf), their shared options in ``options``. Heavy libraries (torch, mlflow, optuna) are
imported inside the command bodies, so that bad input is reported before they load.
"""
from __future__ import annotations

import sys

import typer
from typer._click.exceptions import NoArgsIsHelpError

from bench.cli.app import app, err_console
from bench.cli.data import data_app
from bench.core.allocator import keep_freed_memory
from bench.core.errors import BenchError

from bench.cli import study, tools, report  # noqa: E402, F401, I001  (registers the commands, in this order)

app.add_typer(data_app, name="data")


def main(argv: list[str] | None = None) -> None:
    """Entry point: turns bad input into one line on stderr and exit code 2."""
    try:
        keep_freed_memory()
        code = app(args=argv, prog_name="bench", standalone_mode=False)  # an Exit(n) inside a command comes back as n
        if isinstance(code, int) and code:
            sys.exit(code)
    except BenchError as e:
        err_console.print(f"error: {e}", style="red", highlight=False, markup=False, soft_wrap=True)
        sys.exit(2)
    except typer.Exit as e:
        sys.exit(e.exit_code)
    except (typer.Abort, KeyboardInterrupt):
        err_console.print("aborted", style="red")
        sys.exit(130)
    except NoArgsIsHelpError as e:  # bare `bench` (or `bench data`): the help, which is no error
        text = e.format_message()  # empty where rich has printed it already
        if text.strip():
            typer.echo(text)
        sys.exit(0)
    except typer.TyperException as e:  # usage errors: unknown option, missing argument, bad type
        msg = e.format_message() if hasattr(e, "format_message") else str(e)
        err_console.print(f"error: {' '.join(msg.split())}", style="red", highlight=False, markup=False,
                          soft_wrap=True)
        sys.exit(2)


if __name__ == "__main__":
    main()
