"""Rows that read nothing of the network (zs-n2n, NLM, BM3D) are scored once per study: the stored
results equal a direct scoring, a second network reads them without computing anything, and its
validation records are its own."""
from __future__ import annotations

import numpy as np
import pytest
import torch

import methods
from bench.adaptation import registry as R
from bench.adaptation import select
from bench.adaptation.evaluate import MEASURED, Target, score
from bench.data.base import ImagePair
from bench.studies import shared
from bench.studies.shared import SharedResults, network_free, result_key, score_shared

CPU = torch.device("cpu")


def _pairs(prefix: str, n: int, seed: int) -> list[ImagePair]:
    rng = np.random.default_rng(seed)
    out = []
    for i in range(n):
        clean = rng.uniform(0.2, 0.8, (24, 24, 3)).astype(np.float32)
        noisy = np.clip(clean + rng.normal(0, 0.08, clean.shape), 0, 1).astype(np.float32)
        out.append(ImagePair(f"{prefix}{i}/t00/d0", clean, noisy))
    return out


def _net(seed: int) -> torch.nn.Module:
    torch.manual_seed(seed)
    return methods.create("ours", base=4, scale=2, mask_base=4)


def _results(rows: list[dict]) -> list[dict]:
    return [{k: v for k, v in r.items() if k not in MEASURED} for r in rows]


def test_which_entries_are_shared():
    assert [e.name for e in R.entries() if network_free(e)] == ["zs-n2n", "nlm", "bm3d"]


@pytest.mark.parametrize("name,grid", [("nlm", {"h_factor": [0.6, 1.0]}),
                                       ("zs-n2n", {"lr": [1e-3, 1e-2], "steps": [1, 2]})])
def test_shared_results_equal_a_direct_scoring_and_are_read_by_the_next_network(tmp_path, monkeypatch, name, grid):
    entry = R.get(name).with_(steps=2) if R.get(name).learns else R.get(name)
    val, targets = _pairs("v", 2, 1), [Target("test", "s", _pairs("p", 3, 2))]
    store = SharedResults(tmp_path)
    first, second = _net(0), _net(1)
    chosen, rows, records = score_shared(store, first, entry, targets, CPU, grid=grid, select_pairs=val)
    d_chosen, d_rows, d_records = score(first, entry, targets, CPU, seed=shared.SEED, grid=grid, select_pairs=val)
    assert chosen == d_chosen and _results(rows) == _results(d_rows) and records == d_records
    assert store.path(result_key(entry, grid, val, targets)).exists()

    def recompute(*a, **k):
        raise AssertionError("a shared row computed again")
    monkeypatch.setattr(shared, "candidate_curves", recompute)
    monkeypatch.setattr(shared, "evaluate", recompute)
    again, rows2, records2 = score_shared(store, second, entry, targets, CPU, grid=grid, select_pairs=val)
    assert again == chosen and rows2 == rows
    # the other network's validation gains: the same candidate PSNRs over its own no-adaptation PSNR
    base1, base2 = (select.no_adaptation(m, val, CPU).mean() for m in (first, second))
    assert [r["val_gain_db"] for r in records2] == pytest.approx([r["val_gain_db"] + base1 - base2 for r in records])
    assert [r.get("chosen") for r in records2] == [r.get("chosen") for r in records]


def test_the_key_follows_the_pixels_and_the_grid():
    entry, val, targets = R.get("nlm"), _pairs("v", 1, 1), [Target("test", "s", _pairs("p", 1, 2))]
    key = result_key(entry, {"h_factor": [1.0]}, val, targets)
    assert key == result_key(entry, {"h_factor": [1.0]}, _pairs("v", 1, 1), targets)
    assert key != result_key(entry, {"h_factor": [1.2]}, val, targets)
    assert key != result_key(entry, {"h_factor": [1.0]}, _pairs("v", 1, 3), targets)
    assert key != result_key(entry, {"h_factor": [1.0]}, val, [Target("test", "s", _pairs("p", 1, 4))])


SHARED_STUDY = """title: shared
scenarios: [in-distribution]
rows:
  - {name: none, method: ours, adapt: none}
  - {name: nlm, method: ours, adapt: nlm, select: {h_factor: [0.8, 1.2]}}
  - {name: zs-n2n, method: ours, adapt: zs-n2n}
"""


@pytest.mark.slow
def test_a_study_scores_a_network_free_row_once_and_logs_it_for_every_seed(tmp_path, run_cli, monkeypatch):
    import csv
    import os

    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    os.environ.setdefault("MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR", "false")
    study, home = tmp_path / "shared.yaml", tmp_path / "home"
    study.write_text(SHARED_STUDY)
    code, out, err = run_cli("run", study, "--preset", "smoke", "--seeds", "0,1", "--home", home, "--quiet")
    assert code == 0, err
    assert len(list((home / "cache").glob("row-*.json"))) == 2  # nlm and zs-n2n, once each
    import mlflow
    from mlflow.tracking import MlflowClient

    mlflow.set_tracking_uri(f"sqlite:///{home / 'mlflow.db'}")
    client = MlflowClient()
    exp = next(e for e in client.search_experiments() if e.name.startswith("shared-smoke-"))
    rows: dict = {}
    for run in client.search_runs([exp.experiment_id]):
        if "row" in run.data.tags:
            path = client.download_artifacts(run.info.run_id, "images.csv", str(tmp_path / run.info.run_id))
            with open(path) as f:
                rows[run.data.tags["row"], run.data.tags["seed"]] = [
                    {k: v for k, v in r.items() if k not in (*MEASURED, "seed")} for r in csv.DictReader(f)]
    for name in ("nlm", "zs-n2n"):
        assert rows[name, "0"] == rows[name, "1"], name  # the same results, logged under each seed
    assert rows["none", "0"] != rows["none", "1"]  # paired with each seed's own network
    assert "│ nlm " in out and "│ zs-n2n " in out
