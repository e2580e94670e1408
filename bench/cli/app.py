"""The Typer application and the consoles every command prints to."""
from __future__ import annotations

import re
import sys
from pathlib import Path

import typer
from rich.console import Console
from typer.core import TyperOption

DIST = "ttaid-bench"


def bench_version() -> str:
    """The installed distribution's version, else (a checkout run without installing) pyproject.toml's."""
    from importlib import metadata

    try:
        return metadata.version(DIST)
    except metadata.PackageNotFoundError:
        pass
    try:
        text = (Path(__file__).resolve().parents[2] / "pyproject.toml").read_text()
    except OSError:
        return "unknown"
    found = re.search(r'(?m)^version\s*=\s*"([^"]+)"', text)
    return found.group(1) if found else "unknown"


def _flags_take_no_value() -> None:
    """Rich help shows a flag's type (``--json <bool>``) as if it took a value, which it does not:
    Typer's rich formatter asks every option for ``display_type_rich`` and only the plain formatter
    skips flags. Flags (``--json``, ``--quiet``, ``--help``, ``--figures/--no-figures``) show no type."""
    shown = TyperOption.display_type_rich
    if getattr(shown, "_skips_flags", False):
        return

    def display_type_rich(self, ctx):
        return None if self.is_flag and not self.count else shown(self, ctx)

    display_type_rich._skips_flags = True
    TyperOption.display_type_rich = display_type_rich


_flags_take_no_value()

app = typer.Typer(add_completion=False, no_args_is_help=True, pretty_exceptions_enable=False,
                  context_settings={"help_option_names": ["-h", "--help"]},
                  help="ttaid-bench: test-time adaptation for real image denoising, as reproducible studies.")


def _print_version(value: bool) -> None:
    if value:
        typer.echo(f"{DIST} {bench_version()}")
        raise typer.Exit(0)


@app.callback()
def _root(version: bool = typer.Option(False, "--version", is_eager=True, callback=_print_version,
                                       help="Print the version and exit.")) -> None:
    """ttaid-bench: test-time adaptation for real image denoising, as reproducible studies."""


# Rich falls back to 80 columns when output is piped; tables read better wider.
console = Console(width=None if sys.stdout.isatty() else 150)
err_console = Console(stderr=True, width=None if sys.stderr.isatty() else 400)


def shown_path(path) -> Path:
    """A folder as the user should read it: absolute (``--home .bench`` prints where that is)."""
    return Path(path).expanduser().resolve()
