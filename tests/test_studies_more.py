"""Ablations, tuning with pruning, and several workers on one study (journal file and PostgreSQL)."""
import os
import shutil
import socket
import subprocess
import sys
import tempfile
from pathlib import Path

import optuna
import pytest
import torch
import yaml
from mlflow.tracking import MlflowClient

from bench.cli import main
from bench.core.config import load_preset
from bench.core.errors import ConfigError
from bench.studies.ablate import ablation_study
from bench.studies.tune import Param, Tuner, write_best


def test_ablation_rows_are_one_field_overrides_of_the_base():
    name, spec = ablation_study("ours", ["no-pretrain", "first-order", "no-metatest"])
    rows = {r.name: r for r in spec.rows}
    assert name == "ablate-ours-first-order-no-metatest-no-pretrain"
    assert rows["ours (base)"].recipe == {} and rows["ours (base)"].set == []
    assert rows["ours --no-pretrain"].recipe == {"pretrain": "none"}
    assert rows["ours --first-order"].set == ["finetune.first_order=true"]
    assert rows["ours --no-metatest"].metatest is False
    combined = rows["ours --no-pretrain --first-order --no-metatest"]
    assert combined.recipe == {"pretrain": "none"} and combined.metatest is False
    with pytest.raises(ConfigError, match="at least one"):
        ablation_study("ours", [])
    with pytest.raises(ConfigError, match="not a meta-learned method"):
        ablation_study("ridnet", ["no-pretrain"])


def _trials(home, prefix):
    from optuna.storages import JournalStorage
    from optuna.storages.journal import JournalFileBackend

    storage = JournalStorage(JournalFileBackend(str(home / "optuna.journal")))
    (summary,) = [s for s in optuna.get_all_study_summaries(storage) if s.study_name.startswith(prefix)]
    return optuna.load_study(study_name=summary.study_name, storage=storage).trials


@pytest.mark.slow
def test_tune_prunes_a_bad_trial_and_writes_a_runnable_study(tmp_path, capsys):
    preset = load_preset("smoke", ["finetune.epochs=2", "finetune.steps_per_epoch=1"])
    space = {"metatest.lr": Param("float", 1e-6, 10.0, log=True), "metatest.steps": Param("int", 0, 10)}
    tuner = Tuner("ours", "smoke", preset, 0, tmp_path, quiet=True, space=space, startup_trials=1)
    good, bad = {"metatest.lr": 1e-4, "metatest.steps": 1}, {"metatest.lr": 10.0, "metatest.steps": 10}
    study = tuner.tune(trials=3, enqueue=[good, bad])
    states = [t.state for t in study.trials]
    assert states[0] == optuna.trial.TrialState.COMPLETE
    assert states[1] == optuna.trial.TrialState.PRUNED  # diverging adaptation loses to the median
    out = write_best(study, "ours", "smoke", tmp_path / "tuned.yaml")
    doc = yaml.safe_load(out.read_text())
    assert doc["rows"][0]["set"] and doc["rows"][0]["method"] == "ours"
    # bench run accepts it and reproduces the winner's validation PSNR (its stages are reused)
    main(["run", str(out), "--preset", "smoke", "--set", "finetune.epochs=2", "--set", "finetune.steps_per_epoch=1",
          "--home", str(tmp_path), "--quiet"])
    capsys.readouterr()
    (trial,) = [t for t in _trials(tmp_path, "tuned-") if t.state.name == "COMPLETE"]
    assert set(trial.user_attrs) <= {"mlflow_run_id", "owner", "stage_keys"}  # Optuna keeps the run id and stage keys; MLflow the results
    client = MlflowClient(f"sqlite:///{tmp_path / 'mlflow.db'}")
    rerun = client.get_run(trial.user_attrs["mlflow_run_id"])
    assert rerun.data.metrics["val/psnr"] == pytest.approx(study.best_value, abs=1e-9)
    assert not (Path(__file__).parent.parent / "studies" / "tuned-ours.yaml").exists()
    runs = client.search_runs([e.experiment_id for e in client.search_experiments()
                               if e.name.startswith("tune-")])
    assert any(r.info.status == "KILLED" for r in runs)  # the pruned trial is not left RUNNING
    assert not any(r.info.status == "RUNNING" for r in runs)


