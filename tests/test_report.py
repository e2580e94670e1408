"""`bench report`: tables from tidy rows (means, stds, bold, paired tests vs scipy), bad input, and
the whole report (tables, figures, LaTeX, HTML, MLflow) after a small smoke study."""
import math
import re
import subprocess

import numpy as np
import pandas as pd
import pytest
from scipy import stats as sps
from tools import headless_chromium, need_tool, run_browser

from bench.cli import main
from bench.report.runs import TIDY_COLUMNS, RowInfo, melt
from bench.report.stats import compare, find_pairs, min_p, paired_test, wilcoxon_p
from bench.report.summary import summarize
from bench.report.tables import latex_escape, pairs_table, study_table, to_html, to_latex, to_markdown
from bench.runtime.studyname import StudyName

RECIPE = {"pretrain": "maxl", "pretrain_aux": "mrl", "grad_loss": True, "finetune": "mtl", "inner_scope": "heads",
          "aux_loss": "mrl", "metatest": True}


def row(name, method="ours", metatest=True, stage="finetune", arch="ours", **recipe):
    return RowInfo(name, method, metatest, stage, arch, {**RECIPE, **recipe}, {"total": 659_809, "adapted": 58_752})


def tidy_rows(values: dict) -> pd.DataFrame:
    """values[(row, seed, split, metric)] = per-image values → long-form tidy rows."""
    recs = []
    for (r, seed, split, metric), vals in values.items():
        for i, v in enumerate(vals):
            recs.append({"study": "t-smoke-0123abcd", "row": r, "method": "ours", "seed": seed, "split": split,
                         "metatest": True, "image": f"img{i}", "metric": metric, "value": v, "run_id": f"{r}{seed}"})
    return pd.DataFrame(recs, columns=TIDY_COLUMNS)


# -- tables from hand-made tidy rows -------------------------------------------------------------

@pytest.fixture
def handmade():
    rng = np.random.default_rng(1)
    values = {}
    for r, base in (("A_1 & co", 30.0), ("B", 31.0)):
        for seed in (0, 1, 2):
            for split in ("val", "test"):
                values[(r, seed, split, "psnr")] = base + seed * 0.1 + rng.normal(0, 0.2, 4)
                values[(r, seed, split, "ssim")] = 0.9 - (base - 30) * 0.01 + rng.normal(0, 0.01, 4)  # A best
    values[("C", 0, "test", "psnr")] = [20.0, 21.0, 22.0, 23.0]
    return values


def test_summary_is_the_mean_and_sample_std_over_seeds_of_image_means(handmade):
    tidy = tidy_rows(handmade)
    s = summarize(tidy, ["B", "A_1 & co", "C"])
    assert list(dict.fromkeys(s.index.get_level_values("row"))) == ["B", "A_1 & co", "C"]
    seed_means = [np.mean(handmade[("B", seed, "test", "psnr")]) for seed in (0, 1, 2)]
    rec = s.loc[("B", "test", "psnr")]
    assert rec["mean"] == pytest.approx(np.mean(seed_means))
    assert rec["std"] == pytest.approx(np.std(seed_means, ddof=1))
    assert rec["n"] == 3
    assert math.isnan(s.loc[("C", "test", "psnr"), "std"]) and s.loc[("C", "test", "psnr"), "n"] == 1


