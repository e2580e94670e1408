"""`bench run table2 --preset smoke` end to end: table, MLflow contents, a free second run, a new seed."""
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from bench.adaptation.evaluate import MEASURED
from bench.runtime import tags

pytestmark = pytest.mark.slow


def table_rows(out):
    return {line.split("│")[1].strip(): line for line in out.splitlines() if line.startswith("│")}


def cells(line):
    return [c.strip() for c in line.split("│")[1:-1]]


def parent_runs(client, prefix):
    exp = next(e for e in client.search_experiments() if e.name.startswith(prefix))
    runs = client.search_runs([exp.experiment_id])
    return exp, runs, [r for r in runs if tags.PARENT not in r.data.tags and tags.ROW in r.data.tags]


def test_smoke_study_runs_and_is_tracked(smoke_home, run_cli, mlflow_client, monkeypatch):
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    rows = table_rows(smoke_home.out)
    assert list(rows) == ["Noisy input", "Ours without meta-test", "Ours with meta-test", "RIDNet", "MIRNet"]
    assert "0.66 M / 0.059 M" in rows["Ours with meta-test"]

    client = mlflow_client(smoke_home.home)
    exp, runs, parents = parent_runs(client, "table2-smoke-")
    assert all(r.info.status == "FINISHED" for r in runs)
    stages = [r for r in runs if tags.PARENT in r.data.tags]
    assert len(parents) == 4
    assert all({"test/psnr", "val/psnr", "params/restorer"} <= set(p.data.metrics) for p in parents)
    assert sorted(p.data.params["method"] for p in parents) == ["mirnet", "ours", "ours", "ridnet"]
    # each row's printed test PSNR is its run's mean over the images (one seed)
    for p in parents:
        assert cells(rows[p.data.tags[tags.ROW]])[3] == f"{p.data.metrics['test/psnr']:.2f}"
    # the reference row is logged once, as per-image rows of its own run
    (ref,) = [r for r in runs if tags.REFERENCE in r.data.tags]
    assert ref.data.tags[tags.REFERENCE] == "val" and "images.csv" in {a.path for a in client.list_artifacts(
        ref.info.run_id)}
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
    for p in parents:  # the checkpoint's run is the stage run that trained it
        assert p.data.tags[tags.CHECKPOINT_RUN] in {s.info.run_id for s in trained}
    ft = next(s for s in trained if s.data.tags["stage"] == "finetune" and "cfg.steps" in s.data.params)
    assert "finetune/val_psnr" in ft.data.metrics and "cfg.steps" in ft.data.params
    arts = {a.path for a in client.list_artifacts(parents[0].info.run_id)}
    assert {"config.json", "images.csv"} <= arts

    # a second run trains nothing, adds no run, and prints the same numbers
    code, again, _ = run_cli("run", "table2", "--preset", "smoke", "--home", smoke_home.home, "--quiet")
    assert code == 0 and len(client.search_runs([exp.experiment_id])) == len(runs)
    strip = lambda text: {k: re.sub(r"\s+", " ", v) for k, v in table_rows(text).items()}  # noqa: E731
    assert strip(again) == strip(smoke_home.out)


def test_rows_added_with_a_new_seed_reuse_nothing_and_finish(smoke_home, run_cli, mlflow_client, tmp_path):
    home = tmp_path / "home"
    shutil.copytree(smoke_home.home, home)
    code, out, _ = run_cli("run", "table2", "--preset", "smoke", "--home", home, "--quiet", "--seeds", "0,1")
    assert code == 0
    client = mlflow_client(home)
    _, runs, parents = parent_runs(client, "table2-smoke-")
    new = [p for p in parents if p.data.tags[tags.SEED] == "1"]
    assert len(parents) == 8 and len(new) == 4
    # seed 1 trains its own stages: nothing of seed 0 is reused (only its own shared Ours fine-tuning)
    stages = [r for r in runs if r.data.tags.get(tags.PARENT) in {p.info.run_id for p in new}]
    assert sorted(s.data.tags["stage"] for s in stages if s.data.tags[tags.REUSED] == "false") == \
        ["finetune", "finetune", "finetune", "pretrain"]
    (shared,) = [s for s in stages if s.data.tags[tags.REUSED] == "true"]
    assert shared.data.tags[tags.TRAINED_IN_RUN] in {s.info.run_id for s in stages}
    # two seeds: the cell is the mean ± sample std of the two runs' means over the images
    for row in ("Ours with meta-test", "RIDNet"):
        vals = [p.data.metrics["test/psnr"] for p in parents if p.data.tags[tags.ROW] == row]
        assert cells(table_rows(out)[row])[3] == f"{np.mean(vals):.2f} ± {np.std(vals, ddof=1):.2f}"
        assert cells(table_rows(out)[row])[6] == "2"


