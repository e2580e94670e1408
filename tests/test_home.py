"""The bench home's layout is an on-disk format: homes made by earlier versions must keep working."""
from __future__ import annotations

import pickle
from pathlib import Path

from bench.core.home import Home


def test_the_layout_of_a_home_never_changes():
    h = Home(Path("/h"))
    assert (h.journal, h.tracking_db, h.tracking_db_aside, h.artifacts, h.tracking_lock, h.cache, h.locks, h.studies) \
        == tuple(Path("/h", n) for n in ("optuna.journal", "mlflow.db", "mlflow.db.incomplete", "mlartifacts",
                                         ".mlflow.lock", "cache", "locks", "studies"))
    assert h.study_file("tuned-ours") == Path("/h/studies/tuned-ours.yaml")
    assert h.tracking_uri == "sqlite:////h/mlflow.db" and h.artifacts_uri == "file:///h/mlartifacts"
    assert h.journal_label == "journal:/h/optuna.journal"  # a tag on MLflow runs: old runs carry it


def test_resolve_takes_the_option_then_the_environment_then_dot_bench(monkeypatch):
    monkeypatch.delenv("BENCH_HOME", raising=False)
    assert Home.resolve() == Home(Path(".bench")) and str(Home.resolve()) == ".bench"  # as given, not absolute
    assert Home.resolve().journal_label == "journal:.bench/optuna.journal"
    monkeypatch.setenv("BENCH_HOME", "/env/home")
    assert Home.resolve().root == Path("/env/home") and Home.resolve("opt").root == Path("opt")
    h = Home.resolve("opt")
    assert Home.resolve(h) is h and Home.of(h) is h and Home.of("opt") == h
    assert pickle.loads(pickle.dumps(h)) == h and Path(h) == Path("opt")  # workers get it; os.fspath works
