"""The command-line reference as Markdown, generated from the Typer app itself.

The docs site renders this page at build time (``docs/hooks/cli_reference.py``), so the reference
cannot drift from the commands: a new option appears in it the moment it is added.
"""
from __future__ import annotations

import inspect
from typing import Iterator

import typer
from typer.main import get_command


def _commands(group, path: list[str]) -> Iterator[tuple[list[str], object]]:
    """Every command of ``group`` depth first, in the order ``bench -h`` lists them."""
    for name in group.list_commands(None):
        cmd = group.get_command(None, name)
        if cmd is None or getattr(cmd, "hidden", False):
            continue
        yield path + [name], cmd
        if hasattr(cmd, "list_commands"):
            yield from _commands(cmd, path + [name])


def _cell(text: str) -> str:
    return " ".join(str(text).split()).replace("|", "\\|")


def _option_row(param, ctx) -> str | None:
    if getattr(param, "hidden", False):
        return None
    if param.param_type_name == "argument":
        names = f"`{param.name.upper()}`"
    else:
        names = ", ".join(f"`{o}`" for o in [*param.opts, *param.secondary_opts])
    flag = getattr(param, "is_flag", False) and not getattr(param, "count", False)
    kind = "flag" if flag else (param.display_type(ctx) or "").strip("<>")
    default = param.default
    if callable(default) or default is None or flag or default in ((), []):
        shown = ""
    else:
        shown = f"`{default}`"
    helptext = getattr(param, "help", None) or ""
    return f"| {names} | {_cell(kind)} | {shown} | {_cell(helptext)} |"


def _usage(name: str, cmd, ctx) -> str:
    """``bench run [OPTIONS] STUDY``: the options, then each argument (``...`` when it repeats)."""
    if hasattr(cmd, "list_commands"):
        return f"{name} COMMAND [OPTIONS] ..."
    pieces = [name, "[OPTIONS]"]
    for p in cmd.get_params(ctx):
        if p.param_type_name == "argument":
            arg = p.name.upper() + ("..." if p.nargs == -1 else "")
            pieces.append(arg if p.required else f"[{arg}]")
    return " ".join(pieces)


def markdown() -> str:
    """The whole reference: one section per command (subcommands included) with its usage, its
    help text and a table of its arguments and options."""
    import bench.cli  # noqa: F401  (registers every command on the app)
    from bench.cli.app import app

    root = get_command(app)
    lines = ["# Command-line reference", "",
             "Generated from the command line itself when the site is built; `bench COMMAND -h` prints",
             "the same help in a terminal. Bad input to any command is one `error:` line and exit code 2.", ""]
    for path, cmd in _commands(root, []):
        name = " ".join(["bench", *path])
        ctx = typer.Context(cmd, info_name=name)
        lines += [f"## `{name}`", ""]
        text = inspect.cleandoc(cmd.help or "").strip()
        if text:
            lines += [text, ""]
        lines += ["```text", _usage(name, cmd, ctx), "```", ""]
        rows = [r for p in cmd.get_params(ctx) if (r := _option_row(p, ctx))]
        if rows:
            lines += ["| argument / option | takes | default | what |", "|---|---|---|---|", *rows, ""]
    return "\n".join(lines).rstrip() + "\n"


if __name__ == "__main__":
    print(markdown(), end="")
