"""The Optuna dashboard, opened as the README says on a finished study's journal, shows the study
and its trials — through its HTTP API and in a real browser (screenshot kept for people)."""
import json
import subprocess

import optuna
import pytest
from tools import ARTIFACTS, free_port, headless_chromium, http_get, need_tool, run_browser, wait_until_up

from bench.cli import main
from bench.studies.runner import open_storage

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def dashboard(tmp_path_factory):
    """A finished two-trial smoke study and `optuna-dashboard <home>/optuna.journal` on a free port:
    (base URL, the study as Optuna reads it)."""
    exe = need_tool("optuna-dashboard")
    home = tmp_path_factory.mktemp("dash")
    spec = home / "dash.yaml"
    spec.write_text("title: t\nrows:\n  - {name: Pre, method: ours, stage: pretrain}\n")
    with pytest.MonkeyPatch.context() as mp:
        mp.delenv("MLFLOW_TRACKING_URI", raising=False)
        main(["run", str(spec), "--preset", "smoke", "--seeds", "0,1", "--home", str(home), "--quiet"])
    (summary,) = optuna.get_all_study_summaries(open_storage(None, home))
    study = optuna.load_study(study_name=summary.study_name, storage=open_storage(None, home))
    port = free_port()
    proc = subprocess.Popen([exe, "--host", "127.0.0.1", "--port", str(port), str(home / "optuna.journal")],
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    base = f"http://127.0.0.1:{port}"
    try:
        wait_until_up(base + "/api/meta", "optuna-dashboard")
        yield base, study
    finally:
        proc.terminate()
        proc.wait(timeout=20)


def _study_id(base: str, name: str) -> int:
    (sid,) = [s["study_id"] for s in json.loads(http_get(base + "/api/studies"))["study_summaries"]
              if s["study_name"] == name]
    return sid


def test_dashboard_api_lists_the_study_and_its_trials(dashboard):
    base, study = dashboard
    assert study.study_name.startswith("dash-smoke-")
    detail = json.loads(http_get(f"{base}/api/studies/{_study_id(base, study.study_name)}"))
    trials = {t["number"]: t for t in detail["trials"]}
    assert len(trials) == 2 and {t["state"] for t in trials.values()} == {"Complete"}
    for t in study.trials:  # the same values and parameters as Optuna's own view of the journal
        assert trials[t.number]["values"] == pytest.approx([t.value])
        assert {p["name"]: p["param_external_value"] for p in trials[t.number]["params"]} == \
            {k: str(v) for k, v in t.params.items()}
    assert {p["param_external_value"] for t in trials.values() for p in t["params"] if p["name"] == "row"} == {"Pre"}
    assert detail["best_trials"][0]["number"] == study.best_trial.number


def test_dashboard_screenshot_in_a_real_browser(dashboard, tmp_path):
    base, study = dashboard
    browser = headless_chromium(tmp_path / "chrome")
    url = f"{base}/dashboard/studies/{_study_id(base, study.study_name)}"
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    shot = ARTIFACTS / "optuna-dashboard-study.png"
    shot.unlink(missing_ok=True)
    run_browser([*browser, "--window-size=1400,900", "--virtual-time-budget=10000", f"--screenshot={shot}", url])
    assert shot.stat().st_size > 10_000
    dom = run_browser([*browser, "--virtual-time-budget=10000", "--dump-dom", url]).stdout
    assert study.study_name in dom  # drawn by the dashboard's scripts from its API, not in the served HTML
    assert study.study_name not in http_get(url).decode()