@pytest.mark.slow
def test_tune_gain_scores_alg3_on_validation_against_no_adaptation(tmp_path, capsys):
    from bench.studies.plan import load_study
    from bench.studies.tune import reference_value

    preset = load_preset("smoke")
    tuner = Tuner("ours", "smoke", preset, 0, tmp_path, quiet=True, target="gain")
    study = tuner.tune(trials=3)
    assert study.trials[0].params["steps"] == 0  # trial 0: no adaptation, the reference
    assert all(t.state.name == "COMPLETE" for t in study.trials)
    ref = reference_value(study)
    client = MlflowClient(f"sqlite:///{tmp_path / 'mlflow.db'}")
    for t in study.trials:  # each trial is scored on the scenarios' validation instances only
        run = client.get_run(t.user_attrs["mlflow_run_id"])
        assert run.data.metrics["val/psnr_float"] == pytest.approx(t.value)
        assert not any(k.startswith("test/") for k in run.data.metrics)
    out = write_best(study, "ours", "smoke", tmp_path / "studies" / "tuned-gain-ours.yaml", tuner)
    doc = yaml.safe_load(out.read_text())
    best = max(study.trials, key=lambda t: t.value)
    assert doc["scenarios"] == load_study("tta")[1].scenarios and f"{best.value - ref:+.4f} dB" in doc["title"]
    assert [r["adapt"] for r in doc["rows"]] == ["none", "alg3"] and doc["rows"][1]["adapt_set"] == best.params
    main(["run", "tuned-gain-ours", "--preset", "smoke", "--home", str(tmp_path), "--quiet"])  # found by name
    assert "alg3 (tuned)" in capsys.readouterr().out


STUDY = "title: two rows\nrows:\n  - {name: A, method: ours, metatest: false}\n  - {name: B, method: ours-ri}\n"


def _two_workers(tmp_path, *extra):
    study = tmp_path / "two.yaml"
    study.write_text(STUDY)
    cmd = [sys.executable, "-m", "bench", "run", str(study), "--preset", "smoke", "--workers", "2",
           "--home", str(tmp_path / "home"), "--quiet", *extra]
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=900)
    assert proc.returncode == 0, proc.stderr[-2000:]
    client = MlflowClient(f"sqlite:///{tmp_path / 'home' / 'mlflow.db'}")
    (exp,) = [e for e in client.search_experiments() if e.name.startswith("two-")]
    runs = client.search_runs([exp.experiment_id])
    parents = [r for r in runs if "mlflow.parentRunId" not in r.data.tags and "row" in r.data.tags]
    assert sorted(r.data.tags["row"] for r in parents) == ["A", "B"]  # every row exactly once
    assert all(r.info.status == "FINISHED" for r in runs)
    for r in runs:  # no credentials in what MLflow keeps (the storage is recorded, masked)
        assert "s3cret" not in repr(r.data.params) + repr(r.data.tags)
    for p in parents:
        assert "s3cret" not in Path(client.download_artifacts(p.info.run_id, "config.json", str(tmp_path))).read_text()
    assert "s3cret" not in proc.stdout + proc.stderr
    return proc.stdout


@pytest.mark.slow
def test_two_workers_share_a_journal_study(tmp_path):
    _two_workers(tmp_path)
    trials = _trials(tmp_path / "home", "two-")
    assert sorted(t.params["row"] for t in trials) == ["A", "B"]
    assert all(t.state.name == "COMPLETE" for t in trials)


def _pg_bin(name):
    found = shutil.which(name) or next(iter(sorted(Path("/usr/lib/postgresql").glob(f"*/bin/{name}"))), None)
    return str(found) if found else None


