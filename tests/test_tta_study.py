"""The TTA study: study-file validation, the one evaluator's rows, the gain table's statistics, the
commands around it; and (slow) `bench run tta --preset smoke` after table2 trains nothing new for ours."""
import json
import math
import re

import numpy as np
import pandas as pd
import pytest
import scipy.stats as sps
import torch

import methods
from bench.adaptation import registry as R
from bench.adaptation.evaluate import MAX_STEP_COLUMNS, Target, evaluate, step_columns
from bench.adaptation.run import adapt_image
from bench.core.config import load_preset
from bench.core.metrics import psnr_float
from bench.data.base import ImagePair
from bench.report.runs import melt
from bench.report.tta import paired_gain, tta_records
from bench.studies.plan import load_study, plan_row, row_entry
from bench.studies.spec import StudySpec


def write(tmp_path, text, name="s.yaml"):
    p = tmp_path / name
    p.write_text(text)
    return p


ROW = "rows:\n  - {name: r, method: %s, adapt: %s}\n"


@pytest.mark.parametrize("body, words", [
    ("title: t\nscenarios: [in-distribution]\n" + ROW % ("ours", "nope"), ["unknown adaptation 'nope'"]),
    ("title: t\nscenarios: [nowhere]\n" + ROW % ("ours", "alg3"), ["unknown scenario 'nowhere'"]),
    ("title: t\nscenarios: [in-distribution]\n" + ROW % ("ridnet", "alg3"), ["'alg3' cannot run on method 'ridnet'"]),
    ("title: t\n" + ROW % ("ours", "oracle"), ["evaluation-only", "TTA study"]),
    ("title: t\nscenarios: [in-distribution]\nrows:\n  - {name: r, method: ours, adapt: alg3, adapt_set: {beta: 1}}\n",
     ["cannot override beta"]),
])
def test_bad_study_files_are_one_line_errors_with_exit_2(tmp_path, run_cli, body, words):
    code, out, err = run_cli("run", write(tmp_path, body), "--preset", "smoke", "--home", tmp_path / "h")
    assert code == 2 and err.startswith("error: ") and len(err.strip().splitlines()) == 1
    assert all(w in err for w in words), err
    assert not (tmp_path / "h").exists()  # nothing half-written


def test_invalid_scenario_noise_is_refused(tmp_path, run_cli):
    bad = write(tmp_path, "bad-shift: {description: x, noise: [{base: sidd-like, shot_range: [-1, 0.1]}]}\n", "sc.yaml")
    study = write(tmp_path, f"title: t\nscenarios: [bad-shift]\nscenario_file: {bad}\n" + ROW % ("ours", "none"))
    code, _, err = run_cli("run", study, "--preset", "smoke", "--home", tmp_path / "h")
    assert code == 2 and "bad-shift" in err and "noise[0]" in err and len(err.strip().splitlines()) == 1


def test_row_entries_follow_entry_budget_metatest_and_row_in_that_order():
    smoke, quick = load_preset("smoke"), load_preset("quick")
    assert row_entry("alg3", "ours", smoke).steps == 2  # the smoke budget
    assert row_entry("zs-n2n", "ours", quick).steps == 100  # the quick budget
    tuned = row_entry("alg3", "ours", quick, adapt_from="metatest")
    assert (tuned.steps, tuned.lr, tuned.optimizer) == (quick.metatest.steps, quick.metatest.lr, quick.metatest.optimizer)
    assert row_entry("alg3", "ours", quick, {"lr": 1e-3}, "metatest").lr == 1e-3
    _, tta = load_study("tta")
    assert tta.is_tta and {r.adapt for r in tta.rows} >= set(R.REGISTRY)  # every entry is a row
    # a plain study's row scored with meta-test runs the preset's meta-test entry: the alg3 row above
    plain = StudySpec(title="t", rows=[{"name": "a", "method": "ours"}])
    assert plan_row(plain, plain.rows[0], quick).entry == tuned
    assert plan_row(plain, plain.rows[0].model_copy(update={"metatest": False}), quick).entry.name == "none"