def test_same_seed_gives_identical_metrics_on_cpu(tmp_path, run_cli, mlflow_client):
    """Seeded end to end: two fresh homes, same command, bit-identical per-image metrics (the
    adaptation's measured wall time and memory are measurements, not results)."""
    study = tmp_path / "one.yaml"
    study.write_text("title: t\nrows:\n  - {name: Ours, method: ours}\n")
    metrics = []
    for home in ("a", "b"):
        assert run_cli("run", study, "--preset", "smoke", "--home", tmp_path / home, "--quiet")[0] == 0
        _, _, (parent,) = parent_runs(mlflow_client(tmp_path / home), "one-")
        metrics.append({k: v for k, v in parent.data.metrics.items()
                        if "/" in k and k.rsplit("/", 1)[1] not in MEASURED})
    assert metrics[0] == metrics[1] and "test/psnr" in metrics[0]


def test_a_wheel_install_runs_the_shipped_study_from_another_directory(smoke_home, tmp_path):
    """`pip install .` (not editable) into a fresh venv that sees the shared dependencies, then
    `bench run table2 --preset smoke` from elsewhere: the packaged study is found, the table is the same."""
    import torch

    root = Path(__file__).resolve().parent.parent
    src = tmp_path / "src"  # a copy: pip builds in the tree it is given
    for name in ("bench", "methods", "studies"):  # studies/: the shipped studies, installed as bench/studyfiles
        shutil.copytree(root / name, src / name, ignore=shutil.ignore_patterns("__pycache__"))
    for name in ("pyproject.toml", "README.md"):
        shutil.copy(root / name, src / name)
    venv = tmp_path / "venv"
    subprocess.run([sys.executable, "-m", "venv", "--without-pip", str(venv)], check=True)
    py = venv / "bin" / "python"
    purelib = subprocess.run([py, "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"],
                             capture_output=True, text=True, check=True).stdout.strip()
    shared = Path(torch.__file__).resolve().parent.parent  # where the shared dependencies live
    (Path(purelib) / "_ttaid_shared.pth").write_text(f"{shared}\n")
    pip = subprocess.run([py, "-m", "pip", "install", "-q", "--no-deps", "--no-build-isolation", str(src)],
                         capture_output=True, text=True, timeout=600)
    assert pip.returncode == 0, pip.stderr[-2000:]
    shutil.rmtree(src)  # the installed copy must not need its source
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    where = subprocess.run([py, "-c", "import bench; print(bench.__file__)"], cwd=elsewhere, capture_output=True,
                           text=True, check=True).stdout
    assert where.startswith(purelib), where
    env = {k: v for k, v in os.environ.items() if k not in ("MLFLOW_TRACKING_URI", "PYTHONPATH")}
    res = subprocess.run([venv / "bin" / "bench", "run", "table2", "--preset", "smoke", "--quiet", "--home",
                          smoke_home.home], cwd=elsewhere, capture_output=True, text=True, env=env, timeout=600)
    assert res.returncode == 0, res.stderr[-2000:]
    strip = lambda text: {k: re.sub(r"\s+", " ", v) for k, v in table_rows(text).items()}  # noqa: E731
    assert strip(res.stdout) == strip(smoke_home.out)
