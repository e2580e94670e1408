"""Reliability of `bench run` as real processes: resume after SIGKILL, and two commands at once.

These start `python -m bench` subprocesses (a kill must be a real kill) on the smoke preset.
"""
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import optuna
import pytest
from mlflow.tracking import MlflowClient

from bench.adaptation.evaluate import MEASURED

pytestmark = pytest.mark.slow

STUDY = """title: resume
rows:
  - {name: A, method: ours, metatest: false}
  - {name: B, method: ours, metatest: true}
  - {name: C, method: ridnet}
"""
# Enough fine-tuning epochs that the kill lands mid-stage; a checkpoint after every epoch; a cosine
# LR schedule, whose state must come back too for the numbers to match.
SETS = ["--set", "pretrain.epochs=2", "--set", "finetune.epochs=8", "--set", "supervised.epochs=2",
        "--set", "finetune.schedule=cosine"]
ENV = {**os.environ, "BENCH_CHECKPOINT_SECONDS": "0", "OMP_NUM_THREADS": "1", "PYTHONUNBUFFERED": "1"}


def bench(home: Path, study: Path, **kw) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, "-m", "bench", "run", str(study), "--preset", "smoke", "--quiet",
                             "--home", str(home), *SETS], env=ENV, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            text=True, **kw)


def finish(proc: subprocess.Popen) -> tuple[str, str]:
    out, err = proc.communicate(timeout=600)
    assert proc.returncode == 0, err[-2000:]
    return out, err


def trials(home: Path) -> list[optuna.trial.FrozenTrial]:
    from optuna.storages.journal import JournalFileBackend

    storage = optuna.storages.JournalStorage(JournalFileBackend(str(home / "optuna.journal")))
    (summary,) = optuna.get_all_study_summaries(storage)
    return optuna.load_study(study_name=summary.study_name, storage=storage).get_trials(deepcopy=False)


def metrics_by_row(home: Path) -> dict[str, dict]:
    """Each row's metrics, as its MLflow run logged them (the trial keeps only the run's id)."""
    done = [t for t in trials(home) if t.state == optuna.trial.TrialState.COMPLETE]
    assert sorted(t.params["row"] for t in done) == ["A", "B", "C"]  # every row exactly once
    client = MlflowClient(f"sqlite:///{home / 'mlflow.db'}")
    return {t.params["row"]: {k: v for k, v in client.get_run(t.user_attrs["mlflow_run_id"]).data.metrics.items()
                              if k.startswith(("val/", "test/")) and k.rsplit("/", 1)[1] not in MEASURED}
            for t in done}


def mlflow_runs(home: Path):
    client = MlflowClient(f"sqlite:///{home / 'mlflow.db'}")
    exps = [e.experiment_id for e in client.search_experiments() if e.name.startswith("resume-")]
    return client, client.search_runs(exps, max_results=1000)


@pytest.fixture(scope="module")
def study(tmp_path_factory) -> Path:
    path = tmp_path_factory.mktemp("study") / "resume.yaml"
    path.write_text(STUDY)
    return path


@pytest.fixture(scope="module")
def uninterrupted(tmp_path_factory, study) -> dict:
    home = tmp_path_factory.mktemp("clean")
    finish(bench(home, study))
    return metrics_by_row(home)


def test_sigkill_mid_training_resumes_in_the_same_runs_with_the_same_table(tmp_path, study, uninterrupted):
    home = tmp_path / "home"
    proc = bench(home, study)
    deadline = time.monotonic() + 300
    while not list((home / "cache").glob("finetune-*.partial.pt")):  # an in-stage checkpoint exists
        assert proc.poll() is None and time.monotonic() < deadline, "finished or stuck before fine-tuning"
        time.sleep(0.01)
    proc.send_signal(signal.SIGKILL)
    proc.wait()

    killed = trials(home)
    assert [t.state.name for t in killed].count("RUNNING") == 1  # what a kill -9 leaves behind
    out, _ = finish(bench(home, study))

    assert metrics_by_row(home) == uninterrupted  # bit-identical on CPU: weights, Adam moments, RNGs restored
    failed = [t for t in trials(home) if t.state == optuna.trial.TrialState.FAIL]
    assert len(failed) == 1 and "died" in failed[0].user_attrs["error"]
    retry = next(t for t in trials(home) if t.state.name == "COMPLETE" and t.params["row"] == failed[0].params["row"])
    assert retry.user_attrs["resume_run"] == failed[0].user_attrs["mlflow_run_id"] == retry.user_attrs["mlflow_run_id"]

    client, runs = mlflow_runs(home)
    assert not [r for r in runs if r.info.status == "RUNNING"]
    parents = [r for r in runs if "mlflow.parentRunId" not in r.data.tags and "row" in r.data.tags]
    assert sorted(r.data.tags["row"] for r in parents) == ["A", "B", "C"]  # one run per row, no duplicate
    assert all(r.info.status == "FINISHED" for r in parents)
    trained = [r for r in runs if r.data.tags.get("stage") == "finetune" and r.data.tags.get("reused") == "false"
               and r.data.tags.get("stage_key") and "resumed_from_epoch" in r.data.tags]
    assert len(trained) == 1, "the interrupted fine-tuning went on in the run that started it"
    resumed_from = int(trained[0].data.tags["resumed_from_epoch"])
    assert 1 <= resumed_from < 8
    steps = [m.step for m in client.get_metric_history(trained[0].info.run_id, "finetune/loss")]
    assert sorted(steps) == list(range(1, 9))  # the epoch counter went on; no epoch logged twice
    assert not list((home / "cache").glob("*.partial.pt"))  # finished stages drop their in-stage checkpoint
    assert "A" in out and "C" in out


def test_two_commands_at_once_run_every_row_exactly_once(tmp_path, study, uninterrupted):
    home = tmp_path / "home"
    procs = [bench(home, study), bench(home, study)]
    outputs = [finish(p) for p in procs]
    for out, err in outputs:
        assert "locked" not in err and "Traceback" not in err
        assert all(f" {row} " in out for row in "ABC")  # each command waits for the other's rows and prints them
    assert metrics_by_row(home) == uninterrupted
    assert not [t for t in trials(home) if t.state.name != "COMPLETE"]
    _, runs = mlflow_runs(home)
    parents = [r for r in runs if "mlflow.parentRunId" not in r.data.tags and "row" in r.data.tags]
    assert sorted(r.data.tags["row"] for r in parents) == ["A", "B", "C"]
    assert all(r.info.status == "FINISHED" for r in runs)