@pytest.fixture(scope="module")
def postgres_url():
    initdb, pg_ctl = _pg_bin("initdb"), _pg_bin("pg_ctl")
    if not (initdb and pg_ctl):
        pytest.skip("PostgreSQL server not installed (Debian package 'postgresql')")
    psycopg = pytest.importorskip("psycopg", reason="psycopg not installed (pip install 'ttaid-bench[postgres]')")
    base = Path(tempfile.mkdtemp(prefix="bench-pg-"))
    as_user = []
    if os.geteuid() == 0:  # the server refuses to run as root
        as_user = ["runuser", "-u", "postgres", "--"]
        os.chmod(base, 0o777)
    data = base / "data"
    subprocess.run([*as_user, initdb, "-D", str(data), "-U", "bench", "--auth=trust"], check=True,
                   capture_output=True)
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    subprocess.run([*as_user, pg_ctl, "-D", str(data), "-l", str(base / "log"), "-w", "-o",
                    f"-p {port} -k {base} -c listen_addresses=127.0.0.1", "start"], check=True, capture_output=True)
    try:
        with psycopg.connect(f"host=127.0.0.1 port={port} user=bench dbname=postgres", autocommit=True) as conn:
            conn.execute("CREATE DATABASE optuna")
        # trust authentication ignores the password; it is there to check that it never reaches a log
        yield f"postgresql+psycopg://bench:s3cret-pw@127.0.0.1:{port}/optuna"
    finally:
        subprocess.run([*as_user, pg_ctl, "-D", str(data), "-m", "fast", "stop"], capture_output=True)
        shutil.rmtree(base, ignore_errors=True)


@pytest.mark.slow
def test_two_workers_share_a_postgresql_study(tmp_path, postgres_url):
    out = _two_workers(tmp_path, "--storage", postgres_url)
    client = MlflowClient(f"sqlite:///{tmp_path / 'home' / 'mlflow.db'}")
    tags = [r.data.tags.get("optuna_storage", "") for e in client.search_experiments()
            for r in client.search_runs([e.experiment_id]) if "mlflow.parentRunId" not in r.data.tags
            and "row" in r.data.tags]
    assert tags and all(t.startswith("postgresql+psycopg://bench:***@127.0.0.1:") for t in tags), tags
    assert "s3cret" not in out
    storage = optuna.storages.RDBStorage(postgres_url)
    (summary,) = optuna.get_all_study_summaries(storage)
    trials = optuna.load_study(study_name=summary.study_name, storage=storage).trials
    assert sorted(t.params["row"] for t in trials) == ["A", "B"]
    assert all(t.state.name == "COMPLETE" for t in trials)


@pytest.mark.slow
def test_a_diverging_row_fails_and_the_others_finish(tmp_path, capsys):
    study = tmp_path / "nan.yaml"
    study.write_text("title: t\nrows:\n  - {name: A, method: ours, metatest: false}\n"
                     "  - {name: B, method: ours, set: ['finetune.lambda_out=1e30']}\n")
    with pytest.raises(SystemExit) as exc:
        main(["run", str(study), "--preset", "smoke", "--home", str(tmp_path), "--quiet"])
    assert exc.value.code == 1
    out = capsys.readouterr().out
    assert "failed: finetune: loss" in out
    trials = {t.params["row"]: t for t in _trials(tmp_path, "nan-")}
    assert trials["A"].state.name == "COMPLETE" and trials["B"].state.name == "FAIL"
    client = MlflowClient(f"sqlite:///{tmp_path / 'mlflow.db'}")
    (exp,) = [e for e in client.search_experiments() if e.name.startswith("nan-")]
    parents = {r.data.tags["row"]: r for r in client.search_runs([exp.experiment_id])
               if "mlflow.parentRunId" not in r.data.tags and "row" in r.data.tags}
    assert parents["A"].info.status == "FINISHED"
    assert parents["B"].info.status == "FAILED" and "DivergenceError" in parents["B"].data.tags["error"]


