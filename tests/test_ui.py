"""`bench ui` serves the study's MLflow experiment: runs and a logged mask image are reachable."""
import json
import subprocess
import sys
import urllib.parse

import pytest
from mlflow.tracking import MlflowClient
from tools import ARTIFACTS, free_port, headless_chromium, http_get, run_browser, wait_until_up

from bench.cli import main

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def ui(tmp_path_factory):
    """A finished smoke study and `bench ui` serving its home: (base URL, experiment, finetune run, home)."""
    home = tmp_path_factory.mktemp("ui")
    study = home / "ui.yaml"
    study.write_text("title: t\nrows:\n  - {name: Ours, method: ours}\n")
    main(["run", str(study), "--preset", "smoke", "--home", str(home), "--quiet"])
    client = MlflowClient(f"sqlite:///{home / 'mlflow.db'}")
    (exp,) = [e for e in client.search_experiments() if e.name.startswith("ui-")]
    finetune = next(r for r in client.search_runs([exp.experiment_id]) if r.data.tags.get("stage") == "finetune")
    port = free_port()
    proc = subprocess.Popen([sys.executable, "-m", "bench", "ui", "--port", str(port), "--home", str(home)],
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    base = f"http://127.0.0.1:{port}"
    try:
        wait_until_up(base + "/health", "bench ui")
        yield base, exp, finetune, home
    finally:
        proc.terminate()
        proc.wait(timeout=20)


def test_bench_ui_serves_the_runs_and_masks(ui):
    """The API part: no browser needed."""
    base, exp, finetune, home = ui
    client = MlflowClient(f"sqlite:///{home / 'mlflow.db'}")
    (mask_dir,) = client.list_artifacts(finetune.info.run_id, "masks")[:1]
    mask = client.list_artifacts(finetune.info.run_id, mask_dir.path)[0].path
    runs = json.loads(http_get(base + "/api/2.0/mlflow/runs/search",
                               {"experiment_ids": [exp.experiment_id], "max_results": 50}))
    assert finetune.info.run_id in {r["info"]["run_id"] for r in runs["runs"]}
    png = http_get(base + "/get-artifact?" + urllib.parse.urlencode({"path": mask, "run_uuid": finetune.info.run_id}))
    assert png[:8] == b"\x89PNG\r\n\x1a\n"


def test_bench_ui_screenshot_in_a_real_browser(ui, tmp_path):
    base, exp, _, _ = ui
    browser = headless_chromium(tmp_path / "chrome")
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    shot = ARTIFACTS / "bench-ui-experiment.png"
    shot.unlink(missing_ok=True)
    url = f"{base}/#/experiments/{exp.experiment_id}/runs"
    run_browser([*browser, "--window-size=1400,900", "--virtual-time-budget=8000", f"--screenshot={shot}", url])
    assert shot.exists() and shot.stat().st_size > 10_000
    dom = run_browser([*browser, "--virtual-time-budget=8000", "--dump-dom", url]).stdout
    assert "ui-smoke-" in dom  # the experiment's name, rendered by the UI's own scripts