def test_step_columns_are_subsampled_and_named_by_step():
    cols = step_columns([float(t) for t in range(41)], [0.1] * 40, [30.0 + t for t in range(41)])
    steps = sorted(int(k.split("@")[1]) for k in cols if k.startswith("loss@"))
    assert len(steps) == MAX_STEP_COLUMNS and steps[0] == 0 and steps[-1] == 40 and 20 in steps
    assert all(cols[f"loss@{t}"] == t and cols[f"psnr@{t}"] == 30.0 + t for t in steps)
    assert "dgrey@0" not in cols and "dgrey@40" in cols
    short = step_columns([1.0, 0.5, 0.2], [0.3, 0.2], [30.0, 30.1, 30.2])
    assert sorted(short) == ["dgrey@1", "dgrey@2", "loss@0", "loss@1", "loss@2", "psnr@0", "psnr@1", "psnr@2"]


@pytest.fixture(scope="module")
def tiny():
    torch.manual_seed(3)
    model = methods.create("ours", base=8, scale=4, mask_base=8)
    rng = np.random.default_rng(0)
    pairs = []
    for i in range(3):
        clean = rng.uniform(0.2, 0.8, (16, 16, 3)).astype(np.float32)
        pairs.append(ImagePair(f"img{i}", clean, np.clip(clean + rng.normal(0, 0.1, clean.shape), 0, 1).astype(np.float32)))
    return model, pairs


@pytest.mark.parametrize("name", R.names())
def test_every_row_leaves_the_weights_bit_identical(tiny, name):
    model, pairs = tiny
    entry = R.get(name).with_(steps=2, lr=1e-2) if R.get(name).learns else R.get(name)
    before = {k: v.clone() for k, v in model.state_dict().items()}
    rows = evaluate(model, entry, [Target("test", "s", pairs[:1])], torch.device("cpu"),
                    fit_on=[Target("val", "s", pairs[1:])])  # where a domain-scope entry is fitted
    assert all(torch.equal(before[k], v) for k, v in model.state_dict().items())
    assert model.training  # left as it was found (evaluate restores train mode)
    assert {"psnr", "psnr_float", "seconds", "updates", "scenario"} <= set(rows[0])


def test_the_unquantized_paired_difference_is_the_float_psnr_difference(tiny):
    model, pairs = tiny
    alg3 = R.get("alg3").with_(steps=2, lr=0.05)
    t = [Target("test", "s", pairs)]
    wide = []
    for row, entry in (("none", R.get("none")), ("alg3", alg3)):
        for r in evaluate(model, entry, t, torch.device("cpu")):
            wide.append({"study": "x", "row": row, "method": "ours", "seed": 0, **r})
    tidy = melt(pd.DataFrame(wide))
    g = paired_gain(tidy, "alg3", "none", "test", "s", "psnr_float")
    model.eval()
    by_hand = []
    for p in pairs:
        noisy, clean = (torch.from_numpy(a).permute(2, 0, 1)[None] for a in (p.noisy, p.clean))
        a = adapt_image(alg3, model, noisy, clean).prediction
        with torch.no_grad():
            b = model(noisy)
        by_hand.append(float(psnr_float(a[0], clean[0])) - float(psnr_float(b[0], clean[0])))
    model.train()
    assert g["n"] == 3 and g["gain"] == pytest.approx(np.mean(by_hand), abs=1e-9)
    assert g["gain"] != 0.0  # the float difference sees what 8 bits may round away


def crossed_by_hand(table):
    """Variance of the grand mean of a seeds × photographs table and its Satterthwaite df, written out:
    s·u·Var = max(MS_S, MS_E) + max(MS_U, MS_E) − MS_E, each mean square counted once with its net
    coefficient (MS_E: 1 − [MS_S > MS_E] − [MS_U > MS_E])."""
    s, u = table.shape
    g, r, c = table.mean(), table.mean(axis=1), table.mean(axis=0)
    ms_s, ms_u = u * ((r - g) ** 2).sum() / (s - 1), s * ((c - g) ** 2).sum() / (u - 1)
    ms_e = ((table - r[:, None] - c[None, :] + g) ** 2).sum() / ((s - 1) * (u - 1))
    total = max(ms_s, ms_e) + max(ms_u, ms_e) - ms_e
    net_e = 1 - (ms_s > ms_e) - (ms_u > ms_e)
    denom = ((ms_s ** 2 / (s - 1)) if ms_s > ms_e else 0) + ((ms_u ** 2 / (u - 1)) if ms_u > ms_e else 0) \
        + (net_e * ms_e) ** 2 / ((s - 1) * (u - 1))
    return total / (s * u), total ** 2 / denom


