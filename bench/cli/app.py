"""The Typer application and the consoles every command prints to."""
from __future__ import annotations

import sys

import typer
from rich.console import Console

app = typer.Typer(add_completion=False, no_args_is_help=True, pretty_exceptions_enable=False,
                  help="ttaid-bench: test-time adaptation for real image denoising, as reproducible studies.")
# Rich falls back to 80 columns when output is piped; tables read better wider.
console = Console(width=None if sys.stdout.isatty() else 150)
err_console = Console(stderr=True, width=None if sys.stderr.isatty() else 400)
