"""One adaptation concept: every entry behaves the same whole or tiled, and Table 2's "with
meta-test" row is the alg3 entry run by the one evaluator."""
from __future__ import annotations

import csv
import os

import numpy as np
import pytest
import torch

import methods
from bench.adaptation import registry as R
from bench.inference import tiled
from bench.inference.tiling import Tile

H, W = 36, 44
FEW_STEPS = {"lan-offset": 3, "ssl-finetune": 3, "zs-n2n": 4}  # the published budgets are long for a unit test


@pytest.fixture(scope="module")
def model():
    torch.manual_seed(0)
    return methods.create("ours", base=8, scale=4, mask_base=8).eval()


@pytest.fixture(scope="module")
def image():
    rng = np.random.default_rng(1)
    return torch.from_numpy(rng.random((1, 3, H, W), dtype=np.float32))


def entries():
    """Every entry a user can run (the evaluation-only oracle needs the clean image: no tiling)."""
    out = []
    for name in R.names(selectable=True):
        e = R.get(name)
        if e.learns:
            e = e.with_(steps=FEW_STEPS.get(name, 3), lr=1e-2 if e.optimizer == "sgd" else 1e-3)
        out.append(e)
    return out


@pytest.mark.parametrize("entry", entries(), ids=lambda e: e.name)
def test_one_tile_covering_the_image_equals_the_whole_image(model, image, entry):
    job = tiled.Job(model, entry, torch.device("cpu"), before=True, trajectory=True, mask=True)
    whole = tiled.whole(job, image)
    one = [Tile(0, H, 0, W)]
    per = tiled.per_tile(job, image, one, overlap=0)
    assert torch.equal(per["after"], whole["after"].reshape(per["after"].shape))
    assert len(per["steps"]) == len(whole["steps"]) == (entry.steps + 1 if entry.learns else 1)
    if job.adapting:  # the steps moved the prediction: the comparison can fail
        assert (whole["steps"][-1] - whole["steps"][0]).abs().max() > 1e-5
    if job.joinable:
        joint = tiled.joint(job, image, one, overlap=0, cache_bytes=2**30)
        torch.testing.assert_close(joint["after"], whole["after"].reshape(joint["after"].shape), rtol=0, atol=1e-6)
        for a, b in zip(joint["steps"], whole["steps"]):
            torch.testing.assert_close(a, b.reshape(a.shape), rtol=0, atol=1e-6)


def test_official_tiled_keeps_the_official_loop(model, image):
    """mask > 0.5 and the prediction after K − 1 updates, whole or jointly over tiles."""
    official = R.get("official").with_(steps=3, lr=1e-3)
    job = tiled.Job(model, official, torch.device("cpu"), trajectory=True)
    whole = tiled.whole(job, image)
    assert torch.equal(whole["after"], whole["steps"][2])  # after K − 1 = 2 updates
    joint = tiled.joint(job, image, [Tile(0, H, 0, W)], overlap=0, cache_bytes=2**30)
    torch.testing.assert_close(joint["after"], joint["steps"][2])
    alg3 = tiled.whole(tiled.Job(model, R.get("alg3").with_(steps=3, lr=1e-3, optimizer="adam"), torch.device("cpu")),
                       image)
    assert not torch.equal(alg3["after"], whole["after"])


def test_an_entry_that_cannot_adapt_jointly_says_so(model, image):
    job = tiled.Job(model, R.get("zs-n2n").with_(steps=2), torch.device("cpu"))
    assert not job.joinable
    with pytest.raises(ValueError, match="adapt it per tile"):
        tiled.joint(job, image, [Tile(0, H, 0, W)], overlap=0, cache_bytes=2**30)


STUDY = """\
title: "Table 2's meta-test row beside the alg3 entry"
rows:
  - {name: "Ours with meta-test", method: ours, metatest: true}
  - {name: "alg3 from the preset", method: ours, adapt: alg3, adapt_from: metatest}
"""


@pytest.mark.slow
def test_table2_meta_test_row_equals_the_alg3_row(tmp_path, run_cli, monkeypatch):
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    os.environ.setdefault("MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR", "false")
    study = tmp_path / "same.yaml"
    study.write_text(STUDY)
    home = tmp_path / "home"
    code, _, err = run_cli("run", study, "--preset", "smoke", "--home", home, "--quiet")
    assert code == 0, err
    import mlflow
    from mlflow.tracking import MlflowClient

    mlflow.set_tracking_uri(f"sqlite:///{home / 'mlflow.db'}")
    client = MlflowClient()
    exp = next(e for e in client.search_experiments() if e.name.startswith("same-smoke-"))
    rows = {}
    for run in client.search_runs([exp.experiment_id]):
        if "row" in run.data.tags and run.data.params.get("adapt"):
            path = client.download_artifacts(run.info.run_id, "images.csv", str(tmp_path / run.info.run_id))
            with open(path) as f:
                rows[run.data.tags["row"]] = {(r["split"], r["image"]): r for r in csv.DictReader(f)}
            assert run.data.params["adapt"] == "alg3" and run.data.params["metatest"] == "True"
    table2, alg3 = rows["Ours with meta-test"], rows["alg3 from the preset"]
    assert table2.keys() == alg3.keys() and {s for s, _ in table2} == {"val", "test"}
    for key in table2:
        for col in ("psnr", "ssim", "ssim_gauss", "psnr_float", "updates"):
            assert table2[key][col] == alg3[key][col], (key, col)


@pytest.mark.parametrize("optimizer", ["sgd", "adam"])
@pytest.mark.parametrize("scope", ["heads", "all"])
def test_the_executor_runs_alg3_as_the_batched_meta_test_kernel(model, image, optimizer, scope):
    """``adapt_image`` with the preset's entry and ``inner.meta_test`` (the batched kernel ``bench
    perf`` times) compute the same prediction bit for bit."""
    from bench.adaptation.inner import meta_test
    from bench.adaptation.run import adapt_image

    entry = R.get("alg3").with_(steps=3, lr=1e-2 if optimizer == "sgd" else 1e-3, optimizer=optimizer)
    if scope == "all":
        entry = R.for_recipe(entry, methods.get("ours-body-head").recipe)
        assert entry.moves == "all"
    got = adapt_image(entry, model, image, diagnostics=False).prediction
    want = meta_test(model, image, steps=3, lr=entry.lr, scope=scope, optimizer=optimizer)
    assert torch.equal(got, want)