def test_table_bolds_the_best_of_each_column_and_escapes_latex(handmade):
    tidy = tidy_rows(handmade)
    rows = [row("A_1 & co"), row("B"), row("C")]
    s = summarize(tidy, [r.name for r in rows])
    paper = {"B": {"test/psnr": 39.2653, "test/ssim": 0.9685, "val/psnr": 41.5, "val/ssim": 0.96},
             "C": {"test/psnr": 38.0, "test/ssim": 0.97, "val/psnr": 40.0, "val/ssim": 0.95}}
    doc = study_table("t", "T_1: 100% {x}", s, rows, paper, "embedded", "smoke", "t-smoke-0123abcd")
    header = doc.header
    by_row = {r[0].text: r for r in doc.rows}
    col = {h: i for i, h in enumerate(header[:7])}
    # B has the highest PSNRs, A the highest SSIMs; C's single test PSNR (seed 0) is the lowest
    assert by_row["B"][col["test PSNR"]].bold and by_row["B"][col["val PSNR"]].bold
    assert not by_row["A_1 & co"][col["test PSNR"]].bold and not by_row["C"][col["test PSNR"]].bold
    assert by_row["A_1 & co"][col["test SSIM"]].bold and not by_row["B"][col["test SSIM"]].bold
    mean = s.loc[("B", "test", "psnr"), "mean"]
    std = s.loc[("B", "test", "psnr"), "std"]
    assert by_row["B"][col["test PSNR"]].plain() == f"{mean:.2f} ± {std:.2f}"
    assert by_row["C"][col["test PSNR"]].plain() == "21.50"  # one seed: no ±
    assert by_row["C"][col["Seeds"]].text == "1" and by_row["B"][col["Seeds"]].text == "3"
    # the paper's columns: bold among the paper's values only (C's SSIM 0.97 > B's 0.9685)
    paper_ssim = len(header) - 1
    assert by_row["C"][paper_ssim].bold and not by_row["B"][paper_ssim].bold
    assert not any("Δ" in h for h in header)  # not the paper's data: no comparison column
    assert any("reference" in n for n in doc.notes)

    tex = to_latex(doc)
    assert "T\\_1: 100\\% \\{x\\}" in tex and "A\\_1 \\& co" in tex
    assert f"\\textbf{{{mean:.2f} $\\pm$ {std:.2f}}}" in tex
    assert tex.count("\\textbf{") == sum(c.bold for r in doc.rows for c in r)
    for env in ("table", "tabular"):
        assert tex.count(f"\\begin{{{env}}}") == tex.count(f"\\end{{{env}}}") == 1
    assert "\\toprule" in tex and "\\midrule" in tex and "\\bottomrule" in tex
    md = to_markdown(doc)
    assert f"**{mean:.2f} ± {std:.2f}**" in md and "A\\_1 & co" in md and "paper: test PSNR" in md
    html = to_html(doc)
    assert f"<b>{mean:.2f} ± {std:.2f}</b>" in html and "A_1 &amp; co" in html

    same = study_table("t", "T", s, rows, paper, "paper", "paper", "t-paper-0123abcd")
    assert same.header[-1].startswith("Δ test PSNR")
    assert same.rows[1][-1].text == f"{mean - 39.2653:+.2f}"


def test_latex_escape_is_pdflatex_safe():
    assert latex_escape("L_aux & 5% #1 $x ~ ^") == "L\\_aux \\& 5\\% \\#1 \\$x \\textasciitilde{} \\textasciicircum{}"
    assert latex_escape("a — b ± c × θ") == "a --- b $\\pm$ c $\\times$ $\\theta$"
    assert latex_escape("[-0.5, -1]") == "[$-$0.5, $-$1]" and latex_escape("--set") == "-{}-set"
    assert all(ord(c) < 128 for c in latex_escape("é 中 λ"))


def test_paired_test_matches_scipy_and_the_interval_covers_the_mean():
    rng = np.random.default_rng(0)
    d = rng.normal(0.03, 0.05, 40)
    res = paired_test(d)
    assert res["n"] == 40 and res["mean"] == pytest.approx(d.mean())
    assert res["p"] == pytest.approx(sps.wilcoxon(d).pvalue)
    assert res["lo"] < res["mean"] < res["hi"]
    assert paired_test(np.zeros(5))["p"] == 1.0 and wilcoxon_p(np.zeros(3)) == 1.0
    assert min_p(5) == pytest.approx(0.0625)