def test_gain_table_statistics_by_hand():
    rng = np.random.default_rng(1)
    base = rng.normal(30, 1, (2, 10))  # seeds × instances (each its own photograph)
    gain = rng.normal(0.05, 0.02, (2, 10))
    recs = []
    for row, vals in (("none", base), ("alg3", base + gain), ("oracle", base + 2 * gain), ("nlm", base + 3 * gain)):
        for s in range(2):
            for i in range(10):
                recs.append({"row": row, "seed": s, "split": "test", "scenario": "c", "image": f"i{i}",
                             "metric": "psnr_float", "value": vals[s, i]})
                recs.append({"row": row, "seed": s, "split": "test", "scenario": "c", "image": f"i{i}",
                             "metric": "seconds", "value": 0.5})
                if row == "alg3":
                    recs.append({"row": row, "seed": s, "split": "test", "scenario": "c", "image": f"i{i}",
                                 "metric": "updates", "value": 2})
                if row == "oracle":  # the oracle after 2 updates: 1.5 × the gain
                    recs.append({"row": row, "seed": s, "split": "test", "scenario": "c", "image": f"i{i}",
                                 "metric": "psnr@2", "value": base[s, i] + 1.5 * gain[s, i]})
    spec = {"scenarios": ["c"], "rows": [{"name": "none", "method": "ours", "adapt": "none"},
                                         {"name": "alg3", "method": "ours", "adapt": "alg3"},
                                         {"name": "oracle", "method": "ours", "adapt": "oracle"},
                                         {"name": "nlm", "method": "ours", "adapt": "nlm"}]}
    every = tta_records(pd.DataFrame(recs), spec)
    out = {r["row"]: r for r in every if r["metric"] == "psnr_float"}
    r = out["alg3"]
    per_seed = gain.mean(axis=1)
    var, df = crossed_by_hand(gain)
    se = math.sqrt(var)
    assert (r["n"], r["seeds"], r["photos"], r["tiles"], r["draws"]) == (10, 2, 10, 1, 1)
    assert r["gain"] == pytest.approx(per_seed.mean()) and r["gain_sd"] == pytest.approx(per_seed.std(ddof=1))
    assert r["se"] == pytest.approx(se) and r["df"] == pytest.approx(df)
    assert r["p"] == pytest.approx(2 * sps.t.sf(gain.mean() / se, df))
    assert r["lo"] == pytest.approx(gain.mean() - sps.t.ppf(0.975, df) * se)
    assert r["resolved"] == (r["lo"] > 0 or r["hi"] < 0) and r["resolved"]
    # the MDE comes from the oracle's comparison (twice the gain: twice the standard error), for every row
    q = sps.t.ppf(0.975, df) + sps.t.ppf(0.8, df)
    assert r["mde"] == pytest.approx(q * 2 * se) and out["nlm"]["mde"] == pytest.approx(r["mde"])
    assert r["mde_from"] == "oracle"
    # Holm over the table's three cells, smallest p first
    ps = sorted(x["p"] for x in out.values())
    assert sorted(x["p_holm"] for x in out.values()) == pytest.approx(
        [min(1, 3 * ps[0]), min(1, max(3 * ps[0], 2 * ps[1])), min(1, max(3 * ps[0], 2 * ps[1], ps[2]))])
    # TOST against ±0.02 dB: the gain (~0.05) is not equivalent to none; its test p by hand
    assert r["p_tost"] == pytest.approx(max(sps.t.sf((gain.mean() + 0.02) / se, df),
                                            sps.t.cdf((gain.mean() - 0.02) / se, df)))
    assert not r["equivalent"] and r["verdict"].startswith("resolved")
    assert r["captured"] == pytest.approx(0.5) and r["seconds"] == 0.5
    # at alg3's own K = 2 the oracle gained 1.5 × the gain: alg3 captured 2/3 of it
    assert r["steps"] == 2 and r["oracle_at_k"] == pytest.approx(1.5 * per_seed.mean())
    assert r["captured_at_k"] == pytest.approx(1 / 1.5)
    assert math.isnan(out["nlm"]["captured"])  # the heads' oracle bounds only rows that move the heads
    assert "none" not in out
    ssim = [x for x in every if x["metric"] == "ssim"]
    assert ssim and all(x["n"] == 0 and x["verdict"] == "not resolved" for x in ssim)  # no SSIM rows given


