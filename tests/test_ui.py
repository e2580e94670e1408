"""`bench ui` serves the study's MLflow experiment: runs and a logged mask image are reachable."""
import json
import shutil
import socket
import subprocess
import sys
import time
import urllib.parse
import urllib.request
from pathlib import Path

import pytest
from mlflow.tracking import MlflowClient

from bench.cli import main

pytestmark = pytest.mark.slow
ARTIFACTS = Path(__file__).resolve().parent.parent / "reports" / "test-artifacts"


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _get(url: str, body: dict | None = None) -> bytes:
    data = None if body is None else json.dumps(body).encode()
    req = urllib.request.Request(url, data=data, headers={"Content-Type": "application/json"} if data else {})
    with urllib.request.urlopen(req, timeout=10) as r:
        return r.read()


def test_bench_ui_shows_the_study(tmp_path, capsys):
    chromium = shutil.which("chromium") or shutil.which("chromium-browser")
    if not chromium:
        pytest.skip("headless Chromium not installed (Debian package 'chromium')")
    study = tmp_path / "ui.yaml"
    study.write_text("title: t\nrows:\n  - {name: Ours, method: ours}\n")
    main(["run", str(study), "--preset", "smoke", "--home", str(tmp_path), "--quiet"])
    capsys.readouterr()
    client = MlflowClient(f"sqlite:///{tmp_path / 'mlflow.db'}")
    (exp,) = [e for e in client.search_experiments() if e.name.startswith("ui-")]
    finetune = next(r for r in client.search_runs([exp.experiment_id]) if r.data.tags.get("stage") == "finetune")
    (mask_dir,) = client.list_artifacts(finetune.info.run_id, "masks")[:1]
    mask = client.list_artifacts(finetune.info.run_id, mask_dir.path)[0].path

    port = _free_port()
    ui = subprocess.Popen([sys.executable, "-m", "bench", "ui", "--port", str(port), "--home", str(tmp_path)],
                          stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    base = f"http://127.0.0.1:{port}"
    try:
        for _ in range(120):
            try:
                _get(base + "/health")
                break
            except OSError:
                time.sleep(0.5)
        else:
            pytest.fail("bench ui did not answer within 60 s")
        runs = json.loads(_get(base + "/api/2.0/mlflow/runs/search",
                               {"experiment_ids": [exp.experiment_id], "max_results": 50}))
        assert finetune.info.run_id in {r["info"]["run_id"] for r in runs["runs"]}
        png = _get(base + "/get-artifact?" + urllib.parse.urlencode({"path": mask, "run_uuid": finetune.info.run_id}))
        assert png[:8] == b"\x89PNG\r\n\x1a\n"
        ARTIFACTS.mkdir(parents=True, exist_ok=True)
        shot = ARTIFACTS / "bench-ui-experiment.png"
        subprocess.run([chromium, "--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
                        "--disable-component-update", "--disable-sync", "--no-first-run",
                        f"--user-data-dir={tmp_path / 'chrome'}", "--window-size=1400,900",
                        "--virtual-time-budget=8000", f"--screenshot={shot}",
                        f"{base}/#/experiments/{exp.experiment_id}/runs"], check=True, capture_output=True, timeout=120)
        assert shot.exists() and shot.stat().st_size > 10_000
    finally:
        ui.terminate()
        ui.wait(timeout=20)