def test_compare_pairs_images_over_shared_seeds(handmade):
    values = dict(handmade)
    # "B without" = B minus a known per-image gain, seeds 0 and 1 only
    gain = np.array([0.01, 0.05, -0.02, 0.04])
    for seed in (0, 1):
        for split in ("val", "test"):
            for m in ("psnr", "ssim"):
                values[("B0", seed, split, m)] = np.asarray(values[("B", seed, split, m)]) - gain
    tidy = tidy_rows(values)
    rows = [row("B0", metatest=False), row("B", metatest=True)]
    pairs = find_pairs(rows)
    assert [(p.label, p.a, p.b) for p in pairs] == [("meta-test gain (with − without)", "B", "B0")]
    paper = {"B": {"test/psnr": 39.2653}, "B0": {"test/psnr": 39.2499}}
    c = compare(tidy, pairs, paper=paper).set_index(["split", "metric"])
    rec = c.loc[("test", "psnr")]
    b = np.mean([values[("B", s, "test", "psnr")] for s in (0, 1)], axis=0)  # seed 2 is not shared
    b0 = np.mean([values[("B0", s, "test", "psnr")] for s in (0, 1)], axis=0)
    assert rec["seeds"] == 2 and rec["n"] == 4 and (rec["photos"], rec["tiles"], rec["draws"]) == (4, 1, 1)
    assert rec["mean"] == pytest.approx(gain.mean()) and np.allclose(b - b0, gain)
    # both seeds see the same per-image gain: no seed variance, so the crossed model reduces to a
    # one-sample t test over the 4 images (3 df): se = sd/2, p = scipy's
    se = gain.std(ddof=1) / 2
    assert rec["df"] == pytest.approx(3) and rec["se"] == pytest.approx(se)
    assert rec["p"] == pytest.approx(sps.ttest_1samp(gain, 0).pvalue)
    assert rec["hi"] == pytest.approx(gain.mean() + sps.t.ppf(0.975, 3) * se)
    assert rec["paper_diff"] == pytest.approx(0.0154)
    assert not rec["distinguishable"] and rec["verdict"] == "not resolved"
    assert (c["p_holm"] >= c["p"] - 1e-12).all() and rec["margin"] == 0.02
    doc = pairs_table("x", "pairs", c.reset_index())
    assert any("Inference over training seeds and photographs" in n for n in doc.notes)
    assert doc.rows[0][4].text.count("×") == 3


def test_pairs_the_paper_discusses_are_found_with_the_paper_on_the_left():
    rows = [row("MRL"), row("RL", aux_loss="rl"), row("RI MRL", pretrain="none"),
            row("body+head", inner_scope="all"), row("RIDNet", method="ridnet", arch="ridnet", metatest=False,
                                                    pretrain="none", finetune="supervised", aux_loss="rl")]
    got = {(p.label, p.a, p.b) for p in find_pairs(rows)}
    assert got == {("MRL − RL", "MRL", "RL"), ("MAXL − RI", "MRL", "RI MRL"),
                   ("heads − body+head", "MRL", "body+head"), ("ours − RIDNet", "MRL", "RIDNet")}
    t1 = [row("joint", stage="pretrain", pretrain="joint", pretrain_aux="rl", grad_loss=False),
          row("chi", stage="pretrain", arch="chi", pretrain="joint", pretrain_aux="rl", grad_loss=False),
          row("maxl rl", stage="pretrain", pretrain_aux="rl"), row("maxl mrl", stage="pretrain", grad_loss=False),
          row("ours", stage="pretrain")]
    got = {(p.label, p.a, p.b) for p in find_pairs(t1)}
    assert ("our architecture − Chi et al.", "joint", "chi") in got
    assert ("MAXL − joint training", "maxl rl", "joint") in got
    assert ("L_MaskRec − L_rec", "maxl mrl", "maxl rl") in got
    assert ("with − without L_G", "ours", "maxl mrl") in got
    # `bench ablate`: a preset switch on one row is a pair too; the base meets every other row
    ab = [row("base"), row("fo"), row("nm", pretrain_aux="rl", aux_loss="rl"), row("nt", metatest=False)]
    ab[1].set = ("finetune.first_order=true",)
    got = [(p.label, p.a, p.b) for p in find_pairs(ab, base="base")]
    assert got == [("second − first-order MTL", "base", "fo"), ("meta-test gain (with − without)", "base", "nt"),
                   ("base − ablated", "base", "nm")]


