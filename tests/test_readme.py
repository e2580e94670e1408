"""The README's front door holds: its quick-start commands run as written, it stays short, and the
main job's printed block is the table `bench run table2` prints."""
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
README = ROOT / "README.md"
MAX_LINES = 250


def readme_block(marker: str) -> list[str]:
    """The command lines of the fenced block right after ``<!-- marker -->``."""
    text = README.read_text()
    found = re.search(rf"<!-- {marker} -->\s*```bash\n(.*?)```", text, re.S)
    assert found, f"README.md has no ```bash block after <!-- {marker} -->"
    return [line for line in found.group(1).splitlines() if line.strip() and not line.lstrip().startswith("#")]


def test_readme_is_a_front_door():
    lines = README.read_text().splitlines()
    assert len(lines) <= MAX_LINES, f"README.md has {len(lines)} lines; the front door stays within {MAX_LINES}"
    assert not [ln for ln in lines if "MAIN_JOB_OUTPUT" in ln or "REAL_DATA_COMMANDS" in ln], "a placeholder is left"


def test_readme_links_resolve():
    """Every relative link of the README names a file of the checkout."""
    for target in re.findall(r"\]\(([^)#\s]+)(?:#[^)]*)?\)", README.read_text()):
        if "://" in target:
            continue
        assert (ROOT / target).exists(), f"README.md links to {target}, which does not exist"


@pytest.mark.slow
def test_readme_smoke_commands_run_as_written(tmp_path):
    """Each quick-start line, run by bash in an empty folder with the checkout's `bench` first on PATH."""
    commands = readme_block("readme-smoke")
    env = {**os.environ, "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ['PATH']}"}
    env.pop("BENCH_HOME", None)
    for command in commands:
        res = subprocess.run(["bash", "-c", command], cwd=tmp_path, env=env, capture_output=True, text=True,
                             timeout=900)
        assert res.returncode == 0, f"README command failed: {command}\n{res.stdout[-2000:]}\n{res.stderr[-2000:]}"
    assert (tmp_path / ".bench" / "mlflow.db").exists()
    assert list((tmp_path / "reports").glob("*.md")), "bench report wrote no Markdown table"


def readme_bench_lines() -> list[list[str]]:
    """Every `bench …` command in the README's ```bash blocks, as argv after `bench`."""
    import shlex

    out = []
    for block in re.findall(r"```bash\n(.*?)```", README.read_text(), re.S):
        for line in block.splitlines():
            line = line.split("  #")[0].strip()
            for part in re.split(r"\s*&&\s*", line):
                words = shlex.split(part) if part else []
                if words and words[0] in ("bench", ".venv/bin/bench"):
                    out.append(words[1:])
    return out


def test_every_bench_command_in_the_readme_parses():
    """The long commands (three-seed studies) are not run here; each parses against the app as
    written, with a known study and preset, so the README cannot drift from the CLI."""
    import typer
    from typer.main import get_command

    import bench.cli  # noqa: F401
    from bench.cli.app import app
    from bench.core.config import preset_names
    from bench.studies.spec import study_names

    lines = readme_bench_lines()
    assert len(lines) >= 5
    root = get_command(app)
    for argv in lines:
        group, args, ctx = root, list(argv), None
        while hasattr(group, "list_commands") and args:
            sub = group.get_command(ctx, args[0])
            assert sub is not None, f"README: `bench {' '.join(argv)}`: no command {args[0]!r}"
            ctx = typer.Context(group, info_name="bench") if ctx is None else ctx
            group, args = sub, args[1:]
        group.make_context("bench", list(args), parent=ctx)  # raises on an unknown option or a bad value
        if "--preset" in argv:
            assert argv[argv.index("--preset") + 1] in preset_names(), argv
        if argv[0] == "run":
            assert argv[1] in study_names(), f"README runs an unknown study: {argv}"