def test_adaptations_json_lists_every_entry(run_cli):
    code, out, _ = run_cli("adaptations", "--json")
    assert code == 0 and [r["name"] for r in json.loads(out)] == R.names()


def test_denoise_refuses_the_oracle_and_impossible_pairings(tmp_path, run_cli):
    code, _, err = run_cli("denoise", tmp_path / "x.png", "--adapt", "oracle")
    assert code == 2 and "evaluation-only" in err and len(err.strip().splitlines()) == 1
    from bench.core.errors import ConfigError
    from bench.inference.denoise import Denoiser

    with pytest.raises(ConfigError, match="cannot run on method"):
        Denoiser(methods.create("ridnet", n_feats=16, n_blocks=1), methods.get("ridnet").recipe,
                 entry=R.get("alg3"))


def test_denoiser_runs_an_entry_on_the_whole_image(tiny):
    from bench.inference.denoise import Denoiser

    model, pairs = tiny
    den = Denoiser(model, methods.get("ours").recipe, entry=R.get("lan-offset").with_(steps=2))
    res = den.run(pairs[0].noisy, before=True, trajectory=True)
    assert res.image.shape == pairs[0].noisy.shape and res.adapted and len(res.steps) == 3
    assert not np.array_equal(res.image, res.before)  # the offset moved the output


@pytest.mark.slow
def test_tta_after_table2_trains_nothing_new_and_reports(tmp_path, run_cli, monkeypatch):
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    home = tmp_path / "home"
    code, _, err = run_cli("run", "table2", "--preset", "smoke", "--home", home, "--quiet")
    assert code == 0, err
    trained = sorted(p.name for p in (home / "cache").glob("*.pt"))
    code, out, err = run_cli("run", "tta", "--preset", "smoke", "--home", home, "--quiet")
    assert code == 0, err
    assert sorted(p.name for p in (home / "cache").glob("*.pt")) == trained  # ours and RIDNet: reused
    _, spec = load_study("tta")
    rows = [r.name for r in spec.rows if r.adapt != "none"]
    for name in rows:
        assert f"│ {name} " in out
    assert "chosen on validation — alg3-tuned: seed 0:" in out and "chosen on validation — oracle: seed 0:" in out
    # every statistics column on the console: verdict, Holm, TOST, MDE, the oracle at the row's own K, n per level
    flat = re.sub(r"\s+", " ", out)  # captions wrap
    for words in ("Holm", "TOST p", "MDE", "1 seed × 2 photographs × 1 tile × 1 draw",
                  "Inference conditional on the one training seed"):
        assert words in flat, words
    # the oracle at a row's own K: official's single update is always on the oracle's trajectory
    assert re.search(r"oracle at K = \d+:", flat)
    assert "equivalent to none (±0.02)" in out or "not resolved" in out
    code, out, err = run_cli("report", "tta", "--preset", "smoke", "--latex", "--markdown", "--home", home, "--out",
                             tmp_path / "rep", "--no-log", "--margin", "0.05", "--ssim-margin", "0.001")
    assert code == 0, err
    flat = re.sub(r"\s+", " ", out)
    assert "TOST within ±0.05" in flat and "TOST within ±0.001" in flat  # the margins from the command line
    md = (tmp_path / "rep" / "tta.md").read_text()
    for words in ("p (Holm)", "TOST p", "MDE", "1 seed × 2 photographs × 1 tile × 1 draw",
                  "from the spread of the oracle's comparison", "margin ±0.05"):
        assert words in md, words
    assert re.search(r"oracle at K = \d+:", md)
    table = [ln for ln in md.splitlines() if ln.startswith("| ") and not ln.startswith("| Row")]
    assert table and all(ln.count("resolved") + ln.count("equivalent to none") >= len(spec.scenarios) for ln in table)
    assert all(re.search(r"\| [\d.e-]+ \([\d.e-]+\) \|", ln) for ln in table)  # p (Holm p) in every row
    tex = (tmp_path / "rep" / "tta.tex").read_text()
    for scenario in spec.scenarios:
        assert f"{scenario} (n = 2)" in tex
    body = [line for line in tex.splitlines() if line.rstrip().endswith("\\\\") and "&" in line]
    for name in rows:  # every row × scenario has a number in both gain tables
        lines = [line for line in body if line.split("&")[0].strip() == name.replace("-", "-")]
        assert len(lines) == 2 and all(line.count("[") == len(spec.scenarios) for line in lines), name
    assert (tmp_path / "rep" / "figures" / "tta" / "tta_steps.png").exists()
    assert "Chosen on validation" in tex and "alg3-tuned: seed 0:" in tex