def test_images_csv_melts_to_long_form():
    wide = pd.DataFrame([{"study": "s-smoke-0123abcd", "row": "r", "method": "ours", "seed": 0, "split": "test",
                          "metatest": "True", "image": "a/b", "psnr": 30.0, "ssim": 0.9, "ssim_gauss": 0.91}])
    long = melt(wide)
    assert list(long.columns) == [c for c in TIDY_COLUMNS if c != "run_id"]
    assert sorted(long["metric"]) == ["psnr", "ssim", "ssim_gauss"] and long["metatest"].all()
    assert StudyName.parse("table2-quick-1a2b3c4d") == StudyName("table2", "quick", "1a2b3c4d")
    assert StudyName.parse("my-study-smoke-1a2b3c4d") == StudyName("my-study", "smoke", "1a2b3c4d")
    assert StudyName.parse("Default") is None


def test_crop_lands_where_the_methods_differ():
    from bench.report.figures import crop_where

    a, b = np.zeros((60, 80)), np.zeros((60, 80))
    b[40:50, 10:20] = 1.0
    y, x = crop_where([a, b], 10)
    assert (y, x) == (40, 10)


# -- bad input -------------------------------------------------------------------------------------

def test_unknown_table_and_missing_runs_are_one_line_exit_2(run_cli, tmp_path, monkeypatch):
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    out = tmp_path / "out"
    code, _, err = run_cli("report", "table9", "--home", str(tmp_path), "--out", str(out))
    assert code == 2 and "unknown table 'table9'" in err and "table2" in err
    code, _, err = run_cli("report", "table2", "--preset", "smoke", "--home", str(tmp_path), "--out", str(out))
    assert code == 2 and "no finished runs of study 'table2'" in err
    assert f"bench run table2 --preset smoke --home {tmp_path}" in err
    code, _, err = run_cli("report", "--home", str(tmp_path), "--out", str(out))
    assert code == 2 and "no finished study runs" in err and "bench run" in err
    code, _, err = run_cli("report", "ablate", "--home", str(tmp_path), "--out", str(out))
    assert code == 2 and "no finished ablation studies" in err and "bench ablate" in err
    assert len(err.strip().splitlines()) == 1 and "Traceback" not in err
    assert not out.exists() and not (tmp_path / "mlflow.db").exists()  # reading creates nothing


@pytest.mark.slow
def test_report_prints_the_table_bench_run_printed(smoke_home, run_cli, tmp_path, monkeypatch):
    """One results path: `bench report` and `bench run` print the same study table from the same rows."""
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    code, out, err = run_cli("report", "table2", "--no-figures", "--no-log", "--markdown", "--out", tmp_path,
                             "--home", smoke_home.home)
    assert code == 0, err

    def study_table_lines(text):
        lines = text.splitlines()
        start = next(i for i, ln in enumerate(lines) if ln.startswith("Table 2"))
        end = next(i for i, ln in enumerate(lines) if i > start and ln.startswith("└"))
        return [re.sub(r"\s+", " ", ln) for ln in lines[start:end + 1]]

    assert study_table_lines(out) == study_table_lines(smoke_home.out)
    assert "Noisy input" in "".join(study_table_lines(out))


# -- the whole report after a smoke study ----------------------------------------------------------------

STUDY = """\
title: "Report test: ours with/without meta-test, random init, RIDNet"
rows:
  - {name: "Ours without meta-test", method: ours, metatest: false}
  - {name: "Ours with meta-test", method: ours, metatest: true}
  - {name: "RI + MTL, MRL", method: ours-ri}
  - {name: "RIDNet", method: ridnet}
paper:
  "Ours without meta-test": {val/psnr: 41.4792, val/ssim: 0.9633, test/psnr: 39.2499, test/ssim: 0.9672}
  "Ours with meta-test": {val/psnr: 41.5086, val/ssim: 0.9636, test/psnr: 39.2653, test/ssim: 0.9685}
  "RI + MTL, MRL": {val/psnr: 40.1913, val/ssim: 0.9554, test/psnr: 38.1708, test/ssim: 0.9628}
  "RIDNet": {val/psnr: 40.2185, val/ssim: 0.9497, test/psnr: 38.2214, test/ssim: 0.9621}
"""
FIGURES_NAMES = ("curves", "metatest_gain", "fig5_6_masks", "fig3_crops", "fig7_steps", "fig8_features")


