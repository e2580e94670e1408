"""Outside tools some tests drive (a browser, pdflatex, the Optuna dashboard): where to find them,
and what a missing one means — a skip with the reason on a developer's machine, a failure under
CI=true, where `bash scripts/setup.sh --test` must have installed them."""
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest

ARTIFACTS = Path(__file__).resolve().parent.parent / "reports" / "test-artifacts"  # screenshots kept for people

# tool -> (names it goes by, where it comes from)
TOOLS = {
    "chromium": (("chromium", "chromium-browser"), "Debian package 'chromium'"),
    "pdflatex": (("pdflatex",), "Debian packages 'texlive-latex-base texlive-latex-recommended'"),
    "pdftotext": (("pdftotext",), "Debian package 'poppler-utils'"),
    "optuna-dashboard": (("optuna-dashboard",), "pip install 'ttaid-bench[dashboard]'"),
}


def find_tool(name: str) -> str | None:
    """The tool's path: on PATH or next to this Python (console scripts of the test environment)."""
    names, _ = TOOLS[name]
    here = str(Path(sys.executable).parent)
    return next((p for n in names for p in (shutil.which(n), shutil.which(n, path=here)) if p), None)


def need_tool(name: str) -> str:
    """The tool's path; when it is missing, skip the test with the reason — or fail it under CI=true."""
    path = find_tool(name)
    if path:
        return path
    reason = f"{name} not installed ({TOOLS[name][1]}; `bash scripts/setup.sh --test` installs it)"
    if os.environ.get("CI", "").lower() == "true":
        pytest.fail(f"CI=true and {reason}", pytrace=False)
    pytest.skip(reason)


def headless_chromium(profile: Path) -> list[str]:
    """The start of a headless Chromium command line, with its own throw-away profile."""
    return [need_tool("chromium"), "--headless", "--no-sandbox", "--disable-gpu", "--hide-scrollbars",
            "--disable-dev-shm-usage", "--disable-background-networking", "--disable-component-update",
            "--disable-sync", "--no-first-run", f"--user-data-dir={profile}"]


def run_browser(cmd: list[str], attempts: int = 3, seconds: float = 120) -> subprocess.CompletedProcess:
    """Run a headless-Chromium command (from `headless_chromium`) to completion, text output.

    Chromium now and then hangs in a container (a screenshot that takes ~5 s never comes in). A
    hung try is killed with its whole process group — its helper processes hold the pipes open —
    and retried; the test fails when every try hangs, or at once
    when Chromium exits non-zero, with the tail of its stderr."""
    err = ""
    for _ in range(attempts):
        proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                                start_new_session=True)
        try:
            out, err = proc.communicate(timeout=seconds)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            _, err = proc.communicate()
            continue
        if proc.returncode != 0:
            pytest.fail(f"headless Chromium exited {proc.returncode}; stderr ends: {err[-1500:]}", pytrace=False)
        return subprocess.CompletedProcess(cmd, 0, out, err)
    pytest.fail(f"headless Chromium hung {attempts} times ({seconds:.0f} s each); stderr ends: {err[-1500:]}",
                pytrace=False)


def free_port() -> int:
    """A loopback port nobody listens on now, for a server a test starts."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def http_get(url: str, body: dict | None = None) -> bytes:
    """GET ``url`` (POST ``body`` as JSON when given); the response's bytes."""
    data = None if body is None else json.dumps(body).encode()
    req = urllib.request.Request(url, data=data, headers={"Content-Type": "application/json"} if data else {})
    with urllib.request.urlopen(req, timeout=10) as r:
        return r.read()


def wait_until_up(url: str, what: str, seconds: float = 60) -> None:
    """Poll ``url`` until it answers; fail the test after ``seconds``."""
    deadline = time.monotonic() + seconds
    while True:
        try:
            http_get(url)
            return
        except OSError:
            if time.monotonic() > deadline:
                pytest.fail(f"{what} did not answer at {url} within {seconds:.0f} s")
            time.sleep(0.5)
