"""What a missing outside tool means: a skip with the reason on a developer's machine, a failure
under CI=true; and scripts/test-tools.sh, which installs them on the test path only."""
import os
import shutil
import subprocess
from pathlib import Path

import pytest
from tools import need_tool

ROOT = Path(__file__).resolve().parent.parent


def _bin(folder: Path, **scripts: str) -> Path:
    """A folder of executables ``name`` -> shell body (a stand-in PATH)."""
    folder.mkdir(parents=True, exist_ok=True)
    for name, body in scripts.items():
        exe = folder / name
        exe.write_text(f"#!/bin/sh\n{body}\n")
        exe.chmod(0o755)
    return folder


def test_missing_tool_skips_with_its_reason_outside_ci(tmp_path, monkeypatch):
    monkeypatch.setenv("PATH", str(_bin(tmp_path / "empty")))
    monkeypatch.delenv("CI", raising=False)
    with pytest.raises(pytest.skip.Exception) as skip:
        need_tool("chromium")
    assert "chromium not installed (Debian package 'chromium'" in str(skip.value)
    assert "scripts/setup.sh --test" in str(skip.value)


def test_missing_tool_fails_under_ci(tmp_path, monkeypatch):
    monkeypatch.setenv("PATH", str(_bin(tmp_path / "empty")))
    monkeypatch.setenv("CI", "true")
    with pytest.raises(pytest.fail.Exception) as fail:
        need_tool("pdflatex")
    assert "CI=true and pdflatex not installed" in str(fail.value) and "texlive-latex-recommended" in str(fail.value)


def test_present_tool_is_found_on_path(tmp_path, monkeypatch):
    folder = _bin(tmp_path / "bin", **{"chromium-browser": "exit 0"})  # Ubuntu's name for it
    monkeypatch.setenv("PATH", str(folder))
    monkeypatch.setenv("CI", "true")
    assert need_tool("chromium") == str(folder / "chromium-browser")


def _script_env(tmp_path: Path, **tools: str) -> dict:
    """PATH = the stand-in tools + only what the script itself runs (no apt-get, no real tools)."""
    base = tmp_path / "base"
    base.mkdir(parents=True)
    for cmd in ("bash", "id", "grep", "mktemp", "tail", "rm", "cat"):
        (base / cmd).symlink_to(shutil.which(cmd))
    stubs = _bin(tmp_path / "stubs", **tools)
    env = {k: v for k, v in os.environ.items() if k not in ("CI", "SUDO_USER")}
    return {**env, "PATH": f"{stubs}:{base}"}


def _run_script(env: dict) -> subprocess.CompletedProcess:
    return subprocess.run([shutil.which("bash"), str(ROOT / "scripts" / "test-tools.sh")], env=env,
                          capture_output=True, text=True, timeout=60)


def test_test_tools_script_does_nothing_when_everything_is_there(tmp_path):
    calls = tmp_path / "apt-calls"
    env = _script_env(tmp_path, chromium="exit 0", pdflatex="exit 0", pdftotext="exit 0",
                      kpsewhich='[ "$1" = booktabs.sty ] && echo /tex/booktabs.sty',
                      **{"apt-get": f"echo \"$@\" >> {calls}; exit 0"})
    res = _run_script(env)
    assert res.returncode == 0 and res.stderr == "" and not calls.exists()


@pytest.mark.skipif(os.geteuid() != 0, reason="checks the root path (no sudo)")
def test_test_tools_script_installs_only_what_is_missing_and_fails_in_one_line(tmp_path):
    calls = tmp_path / "apt-calls"
    apt_ok = f"echo \"$@\" >> {calls}; exit 0"
    env = _script_env(tmp_path, chromium="exit 0", pdftotext="exit 0", **{"apt-get": apt_ok})  # no TeX
    res = _run_script(env)
    assert res.returncode == 0, res.stderr
    install = calls.read_text().splitlines()[-1]
    assert install.startswith("install ") and install.split()[-2:] == ["texlive-latex-base",
                                                                      "texlive-latex-recommended"]
    assert "chromium" not in install and "poppler-utils" not in install

    apt_fails = "echo 'E: Unable to locate package chromium' >&2; exit 100"
    env = _script_env(tmp_path / "again", pdflatex="exit 0", pdftotext="exit 0", **{"apt-get": apt_fails})
    env["PATH"] += ":" + str(_bin(tmp_path / "kpse", kpsewhich="echo /tex/booktabs.sty"))
    res = _run_script(env)
    assert res.returncode == 0 and len(res.stderr.strip().splitlines()) == 2  # "installing …", then why not
    assert "cannot install test tools (chromium)" in res.stderr and "Unable to locate package" in res.stderr
    assert "will skip" in res.stderr
    res = _run_script({**env, "CI": "true"})
    assert res.returncode == 1 and res.stderr.strip().splitlines()[-1].startswith("error: setup: cannot install")


def test_ci_runs_exactly_the_readme_test_command():
    readme = (ROOT / "README.md").read_text()
    ci = (ROOT / ".ci" / "run").read_text().strip().splitlines()[-1]
    assert ci.startswith("bash scripts/setup.sh --test && ") and ci in readme.splitlines()