@pytest.fixture(scope="module")
def smoke(tmp_path_factory):
    """A smoke study of 4 rows × 2 seeds (~30 s), then `bench report all --latex --markdown --html`."""
    base = tmp_path_factory.mktemp("report")
    home, out = base / "home", base / "reports"
    spec = base / "reptest.yaml"
    spec.write_text(STUDY)
    with pytest.MonkeyPatch.context() as mp:
        mp.delenv("MLFLOW_TRACKING_URI", raising=False)
        main(["run", str(spec), "--preset", "smoke", "--home", str(home), "--quiet", "--seeds", "0,1"])
        main(["report", "all", "--latex", "--markdown", "--html", "--out", str(out), "--home", str(home)])
    return home, out


@pytest.mark.slow
def test_report_writes_every_table_and_figure(smoke, capsys):
    home, out = smoke
    for name in ("reptest.tex", "reptest.md", "report.html", "data/reptest.csv"):
        assert (out / name).is_file(), name
    for fig in FIGURES_NAMES:
        for ext in ("png", "pdf"):
            path = out / "figures" / "reptest" / f"{fig}.{ext}"
            assert path.is_file() and path.stat().st_size > 1000, path
    assert not [p for p in out.iterdir() if p.name.startswith(".report-")]  # no temp folder left behind
    tidy = pd.read_csv(out / "data" / "reptest.csv")
    assert list(tidy.columns) == list(TIDY_COLUMNS)
    assert set(tidy["row"]) == {"Ours without meta-test", "Ours with meta-test", "RI + MTL, MRL", "RIDNet"}
    assert set(tidy["seed"]) == {0, 1} and {"psnr", "ssim", "ssim_gauss", "psnr_float"} <= set(tidy["metric"])
    md = (out / "reptest.md").read_text()
    assert "meta-test gain (with − without)" in md and "MAXL − RI" in md and "ours − RIDNet" in md
    assert "reference, not compared" in md and "MIRNet: panel skipped (no MIRNet row in this study)" in md
    assert "not found among the validation images" not in md  # Figs. 5/6 show each mask's noisy input
    line = next(ln for ln in md.splitlines() if ln.startswith("| Ours with meta-test |"))
    assert re.search(r"\d+\.\d\d ± \d+\.\d\d", line) and "| 2 |" in line  # mean ± std over 2 seeds
    # the numbers agree with what `bench run` logged per run (seed means of the images)
    t = tidy[(tidy.row == "RIDNet") & (tidy.split == "test") & (tidy.metric == "psnr")]
    mean = t.groupby("seed")["value"].mean()
    assert f"{mean.mean():.2f} ± {mean.std(ddof=1):.2f}" in md


