"""`bench run table2 --preset smoke` end to end: table, MLflow contents, and a free second run."""
import re

import mlflow
import pytest
from mlflow.tracking import MlflowClient

from bench.cli import main

pytestmark = pytest.mark.slow


def run(capsys, *args):
    main(list(args))
    return capsys.readouterr().out


def table_rows(out):
    return {line.split("│")[1].strip(): line for line in out.splitlines() if line.startswith("│")}


@pytest.fixture(scope="module")
def home(tmp_path_factory):
    return tmp_path_factory.mktemp("bench-home")


def test_smoke_study_runs_and_is_tracked(capsys, home, monkeypatch):
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    out = run(capsys, "run", "table2", "--preset", "smoke", "--home", str(home), "--quiet")
    rows = table_rows(out)
    assert {"Noisy input", "Ours without meta-test", "Ours with meta-test"} <= set(rows)
    assert "0.66 M / 0.059 M" in rows["Ours with meta-test"]

    mlflow.set_tracking_uri(f"sqlite:///{home / 'mlflow.db'}")
    client = MlflowClient()
    exp = next(e for e in client.search_experiments() if e.name.startswith("table2-smoke-"))
    runs = client.search_runs([exp.experiment_id])
    assert all(r.info.status == "FINISHED" for r in runs)
    parents = [r for r in runs if "mlflow.parentRunId" not in r.data.tags]
    stages = [r for r in runs if "mlflow.parentRunId" in r.data.tags]
    assert len(parents) == 4
    assert all({"test/psnr", "val/psnr", "params/restorer"} <= set(p.data.metrics) for p in parents)
    assert sorted(p.data.params["method"] for p in parents) == ["mirnet", "ours", "ours", "ridnet"]
    trained = [s for s in stages if s.data.tags["reused"] == "false"]
    reused = [s for s in stages if s.data.tags["reused"] == "true"]
    # the two Ours rows share one training (pretrain + finetune, the second row reuses finetune);
    # each baseline trains its own supervised stage
    assert sorted(s.data.tags["stage"] for s in trained) == ["finetune", "finetune", "finetune", "pretrain"]
    assert [s.data.tags["stage"] for s in reused] == ["finetune"]
    for s in trained:
        ckpts = client.list_artifacts(s.info.run_id, "checkpoints")
        assert len(ckpts) == 1 and ckpts[0].path.endswith(".pt")
        assert client.get_metric_history(s.info.run_id, next(k for k in s.data.metrics if "loss" in k))
    ft = next(s for s in trained if s.data.tags["stage"] == "finetune" and "cfg.steps" in s.data.params)
    assert "finetune/val_psnr" in ft.data.metrics and "cfg.steps" in ft.data.params
    arts = {a.path for a in client.list_artifacts(parents[0].info.run_id)}
    assert {"config.json", "images.csv"} <= arts

    # a second run trains nothing, adds no run, and prints the same numbers
    again = run(capsys, "run", "table2", "--preset", "smoke", "--home", str(home), "--quiet")
    assert len(client.search_runs([exp.experiment_id])) == len(runs)
    strip = lambda text: {k: re.sub(r"\s+", " ", v) for k, v in table_rows(text).items()}  # noqa: E731
    assert strip(again) == strip(out)


def test_rows_added_with_a_new_seed_reuse_nothing_and_finish(capsys, home):
    out = run(capsys, "run", "table2", "--preset", "smoke", "--home", str(home), "--quiet", "--seeds", "0,1")
    assert "± " in table_rows(out)["Ours with meta-test"]  # two seeds: mean ± std


def test_same_seed_gives_identical_metrics_on_cpu(tmp_path, capsys):
    """Seeded end to end: two fresh homes, same command, bit-identical per-image metrics."""
    study = tmp_path / "one.yaml"
    study.write_text("title: t\nrows:\n  - {name: Ours, method: ours}\n")
    metrics = []
    for home in ("a", "b"):
        main(["run", str(study), "--preset", "smoke", "--home", str(tmp_path / home), "--quiet"])
        mlflow.set_tracking_uri(f"sqlite:///{tmp_path / home / 'mlflow.db'}")
        client = MlflowClient()
        (exp,) = [e for e in client.search_experiments() if e.name.startswith("one-")]
        (parent,) = [r for r in client.search_runs([exp.experiment_id]) if "mlflow.parentRunId" not in r.data.tags]
        metrics.append({k: v for k, v in parent.data.metrics.items() if "/" in k})
    capsys.readouterr()
    assert metrics[0] == metrics[1] and "test/psnr" in metrics[0]
