"""Plugins: examples/plugin, installed from its own folder, shows up in the listings and in study
rows with no harness file edited; broken plugins are one line naming the plugin and the problem.

The example plugin is installed into a temporary target folder (``pip install --target``, offline,
no build isolation) that the tests put on ``sys.path`` and ``PYTHONPATH``: the venv is left as it
was, so the other tests see only the built-in entries. Broken plugins are fake distributions (a
``.dist-info`` folder with an ``entry_points.txt``) written into a temporary folder.
"""
from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from bench.adaptation import registry as R

ROOT = Path(__file__).resolve().parent.parent
EXAMPLE = ROOT / "examples" / "plugin"
DIST = "ttaid-bench-example-plugin 0.1.0"


@pytest.fixture(scope="session")
def example_site(tmp_path_factory) -> Path:
    """examples/plugin installed (from a copy, so its folder gets no build files) into a fresh folder."""
    tmp = tmp_path_factory.mktemp("example-plugin")
    src, site = tmp / "src", tmp / "site"
    shutil.copytree(EXAMPLE, src, ignore=shutil.ignore_patterns("build", "*.egg-info", "__pycache__"))
    res = subprocess.run([sys.executable, "-m", "pip", "install", "--quiet", "--no-deps", "--no-build-isolation",
                          "--no-index", "--disable-pip-version-check", "--target", str(site), str(src)],
                         capture_output=True, text=True, timeout=300, check=False)
    assert res.returncode == 0, res.stderr
    return site


def on_path(monkeypatch, *folders: Path) -> None:
    """Make the distributions in ``folders`` visible to this process and its children."""
    for f in folders:
        monkeypatch.syspath_prepend(str(f))
    monkeypatch.setenv("PYTHONPATH", ":".join(map(str, folders)))
    R.refresh()


@pytest.fixture
def example(monkeypatch, example_site):
    on_path(monkeypatch, example_site)
    yield example_site
    monkeypatch.undo()
    R.refresh()


def test_the_example_plugin_is_listed_with_its_distribution(example, run_cli):
    code, out, err = run_cli("methods", "--json")
    assert code == 0, err
    rows = {r["name"]: r for r in json.loads(out)}
    assert rows["dncnn"]["source"] == DIST and rows["ours"]["source"] == "built-in"
    assert rows["dncnn"]["recipe"]["finetune"] == "supervised" and rows["dncnn"]["params"]["restorer"] > 0
    code, out, err = run_cli("adaptations", "--json")
    assert code == 0, err
    rows = {r["name"]: r for r in json.loads(out)}
    n2s = rows["n2s-finetune"]
    assert (n2s["source"], n2s["moves"], n2s["loss"], n2s["requires"]) == (DIST, "all", "blind-spot", "restorer")
    assert rows["alg3"]["source"] == "built-in"
    code, out, _ = run_cli("methods")  # the table says where each row comes from
    assert code == 0 and "ttaid-bench-example-plugin" in out and "built-in" in out


def test_the_example_studies_resolve_beside_built_in_rows(example):
    from bench.studies.plan import check_study
    from bench.studies.spec import read_study

    plans = check_study(read_study(EXAMPLE / "studies" / "plugin-tta.yaml"), "plugin-tta")
    by_row = {p.name: p for p in plans}
    assert by_row["DnCNN n2s-finetune"].entry.objective.name == "blind-spot"
    assert by_row["RIDNet n2s-finetune"].method.source == "built-in"
    assert by_row["DnCNN ssl-finetune"].method.source == DIST
    plans = check_study(read_study(EXAMPLE / "studies" / "plugin-table2.yaml"), "plugin-table2")
    assert [p.method.name for p in plans] == ["ridnet", "dncnn"]


def test_the_plugin_adaptation_lowers_its_own_loss(example):
    import torch

    import methods
    from bench.adaptation.run import adapt_image

    torch.manual_seed(0)
    model = methods.create("dncnn")
    noisy = torch.rand(1, 3, 20, 24)
    r = adapt_image(R.get("n2s-finetune").with_(steps=3, lr=1e-3), model, noisy)
    assert r.losses[-1] < r.losses[0] and set(r.moved) == {k for k, _ in model.named_parameters()}


# ---- a factory named in the study file --------------------------------------------------------------

FACTORY = '''
from torch import nn


class Tiny(nn.Module):
    def __init__(self):
        super().__init__()
        self.conv = nn.Conv2d(3, 3, 3, padding=1)

    def forward(self, x):
        return x - self.conv(x)


def build():
    """A one-conv denoiser named in a study file."""
    return Tiny()


def build_cropping():
    return nn.Conv2d(3, 3, 3)  # no padding: 2 pixels smaller
'''


def test_a_study_row_may_name_a_factory(tmp_path, monkeypatch):
    import methods
    from bench.studies.plan import check_study
    from bench.studies.spec import read_study

    (tmp_path / "mynets.py").write_text(FACTORY)
    on_path(monkeypatch, tmp_path)
    study = tmp_path / "s.yaml"
    study.write_text("title: t\nrows:\n  - {name: mine, method: 'mynets:build'}\n  - {name: r, method: ridnet}\n")
    (mine, _) = check_study(read_study(study), str(study))
    assert mine.method.name == mine.method.arch == "mynets:build" and mine.method.source == "mynets:build"
    assert methods.get("mynets:build").describe()["description"] == "A one-conv denoiser named in a study file."
    R.refresh()