@pytest.mark.slow
def test_figures_compute_what_they_show(smoke):
    """Each figure's data, not its PNG: panel counts, the rows shown, values in range, and Fig. 7's
    last step equal to the PSNR the study logged for that image with meta-test."""
    from mlflow.tracking import MlflowClient

    from bench.report.figures import FIGURES
    from bench.report.figures.common import Models, StudyData
    from bench.report.runs import find_study

    home, _ = smoke
    study = find_study(MlflowClient(tracking_uri=f"sqlite:///{home / 'mlflow.db'}"), "reptest", None)
    plain = [f for f in FIGURES if f.studies in ("plain", "any")]  # the TTA study's figures have their own test
    assert [f.name for f in plain] == list(FIGURES_NAMES)
    assert {f.name for f in FIGURES if f.needs_model} == {"fig3_crops", "fig7_steps", "fig8_features"}
    data, models = StudyData(study), Models(study)
    got = {f.name: f.module.compute(study, data, models if f.needs_model else None) for f in plain}
    n_test = len(data.data.test)
    plausible = lambda v: np.isfinite(v) and 5 < v < 80  # noqa: E731 — dB

    curves = got["curves"]
    assert curves.panels and all(lines for _, lines in curves.panels)
    assert {ln.row for _, lines in curves.panels for ln in lines} >= {"Ours without meta-test", "RIDNet"}
    assert any(k.endswith("psnr") for k, _ in curves.panels)
    assert all(np.isfinite(v) for _, lines in curves.panels for ln in lines for _, v in ln.points)

    (pair,) = got["metatest_gain"].pairs
    assert (pair.a, pair.b) == ("Ours with meta-test", "Ours without meta-test")
    without, with_ = pair.points["test"]
    assert len(without) == len(with_) == n_test and all(map(plausible, [*without, *with_]))
    assert pair.test["n"] == n_test and pair.test["mean"] == pytest.approx(float(np.mean(with_ - without)))

    masks = got["fig5_6_masks"]
    assert {p.group for p in masks.panels} == {"MAXL-pretrained", "RI"}
    for p in masks.panels:
        assert p.frames and p.noisy is not None and p.noisy.shape[2] == 3
        assert all(0 <= a.min() and a.max() <= 1 and a.shape == p.noisy.shape[:2] for _, a in p.frames)

    crops = got["fig3_crops"]
    labels = [p.label for p in crops.panels]
    assert labels[:3] == ["Noisy input", "RIDNet", "MIRNet"] and labels[-1] == "Ground truth"
    assert labels[3] == "Ours, before adaptation" and labels[4].startswith("Ours, after adaptation (K=")
    assert crops.panels[2].image is None and "no MIRNet row" in crops.panels[2].note
    drawn = [p for p in crops.panels if p.image is not None]
    assert len(drawn) == 5 and all(p.image.shape == crops.noisy.shape for p in drawn)
    assert all(plausible(p.psnr) for p in drawn[:-1])
    y, x = crops.corner
    assert 0 <= y <= crops.noisy.shape[0] - crops.size and 0 <= x <= crops.noisy.shape[1] - crops.size

    steps = got["fig7_steps"]
    k = study.row_preset("Ours with meta-test").metatest.steps
    assert len(steps.frames) == len(steps.psnrs) == k + 1 and all(map(plausible, steps.psnrs))
    assert len(steps.curves) == min(8, n_test) and all(len(v) == k + 1 for v in steps.curves.values())
    tidy = study.tidy
    logged = tidy[(tidy.split == "test") & (tidy.metric == "psnr") & (tidy.image == steps.image)
                  & (tidy.seed == steps.seed)].set_index("row")["value"]
    assert steps.psnrs[0] == pytest.approx(logged["Ours without meta-test"], abs=1e-4)
    assert steps.psnrs[-1] == pytest.approx(logged["Ours with meta-test"], abs=1e-4)

    feats = got["fig8_features"]
    assert feats.before.shape == feats.after.shape and feats.before.shape[0] == len(feats.channels) == 4
    assert feats.before.shape[1:] == feats.noisy.shape[:2] and np.abs(feats.after - feats.before).max() > 0
    assert feats.mask is not None and 0 <= feats.mask.min() and feats.mask.max() <= 1


@pytest.mark.slow
def test_report_is_logged_to_mlflow_beside_the_rows(smoke):
    from mlflow.tracking import MlflowClient

    home, _ = smoke
    client = MlflowClient(tracking_uri=f"sqlite:///{home / 'mlflow.db'}")
    exp = next(e for e in client.search_experiments() if e.name.startswith("reptest-smoke-"))
    reports = client.search_runs([exp.experiment_id], "tags.bench_report = 'true'")
    assert len(reports) == 1
    arts = {a.path for a in client.list_artifacts(reports[0].info.run_id, "report/figures")}
    assert {f"report/figures/{f}.png" for f in FIGURES_NAMES} <= arts
    assert len(client.search_runs([exp.experiment_id], "tags.row != ''")) == 8  # the report run is no row