def test_a_nan_injected_into_one_row_fails_it_and_a_rerun_does_not_retry_it(tmp_path, capsys, monkeypatch):
    import bench.training.mtl as mtl

    real = mtl.mtl_loss

    def poisoned(model, noisy, clean, **kw):  # row B is the one with λ_in = 9: its loss turns NaN
        loss = real(model, noisy, clean, **kw)
        return loss * float("nan") if kw["lambda_in"] == 9 else loss

    monkeypatch.setattr(mtl, "mtl_loss", poisoned)
    study = tmp_path / "nanrow.yaml"
    study.write_text("title: t\nrows:\n  - {name: A, method: ours}\n"
                     "  - {name: B, method: ours, set: ['finetune.lambda_in=9']}\n  - {name: C, method: ridnet}\n")
    args = ["run", str(study), "--preset", "smoke", "--home", str(tmp_path), "--quiet"]
    with pytest.raises(SystemExit) as exc:
        main(args)
    assert exc.value.code == 1
    out = capsys.readouterr().out
    assert "failed: finetune: loss nan at epoch 1" in out
    trials = {t.params["row"]: t for t in _trials(tmp_path, "nanrow-")}
    assert {r: t.state.name for r, t in trials.items()} == {"A": "COMPLETE", "B": "FAIL", "C": "COMPLETE"}
    assert "non-finite" in trials["B"].user_attrs["error"]
    client = MlflowClient(f"sqlite:///{tmp_path / 'mlflow.db'}")
    (exp,) = [e for e in client.search_experiments() if e.name.startswith("nanrow-")]
    runs = client.search_runs([exp.experiment_id])
    parents = {r.data.tags["row"]: r for r in runs if "mlflow.parentRunId" not in r.data.tags and "row" in r.data.tags}
    assert parents["B"].info.status == "FAILED" and "loss nan" in parents["B"].data.tags["error"]
    assert parents["A"].info.status == parents["C"].info.status == "FINISHED"
    assert not [r for r in runs if r.info.status == "RUNNING"]
    with pytest.raises(SystemExit):  # the same command again: B would diverge again, so it is not retried
        main(args)
    assert capsys.readouterr().out.count("failed: finetune: loss nan") == 1
    assert len(_trials(tmp_path, "nanrow-")) == 3


def test_a_nan_gradient_is_caught_at_the_end_of_its_epoch():
    from bench.core.errors import DivergenceError
    from bench.training.loop import check_weights

    model = torch.nn.Linear(2, 2)
    check_weights(model, "finetune", 1)
    with torch.no_grad():
        model.weight[0, 0] = float("nan")
    with pytest.raises(DivergenceError, match=r"finetune: non-finite weights \(weight\) after epoch 3"):
        check_weights(model, "finetune", 3)


def test_rows_reusing_stages_are_queued_after_the_rows_that_train(tmp_path):
    from bench.studies.runner import StudyRunner
    from bench.studies.spec import StudySpec

    spec = StudySpec.model_validate({"title": "t", "rows": [
        {"name": "A", "method": "ours", "metatest": False}, {"name": "A'", "method": "ours", "metatest": True},
        {"name": "R", "method": "ridnet"}, {"name": "A2", "method": "ours", "set": ["finetune.epochs=1"]},
        {"name": "A''", "method": "ours", "metatest": False}]})
    runner = StudyRunner("order", spec, "smoke", load_preset("smoke"), [0, 1], tmp_path)
    # the rows that reuse stages seed by seed: seed 0's rows need only seed 0's stages
    assert [(w["row"], w["seed"]) for w in runner.wanted()] == [
        ("A", 0), ("A", 1), ("R", 0), ("R", 1), ("A2", 0), ("A2", 1), ("A'", 0), ("A''", 0), ("A'", 1), ("A''", 1)]


def test_rows_picks_rows_and_the_references_their_gains_need(tmp_path):
    from bench.studies.runner import StudyRunner
    from bench.studies.spec import read_study
    from bench.core.config import STUDIES_DIR

    spec = read_study(STUDIES_DIR / "tta.yaml")
    rows = spec.chosen_rows(["bm3d", "alg3"])
    assert rows == ["none", "alg3", "bm3d"]  # the study's order, with the none row every gain is paired with
    runner = StudyRunner("tta", spec, "smoke", load_preset("smoke"), [0, 1], tmp_path, rows=rows)
    # bm3d reads nothing of the network: scored once (bench.studies.shared), its other seeds go last
    assert [(w["row"], w["seed"]) for w in runner.wanted()] == [
        ("none", 0), ("none", 1), ("alg3", 0), ("bm3d", 0), ("alg3", 1), ("bm3d", 1)]
    runner = StudyRunner("tta", spec, "smoke", load_preset("smoke"), [0, 1, 2], tmp_path,
                         rows=spec.chosen_rows(["bm3d", "zs-n2n", "alg3"]))
    assert [(w["row"], w["seed"]) for w in runner.wanted()] == [
        ("none", 0), ("none", 1), ("none", 2), ("alg3", 0), ("zs-n2n", 0), ("bm3d", 0), ("alg3", 1), ("alg3", 2),
        ("zs-n2n", 1), ("bm3d", 1), ("zs-n2n", 2), ("bm3d", 2)]
    table2 = read_study(STUDIES_DIR / "table2.yaml")  # a plain study has no none reference to add
    assert table2.chosen_rows([table2.rows[-1].name]) == [table2.rows[-1].name]