def test_only_studies_that_read_the_tta_section_are_named_by_it():
    p = load_preset("quick")
    q = p.with_overrides(["tta.draws=3"])
    assert p.digest(tta=False) == q.digest(tta=False) and p.digest() != q.digest()
    _, table2 = load_study("table2")
    _, tta = load_study("tta")
    assert not table2.reads_tta and tta.reads_tta


def test_tta_figures_compute_gain_per_step_and_against_alignment():
    from types import SimpleNamespace

    from bench.report.figures import Skip, tta_alignment, tta_steps

    recs = []
    for i in range(4):
        base = 30.0 + i
        for metric, row, v in (("psnr_float", "none", base), ("psnr@0", "alg3", base), ("psnr@1", "alg3", base + 0.1 * i),
                               ("psnr_float", "alg3", base + 0.1 * i), ("alignment", "alg3", 0.2 * i)):
            recs.append({"row": row, "seed": 0, "split": "test", "scenario": "c", "image": f"i{i}", "metric": metric,
                         "value": v})
    spec = {"scenarios": ["c"], "rows": [{"name": "none", "method": "ours", "adapt": "none"},
                                         {"name": "alg3", "method": "ours", "adapt": "alg3"}]}
    study = SimpleNamespace(spec=spec, tidy=pd.DataFrame(recs), title="t")
    (curve,) = tta_steps.compute(study).curves
    assert curve.steps == [0, 1] and curve.mean == pytest.approx([0.0, 0.15])
    (pts,) = tta_alignment.compute(study).points
    assert pts.alignment.tolist() == pytest.approx([0, 0.2, 0.4, 0.6]) and pts.gain.tolist() == pytest.approx([0, .1, .2, .3])
    with pytest.raises(Skip):
        tta_steps.compute(SimpleNamespace(spec={"rows": []}, tidy=pd.DataFrame(), title="t"))


def _gain_by_hand(model, entry, pairs):
    """Mean float-PSNR gain of ``entry`` over the plain forward pass, one direct run per image."""
    model.eval()
    gains = []
    for p in pairs:
        noisy, clean = (torch.from_numpy(a).permute(2, 0, 1)[None] for a in (p.noisy, p.clean))
        with torch.no_grad():
            base = float(psnr_float(model(noisy)[0], clean[0]))
        gains.append(float(psnr_float(adapt_image(entry, model, noisy, clean).prediction[0], clean[0])) - base)
    model.train()
    return float(np.mean(gains))


@pytest.mark.parametrize("name, grid", [
    ("alg3", {"optimizer": ["sgd", "adam"], "lr": [1e-3, 5e-2], "steps": [1, 3]}),
    ("official", {"lr": [1e-3, 1e-2], "steps": [2, 3]}),  # the prediction after K − 1 updates
])
def test_select_reads_every_candidate_off_the_longest_run_and_keeps_the_best(tiny, name, grid):
    from bench.adaptation.select import choose

    model, pairs = tiny
    entry = R.get(name)
    best, records = choose(model, entry, grid, pairs, torch.device("cpu"))
    n_candidates = math.prod(len(v) for v in grid.values())
    assert len(records) == n_candidates and sum(bool(r.get("chosen")) for r in records) == 1
    for r in records:  # each candidate's gain equals a direct run with exactly its K
        cand = entry.with_(**{k: r[k] for k in grid})
        assert r["val_gain_db"] == pytest.approx(_gain_by_hand(model, cand, pairs), abs=1e-6), r
        assert r["n"] == len(pairs)
    top = max(records, key=lambda r: r["val_gain_db"])
    assert top.get("chosen") and all(getattr(best, k) == top[k] for k in grid)