@pytest.mark.slow
def test_run_ids_select_runs_and_a_rerun_reuses_the_report_run(smoke, capsys, run_cli, tmp_path, monkeypatch):
    from mlflow.tracking import MlflowClient

    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    home, _ = smoke
    client = MlflowClient(tracking_uri=f"sqlite:///{home / 'mlflow.db'}")
    exp = next(e for e in client.search_experiments() if e.name.startswith("reptest-smoke-"))
    seed0 = [r.info.run_id for r in client.search_runs([exp.experiment_id], "tags.seed = '0'")]
    args = ["report", "reptest", "--no-figures", "--markdown", "--out", str(tmp_path), "--home", str(home)]
    main([*args, *[x for rid in seed0 for x in ("--run-id", rid)]])
    capsys.readouterr()
    md = (tmp_path / "reptest.md").read_text()
    line = next(ln for ln in md.splitlines() if ln.startswith("| RIDNet |"))
    assert " ± " not in line and "| 1 |" in line  # one seed
    assert not (tmp_path / "reptest.tex").exists()  # only the asked format
    assert len(client.search_runs([exp.experiment_id], "tags.bench_report = 'true'")) == 1
    code, _, err = run_cli(*args, "--run-id", "0" * 32)
    assert code == 2 and "--run-id" in err


@pytest.mark.slow
def test_unwritable_out_is_one_line_and_writes_nothing(smoke, run_cli, tmp_path, monkeypatch):
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    home, _ = smoke
    blocker = tmp_path / "file"
    blocker.write_text("not a folder")
    code, _, err = run_cli("report", "reptest", "--no-figures", "--out", str(blocker / "sub"),
                           "--home", str(home))
    assert code == 2 and "--out" in err and len(err.strip().splitlines()) == 1
    assert blocker.read_text() == "not a folder"


@pytest.mark.slow
def test_latex_tables_compile(smoke, tmp_path):
    pdflatex, pdftotext = need_tool("pdflatex"), need_tool("pdftotext")
    _, out = smoke
    texs = sorted(out.glob("*.tex"))
    assert texs
    body = "\n".join(f"\\input{{{p.resolve().as_posix()}}}" for p in texs)
    doc = tmp_path / "doc.tex"
    doc.write_text("\\documentclass{article}\n\\usepackage{booktabs,graphicx}\n\\begin{document}\n"
                   f"{body}\n\\end{{document}}\n")
    res = subprocess.run([pdflatex, "-interaction=nonstopmode", "-halt-on-error", doc.name], cwd=tmp_path,
                         capture_output=True, text=True, timeout=300)
    assert res.returncode == 0, res.stdout[-2000:]
    text = subprocess.run([pdftotext, "-layout", "doc.pdf", "-"], cwd=tmp_path, capture_output=True, text=True,
                          check=True, timeout=60).stdout
    assert "Ours without meta-test" in text and "RIDNet" in text  # the tables' rows made it onto the page


@pytest.mark.slow
def test_html_page_renders_in_headless_chromium(smoke, tmp_path):
    browser = [*headless_chromium(tmp_path / "profile"), "--window-size=1400,2000"]
    _, out = smoke
    page = (out / "report.html").resolve()
    text = page.read_text()
    assert "<script" not in text and "http://" not in text and "https://" not in text  # self-contained
    assert text.count('src="data:image/png;base64,') == len(FIGURES_NAMES)
    shot = tmp_path / "shot.png"
    res = run_browser([*browser, f"--screenshot={shot}", page.as_uri()])
    assert shot.is_file(), res.stderr[-2000:]
    assert not re.search(r"Uncaught|ERR_FILE_NOT_FOUND|ERR_NAME|Failed to load resource", res.stderr)
    from matplotlib.image import imread

    img = imread(str(shot))
    assert img.shape[0] >= 1000 and img.std() > 0.05  # something was drawn, not a blank page
    dom = run_browser([*browser, "--dump-dom", page.as_uri()]).stdout
    assert dom.count("<table") == 2 and dom.count("<img") == len(FIGURES_NAMES)


def test_a_long_figure_title_is_wrapped_to_the_figure_width():
    from bench.report.figures.common import new_figure, style, title

    with style():
        fig = new_figure(6, 3)
        title(fig, "TTA gain against alignment — " + "a long study title with many words " * 4)
        fig.canvas.draw()
        (text,) = [t for t in fig.get_children() if hasattr(t, "get_text") and t.get_text() == fig.get_suptitle()]
        box = text.get_window_extent()
        assert "\n" in fig.get_suptitle()
        assert 0 <= box.x0 and box.x1 <= fig.bbox.width  # nothing cut off at the edges
