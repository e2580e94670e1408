"""The docs site builds in strict mode (a broken link or a missing page fails), its CLI reference
is the app's, and the project speaks of itself, not its history, outside the results log and the
changelog."""
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
HISTORY = {"docs/results-log.md", "docs/CHANGELOG.md"}


@pytest.fixture(scope="module")
def site(tmp_path_factory) -> Path:
    pytest.importorskip("mkdocs")
    pytest.importorskip("material")
    out = tmp_path_factory.mktemp("site")
    res = subprocess.run([sys.executable, "-m", "mkdocs", "build", "--strict", "-q", "-d", str(out)], cwd=ROOT,
                         capture_output=True, text=True, timeout=300, env={"NO_MKDOCS_2_WARNING": "1",
                                                                          "PATH": "/usr/bin:/bin"})
    assert res.returncode == 0, f"mkdocs build --strict failed:\n{res.stdout[-3000:]}\n{res.stderr[-3000:]}"
    return out


def test_site_builds_with_every_page(site):
    nav = re.findall(r":\s*([\w./-]+\.md)\s*$", (ROOT / "mkdocs.yml").read_text(), re.M)
    pages = {p.relative_to(ROOT / "docs").as_posix() for p in (ROOT / "docs").glob("*.md")}
    assert set(nav) == pages, f"pages outside the nav: {sorted(pages - set(nav))}; nav without a page: {sorted(set(nav) - pages)}"
    for page in nav:
        built = site / ("index.html" if page == "index.md" else Path(page).with_suffix("") / "index.html")
        assert built.exists(), f"{page} was not built"


def test_cli_reference_is_the_app(site):
    """Every command and every option of the Typer app is on the generated page."""
    import bench.cli  # noqa: F401
    import typer
    from typer.main import get_command

    from bench.cli.app import app

    html = (site / "cli" / "index.html").read_text()

    def walk(group, path):
        for name in group.list_commands(None):
            cmd = group.get_command(None, name)
            yield [*path, name], cmd
            if hasattr(cmd, "list_commands"):
                yield from walk(cmd, [*path, name])

    seen = 0
    for path, cmd in walk(get_command(app), []):
        title = " ".join(["bench", *path])
        assert f"<code>{title}</code>" in html, f"{title} is missing from the CLI reference"
        for param in cmd.get_params(typer.Context(cmd, info_name=title)):
            for opt in param.opts:
                assert opt.startswith("-") is False or opt in html, f"{title} {opt} is missing from the CLI reference"
        seen += 1
    assert seen >= 10


def commits() -> set[str] | None:
    if not shutil.which("git") or not (ROOT / ".git").exists():
        return None
    res = subprocess.run(["git", "rev-list", "--all"], cwd=ROOT, capture_output=True, text=True)
    return set(res.stdout.split()) if res.returncode == 0 else None


def test_no_commit_hashes_or_history_outside_the_log():
    known = commits()
    if not known:
        pytest.skip("no git history to check hashes against")
    files = [ROOT / "README.md", *(ROOT / "docs").glob("*.md"), *(ROOT / "bench").rglob("*.py"),
             *(ROOT / "methods").glob("*.py"), *(ROOT / "studies").glob("*.yaml")]
    found = []
    for path in files:
        rel = path.relative_to(ROOT).as_posix()
        if rel in HISTORY:
            continue
        for n, line in enumerate(path.read_text().splitlines(), 1):
            line = re.sub(r"\(results-log\.md#[^)]*\)", "", line)  # a link into the log names its heading
            if line.startswith("cache: "):  # `bench run`'s own output names the commit a stage came from
                continue
            for token in re.findall(r"\b[0-9a-f]{7,40}\b", line):
                if any(c.startswith(token) for c in known):
                    found.append(f"{rel}:{n}: {token}")
            if re.search(r"\btoday'?s?\b", line, re.I):
                found.append(f"{rel}:{n}: 'today'")
    assert not found, "history belongs in docs/results-log.md or docs/CHANGELOG.md:\n" + "\n".join(found)