# ---- broken plugins -------------------------------------------------------------------------------

MODULE = '''
from torch import nn
from bench.adaptation.families import RestorerWeights
from bench.adaptation.registry import Adaptation


def cropping():
    return nn.Conv2d(3, 3, 3)  # no padding: the output is 2 pixels smaller than the input


class Nothing(RestorerWeights):
    name = "nothing-selected"

    def select(self, restorer):
        return {}


STILL = Adaptation("still", Nothing(), "zs-n2n", "moves nothing", "a test", optimizer="adam", steps=2, lr=1e-3)
'''


def fake_dist(site: Path, dist: str, groups: dict[str, dict[str, str]]) -> None:
    """A distribution ``dist`` 0.1 declaring ``groups`` ({group: {name: "module:attr"}})."""
    info = site / f"{dist.replace('-', '_')}-0.1.dist-info"
    info.mkdir(parents=True)
    (info / "METADATA").write_text(f"Metadata-Version: 2.1\nName: {dist}\nVersion: 0.1\n")
    (info / "entry_points.txt").write_text("".join(
        f"[{g}]\n" + "".join(f"{n} = {v}\n" for n, v in eps.items()) for g, eps in groups.items()))


M, A = "ttaid_bench.methods", "ttaid_bench.adaptations"
BAD = {
    "fails to import": ({"bad-a": {M: {"broken": "no_such_module:build"}}}, "methods", "broken",
                        ["method 'broken'", "plugin bad-a 0.1", "fails to import", "no_such_module"]),
    "duplicate name": ({"bad-a": {M: {"twin": "badplug:cropping"}}, "bad-b": {M: {"twin": "badplug:cropping"}}},
                       "methods", "twin", ["method 'twin'", "defined twice", "bad-a 0.1", "bad-b 0.1"]),
    "a built-in's name": ({"bad-a": {A: {"alg3": "badplug:STILL"}}}, "adaptations", "alg3",
                          ["adaptation 'alg3'", "plugin bad-a 0.1", "taken by a built-in"]),
    "shape contract": ({"bad-a": {M: {"cropper": "badplug:cropping"}}}, "methods", "cropper",
                       ["method 'cropper'", "plugin bad-a 0.1", "shape (1, 3, 32, 32)",
                        "returned a torch.float32 tensor of shape (1, 3, 30, 30)"]),
    "moves no parameter": ({"bad-a": {A: {"still": "badplug:STILL"}}}, "adaptations", "still",
                           ["adaptation 'still'", "plugin bad-a 0.1", "moves no parameter"]),
}


@pytest.mark.parametrize("case", list(BAD))
def test_a_broken_plugin_is_one_line_and_exit_2(case, tmp_path, monkeypatch, run_cli):
    dists, listing, name, words = BAD[case]
    site = tmp_path / "site"
    site.mkdir()
    (site / "badplug.py").write_text(MODULE)
    for dist, groups in dists.items():
        fake_dist(site, dist, groups)
    on_path(monkeypatch, site)
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    code, _, err = run_cli(listing)
    assert code == 2 and err.startswith("error: ") and len(err.strip().splitlines()) == 1, err
    assert all(w in err for w in words), err
    # a study that names it stops before anything is written: no home, no MLflow run
    row = f"{{name: r, method: {name}}}" if listing == "methods" else f"{{name: r, method: ridnet, adapt: {name}}}"
    study = tmp_path / "s.yaml"
    study.write_text(f"title: t\nscenarios: [in-distribution]\nrows:\n  - {row}\n")
    code, _, err = run_cli("run", study, "--preset", "smoke", "--home", tmp_path / "h")
    assert code == 2 and len(err.strip().splitlines()) == 1 and all(w in err for w in words), err
    assert not (tmp_path / "h").exists()
    R.refresh()


# ---- the example's studies, run (slow) ----------------------------------------------------------

def table_rows(out: str) -> dict[str, str]:
    return {line.split("│")[1].strip(): line for line in out.splitlines() if line.startswith("│")}


@pytest.mark.slow
@pytest.mark.parametrize("study, rows", [
    ("plugin-table2", ["RIDNet", "DnCNN (plugin)"]),
    ("plugin-tta", ["DnCNN n2s-finetune", "DnCNN ssl-finetune", "RIDNet n2s-finetune"]),
])
def test_the_example_studies_run_with_plugin_rows_beside_built_in_ones(example, study, rows, tmp_path, run_cli,
                                                                      monkeypatch, mlflow_client):
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    home = tmp_path / "home"
    code, out, err = run_cli("run", EXAMPLE / "studies" / f"{study}.yaml", "--preset", "smoke", "--home", home,
                             "--quiet")
    assert code == 0, err
    shown = table_rows(out)
    assert all(any(r in line for line in shown.values()) for r in rows), out
    client = mlflow_client(home)
    runs = [r for e in client.search_experiments() for r in client.search_runs([e.experiment_id])]
    assert {r.data.params.get("method") for r in runs} >= {"dncnn", "ridnet"}
    assert all(r.info.status == "FINISHED" for r in runs)