def test_select_grids_are_checked():
    from bench.adaptation.select import candidates
    from bench.core.errors import ConfigError

    with pytest.raises(ConfigError, match="cannot be chosen"):
        candidates(R.get("alg3"), {"beta": [1]})
    with pytest.raises(ConfigError, match="non-empty list"):
        candidates(R.get("alg3"), {"lr": []})
    with pytest.raises(ConfigError, match="does not learn"):
        candidates(R.get("nlm"), {"lr": [1e-3]})
    with pytest.raises(ConfigError, match="lr"):
        candidates(R.get("alg3"), {"lr": [-1.0]})


def test_a_bad_select_grid_in_a_study_file_is_one_line(tmp_path, run_cli):
    body = ("title: t\nscenarios: [in-distribution]\nrows:\n"
            "  - {name: r, method: ours, adapt: alg3, select: {beta: [1, 2]}}\n")
    code, _, err = run_cli("run", write(tmp_path, body), "--preset", "smoke", "--home", tmp_path / "h")
    assert code == 2 and "row 'r'" in err and "cannot be chosen" in err and len(err.strip().splitlines()) == 1
    assert not (tmp_path / "h").exists()


def test_tta_budgets_and_the_official_variant_are_set_from_the_command_line(tiny):
    from bench.core.config import MetaTestConfig

    p = load_preset("quick", ["tta.budgets.zs-n2n.steps=7", "tta.budgets.lan-offset.lr=1e-4"])
    assert p.tta.budgets["zs-n2n"] == {"steps": 7, "halve_lr_at": 75} and p.tta.budgets["lan-offset"] == {"lr": 1e-4}
    assert row_entry("zs-n2n", "ours", p).steps == 7
    # the paper-official preset is paper with the official test loop; paper's name is unchanged by the field
    paper, official = load_preset("paper"), load_preset("paper-official")
    assert official.metatest.variant == "official" and paper.metatest.variant == "alg3"
    assert "variant" not in paper.metatest.model_dump()  # stage keys made before the field stay valid
    assert official.model_dump(exclude={"metatest", "description"}) == paper.model_dump(exclude={"metatest", "description"})
    model, pairs = tiny
    model.eval()
    noisy = torch.from_numpy(pairs[0].noisy).permute(2, 0, 1)[None]
    mt = MetaTestConfig(steps=3, lr=1e-3, optimizer="adam", variant="official")
    assert R.from_metatest(mt) == R.get("official").with_(steps=3, lr=1e-3, optimizer="adam")
    got = adapt_image(R.from_metatest(mt), model, noisy).prediction
    alg3 = adapt_image(R.from_metatest(mt.model_copy(update={"variant": "alg3"})), model, noisy).prediction
    model.train()
    assert not torch.equal(got, alg3)


def test_reference_level_is_taken_over_the_seeds_its_gains_pair_with():
    """A `none` row scored on a seed no adapted row has reached is left out of the caption's level."""
    from bench.report.tta import reference_levels

    recs = [{"row": row, "seed": s, "split": "test", "scenario": "c", "image": f"i{i}", "metric": "psnr_float",
             "value": 30.0 + s + (0.1 if row == "alg3" else 0.0)}
            for row, seeds in (("none", (0, 1, 2)), ("alg3", (0, 1))) for s in seeds for i in range(3)]
    spec = {"scenarios": ["c"], "rows": [{"name": "none", "method": "ours", "adapt": "none"},
                                         {"name": "alg3", "method": "ours", "adapt": "alg3"}]}
    (level,) = reference_levels(pd.DataFrame(recs), spec)
    assert level["seeds"] == [0, 1] and level["psnr_float"] == pytest.approx(30.5)
