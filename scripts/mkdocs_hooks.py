"""MkDocs hooks: the command-line reference page is generated from the app at build time."""
from __future__ import annotations

MARKER = "<!-- generated: bench.cli.reference -->"


def on_page_markdown(markdown: str, page, config, files) -> str:
    """Replace the marker in ``cli.md`` with the reference the Typer app gives now."""
    if MARKER not in markdown:
        return markdown
    from bench.cli.reference import markdown as reference

    return reference()
