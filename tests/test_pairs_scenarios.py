"""Scenarios from folders of real noisy/clean pairs (`kind: pairs`) and from folders of clean photographs
(`photos: PATH`): name rules, disjoint splits, one-line errors naming the file and the rule, preview,
and (slow) a smoke TTA study on both, with the same table as the simulated scenarios."""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from bench.core.errors import ConfigError, DataError
from bench.data import pairs
from bench.data.io import write_png
from bench.data.scenarios import (
    get_scenario,
    instance_count,
    instances,
    load_scenarios,
    sized,
)

SEED = 20240101


def _clean(seed: int, h: int = 64, w: int = 72) -> np.ndarray:
    return np.random.default_rng(seed).uniform(0.2, 0.8, (h, w, 3)).astype(np.float32)


def _noisy(clean: np.ndarray, seed: int) -> np.ndarray:
    return np.clip(clean + np.random.default_rng(100 + seed).normal(0, 0.06, clean.shape), 0, 1)


def make_pairs(folder: Path, layout: str, n: int = 4, size=(64, 72)) -> Path:
    """``n`` pairs in one of the real layouts (SIDD's, PolyU's, noisy/ + clean/)."""
    for i in range(n):
        c = _clean(i, *size)
        z = _noisy(c, i)
        if layout == "sidd":
            scene = folder / "Data" / f"000{i}_001_S6_00100_00060_3200_L"
            write_png(scene / "GT_SRGB_010.PNG", c)
            write_png(scene / "NOISY_SRGB_010.PNG", z)
        elif layout == "polyu":
            write_png(folder / f"Canon5D2_chair_{i}_mean.png", c)
            write_png(folder / f"Canon5D2_chair_{i}_real.png", z)
        else:
            write_png(folder / "clean" / f"shot{i}.png", c)
            write_png(folder / "noisy" / f"shot{i}.png", z)
    return folder


def make_photos(folder: Path, n: int = 4) -> Path:
    for i in range(n):
        write_png(folder / f"kodim{i + 1:02d}.png", _clean(50 + i, 64, 96))
    return folder


def scenarios_file(tmp_path: Path, body: str) -> Path:
    path = tmp_path / "scenarios.yaml"
    path.write_text(body)
    return path


# --- name rules and splits -----------------------------------------------------------------------


@pytest.mark.parametrize("layout, names", [
    ("sidd", ["Data/0000_001_S6_00100_00060_3200_L/SRGB_010", "Data/0001_001_S6_00100_00060_3200_L/SRGB_010"]),
    ("polyu", ["Canon5D2_chair_0", "Canon5D2_chair_1"]),
    ("subfolders", ["shot0", "shot1"]),
])
def test_each_layout_pairs_by_name_and_auto_finds_it(tmp_path, layout, names):
    folder = make_pairs(tmp_path / layout, layout, n=2)
    for match in (layout, "auto"):
        rule, found = pairs.find_pairs(folder, match)
        assert rule == layout and [p.name for p in found] == names
        noisy_word = {"sidd": "NOISY", "polyu": "_real", "subfolders": "noisy"}[layout]
        assert all(noisy_word in str(p.noisy) for p in found)


def test_pairs_scenario_cuts_tiles_of_the_real_noisy_image_and_splits_by_image(tmp_path):
    folder = make_pairs(tmp_path / "p", "polyu", n=5)
    path = scenarios_file(tmp_path, "real: {description: d, kind: pairs, folder: p, tile: 32, tiles: all}\n")
    sc = get_scenario("real", path)
    assert sc.draws == 1 and sc.noise == ()
    val, test = instances(sc, "val", SEED), instances(sc, "test", SEED)
    photos = lambda ps: {p.name.split("/t")[0] for p in ps}
    assert photos(val).isdisjoint(photos(test)) and len(photos(val)) == 1 and len(photos(test)) == 4
    assert len(test) == instance_count(sc, "test") == 4 * 2 * 2  # 64x72 → 2x2 tiles of 32
    first = test[0]
    name = first.name.split("/t")[0]
    noisy = pairs.decode(folder / f"{name}_real.png")
    y0 = (64 - 64) // 2
    x0 = (72 - 64) // 2
    assert np.array_equal(first.noisy, noisy[y0:y0 + 32, x0:x0 + 32])  # the pair's own noise, same window
    assert [p.name for p in instances(get_scenario("real", path), "test", 7)] == [p.name for p in test]  # seeded


def test_named_validation_images_and_whole_image_instances(tmp_path):
    make_pairs(tmp_path / "p", "subfolders", n=4)
    path = scenarios_file(tmp_path, "real: {description: d, kind: pairs, folder: p, tile: null, val: [shot3]}\n")
    sc = get_scenario("real", path)
    assert [p.name for p in instances(sc, "val", SEED)] == ["shot3/t00"]
    assert [p.name for p in instances(sc, "test", SEED)] == ["shot0/t00", "shot1/t00", "shot2/t00"]
    assert instances(sc, "test", SEED)[0].clean.shape == (64, 72, 3)


def test_the_preset_sizes_tiles_but_never_adds_draws_of_real_noise(tmp_path):
    from bench.core.config import load_preset

    make_pairs(tmp_path / "p", "polyu", n=3)
    sc = get_scenario("real", scenarios_file(tmp_path, "real: {description: d, kind: pairs, folder: p}\n"))
    cut = sized(sc, load_preset("quick").tta)
    assert cut.tile == 64 and cut.draws == 1


def test_a_clean_photo_folder_feeds_a_simulated_scenario(tmp_path):
    make_photos(tmp_path / "kodak", n=4)
    path = scenarios_file(tmp_path, "kodak-shift: {description: d, photos: kodak, noise: [nam-like], tile: 32, "
                                    "draws: 2}\nkodak-named: {description: d, noise: [nam-like], tile: 32, "
                                    "photos: {folder: kodak, test: [kodim01, kodim02]}}\n")
    sc = get_scenario("kodak-shift", path)
    val, test = instances(sc, "val", SEED), instances(sc, "test", SEED)
    assert len(val) == 1 * 2 * 3 * 2 and len(test) == 3 * 2 * 3 * 2  # photos × 2x3 tiles × draws
    assert {p.name.split("/")[0] for p in val}.isdisjoint({p.name.split("/")[0] for p in test})
    named = get_scenario("kodak-named", path)
    assert {p.name.split("/")[0] for p in instances(named, "test", SEED)} == {"kodim01", "kodim02"}
    assert {p.name.split("/")[0] for p in instances(named, "val", SEED)} == {"kodim03", "kodim04"}


def test_defaults_are_unchanged_and_folder_scenarios_load_lazily(tmp_path):
    path = scenarios_file(tmp_path, "later: {description: d, kind: pairs, folder: not-there-yet}\n")
    assert "later" in load_scenarios(path)  # listing does not read folders
    with pytest.raises(DataError, match="not-there-yet: noisy/clean pairs folder not found"):
        get_scenario("later", path)
    assert load_scenarios()["in-distribution"].model_dump(mode="json").keys() >= {"photos", "noise"}
    assert "kind" not in load_scenarios()["in-distribution"].model_dump(mode="json")


# --- bad input -----------------------------------------------------------------------------------


def _drop(folder: Path, pattern: str) -> Path:
    victim = min(folder.rglob(pattern))
    victim.unlink()
    return victim


@pytest.mark.parametrize("layout, drop, words", [
    ("sidd", "GT_*", ["NOISY_SRGB_010.PNG: noisy image without its twin GT_SRGB_010.*", "rule sidd"]),
    ("polyu", "*_real.png", ["_mean.png: clean image without its twin", "rule polyu"]),
    ("subfolders", "noisy/*", ["shot0.png: clean image without a noisy image named shot0", "rule subfolders"]),
])
def test_unmatched_names_are_one_line_naming_file_and_rule(tmp_path, run_cli, layout, drop, words):
    folder = make_pairs(tmp_path / "p", layout, n=3)
    _drop(folder, drop)
    code, err = _run_study(tmp_path, run_cli, f"match: {layout}")
    assert code == 2 and len(err.strip().splitlines()) == 1, err
    assert all(w in err for w in words) and "scenario 'real'" in err, err
    assert not (tmp_path / "h").exists()


def _run_study(tmp_path, run_cli, extra: str = ""):
    sc = scenarios_file(tmp_path, "real: {description: d, kind: pairs, folder: p" + (f", {extra}" if extra else "")
                        + "}\n")
    study = tmp_path / "study.yaml"
    study.write_text(f"title: t\nscenarios: [real]\nscenario_file: {sc}\nreference_row: none\n"
                     "rows:\n  - {name: none, method: ours, adapt: none}\n")
    code, _, err = run_cli("run", study, "--preset", "smoke", "--home", tmp_path / "h")
    return code, err


def test_pairs_of_different_sizes_are_one_line(tmp_path, run_cli):
    folder = make_pairs(tmp_path / "p", "polyu", n=3)
    write_png(folder / "Canon5D2_chair_1_real.png", _clean(9, 60, 72))
    code, err = _run_study(tmp_path, run_cli)
    assert code == 2 and len(err.strip().splitlines()) == 1
    assert "Canon5D2_chair_1_real.png: 60x72, its clean twin Canon5D2_chair_1_mean.png is 64x72" in err
    assert "a pair's images have the same size" in err


def test_an_unreadable_file_is_one_line(tmp_path, run_cli):
    folder = make_pairs(tmp_path / "p", "polyu", n=3)
    (folder / "Canon5D2_chair_2_mean.png").write_bytes(b"not an image")
    code, err = _run_study(tmp_path, run_cli)
    assert code == 2 and len(err.strip().splitlines()) == 1
    assert "Canon5D2_chair_2_mean.png: cannot read image header" in err


def test_too_few_pairs_is_one_line(tmp_path, run_cli):
    make_pairs(tmp_path / "p", "polyu", n=1)
    code, err = _run_study(tmp_path, run_cli)
    assert code == 2 and len(err.strip().splitlines()) == 1
    assert "1 image(s); a scenario needs at least 2" in err


@pytest.mark.parametrize("extra, words", [
    ("val: [nope]", "val: no image 'nope'"),
    ("val: [Canon5D2_chair_0], test: [Canon5D2_chair_0]", "in both val and test"),
    ("match: sidd", "no pairs (rule sidd"),
])
def test_bad_splits_and_rules_are_one_line(tmp_path, run_cli, extra, words):
    make_pairs(tmp_path / "p", "polyu", n=3)
    code, err = _run_study(tmp_path, run_cli, extra)
    assert code == 2 and len(err.strip().splitlines()) == 1 and words in err, err


@pytest.mark.parametrize("body, words", [
    ("x: {description: d, kind: pairs}", "folder: a kind: pairs scenario needs"),
    ("x: {description: d, kind: pairs, folder: p, noise: [nam-like]}", "leave noise out"),
    ("x: {description: d, kind: pairs, folder: p, draws: 3}", "draws: 3: a real pair has one noisy image"),
    ("x: {description: d, folder: p, noise: [nam-like]}", "folder: only a kind: pairs scenario"),
    ("x: {description: d, kind: pairs, folder: p, match: dslr}", "match: Input should be"),
    ("x: {description: d, kind: realistic, folder: p}", "kind: Input should be"),
])
def test_bad_scenario_fields_are_one_line_config_errors(tmp_path, body, words):
    with pytest.raises(ConfigError) as e:
        load_scenarios(scenarios_file(tmp_path, body + "\n"))
    assert words in str(e.value) and "scenario 'x'" in str(e.value) and "\n" not in str(e.value)


def test_a_tile_larger_than_the_images_names_the_file(tmp_path):
    make_pairs(tmp_path / "p", "polyu", n=2, size=(40, 40))
    sc = get_scenario("real", scenarios_file(tmp_path, "real: {description: d, kind: pairs, folder: p, tile: 48}\n"))
    with pytest.raises(DataError, match=r"_real.png: 40x40, smaller than the scenario's tile 48"):
        instances(sc, "test", SEED)


# --- commands ------------------------------------------------------------------------------------


def test_preview_and_listing_show_a_pairs_scenario(tmp_path, run_cli):
    make_pairs(tmp_path / "p", "sidd", n=3)
    path = scenarios_file(tmp_path, "real: {description: real sidd-like pairs, kind: pairs, folder: p}\n"
                                    "gone: {description: d, kind: pairs, folder: nowhere}\n")
    out_png = tmp_path / "prev.png"
    code, out, err = run_cli("data", "preview", "real", "--scenarios", path, "--preset", "smoke", "--out", out_png,
                             "--n", "2")
    assert code == 0, err
    assert out_png.stat().st_size > 0
    code, out, err = run_cli("data", "scenarios", "--scenarios", path, "--json")
    assert code == 0, err
    import json

    recs = {r["name"]: r for r in json.loads(out)["scenarios"]}
    assert recs["real"]["kind"] == "pairs" and recs["real"]["instances"]["test"] > 0
    assert "real pairs" in recs["real"]["cameras"][0]
    assert "nowhere" in recs["gone"]["error"]  # listed, not fatal
    code, out, err = run_cli("data", "scenarios", "--scenarios", path, "--strength", "--preset", "smoke")
    assert code == 0 and "real" in out, err


def test_scenario_targets_take_pairs_like_simulated_scenarios(tmp_path):
    from bench.adaptation.evaluate import scenario_targets
    from bench.core.config import load_preset

    make_pairs(tmp_path / "p", "polyu", n=3)
    path = scenarios_file(tmp_path, "real: {description: d, kind: pairs, folder: p}\n")
    tta = load_preset("smoke").tta.model_copy(update={"splits": ("val", "test")})
    targets = scenario_targets(["real", "camera-shift"], tta, SEED, str(path))
    assert [(t.split, t.scenario) for t in targets] == [("val", "real"), ("test", "real"), ("val", "camera-shift"),
                                                       ("test", "camera-shift")]
    assert all(p.noisy is not None and p.clean.shape == (48, 48, 3) for t in targets for p in t.pairs)


# --- a smoke TTA study on real pairs and on a clean photo folder (slow: trains the smoke network) ---


@pytest.mark.slow
def test_smoke_tta_study_on_real_pairs_and_a_photo_folder_has_the_simulated_columns(tmp_path, run_cli, monkeypatch):
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    make_pairs(tmp_path / "p", "sidd", n=4)
    make_photos(tmp_path / "kodak", n=3)
    sc = scenarios_file(tmp_path, "real-pairs: {description: real pairs, kind: pairs, folder: p}\n"
                                  "kodak-shift: {description: nam-like on my photos, photos: kodak, "
                                  "noise: [nam-like]}\n")
    study = tmp_path / "real.yaml"
    study.write_text(f"title: real\nscenarios: [in-distribution, real-pairs, kodak-shift]\nscenario_file: {sc}\n"
                     "reference_row: none\nrows:\n  - {name: none, method: ours, adapt: none}\n"
                     "  - {name: alg3, method: ours, adapt: alg3}\n  - {name: nlm, method: ours, adapt: nlm}\n")
    home = tmp_path / "home"
    code, out, err = run_cli("run", study, "--preset", "smoke", "--home", home, "--quiet")
    assert code == 0, err
    assert "│ alg3 " in out and "│ nlm " in out
    header = out[: out.index("│ alg3 ")]
    for name in ("in-distribution", "real-pairs", "kodak-shift"):
        assert name in header
    code, out, err = run_cli("report", study, "--preset", "smoke", "--latex", "--home", home, "--out", tmp_path / "r",
                             "--no-log")
    assert code == 0, err
    tex = (tmp_path / "r" / "real.tex").read_text()
    assert "real-pairs (n = 3)" in tex and "kodak-shift (n = 2)" in tex and "in-distribution (n = 2)" in tex
    body = [line for line in tex.splitlines() if line.rstrip().endswith("\\\\") and "&" in line]
    for row in ("alg3", "nlm"):  # the same columns, one group per scenario, simulated or real
        lines = [line for line in body if line.split("&")[0].strip() == row]
        assert lines and all(line.count("[") == 3 for line in lines), row


def test_the_shipped_real_scenarios_read_what_fetch_installs(tmp_path, monkeypatch):
    monkeypatch.setenv("TTAID_DATA_ROOT", str(tmp_path))
    make_pairs(tmp_path / "SIDD_Small_sRGB_Only", "sidd", n=3, size=(256, 256))
    make_pairs(tmp_path / "PolyU" / "CroppedImages", "polyu", n=3, size=(128, 128))
    make_pairs(tmp_path / "Nam" / "CC15", "polyu", n=3, size=(128, 128))
    for name in ("sidd-real", "polyu-real", "nam-real"):
        sc = get_scenario(name)
        assert sc.kind == "pairs" and instance_count(sc, "test") == 2 and instance_count(sc, "val") == 1
    assert instances(get_scenario("sidd-real"), "val", SEED)[0].name.startswith("000")  # Data/ is the folder


def test_a_studys_data_root_reaches_its_scenarios_folders(tmp_path, monkeypatch):
    """--data-root (a preset's data.root) decides where `{data_root}` points, over the environment:
    in the study check, in the study's targets and in `bench data scenarios`."""
    from typer.testing import CliRunner

    from bench.adaptation.evaluate import scenario_targets
    from bench.cli import app
    from bench.core.config import load_preset
    from bench.studies.plan import check_study
    from bench.studies.spec import StudySpec

    monkeypatch.setenv("TTAID_DATA_ROOT", str(tmp_path / "elsewhere"))
    root = tmp_path / "mine"
    make_pairs(root / "shots", "subfolders", n=3)
    path = scenarios_file(tmp_path, "real: {description: d, kind: pairs, folder: '{data_root}/shots', tile: 32}\n")
    with pytest.raises(DataError, match="elsewhere"):  # the environment's root, which lacks them
        get_scenario("real", path)
    sc = get_scenario("real", path, root)
    assert sc.folder == f"{root}/shots" and instance_count(sc, "test") > 0
    assert sc.rooted(tmp_path / "other") == sc  # nothing left to resolve
    preset = load_preset("smoke", [f"data.root={root}"])
    spec = StudySpec.model_validate({"title": "t", "scenarios": ["real"], "scenario_file": str(path),
                                     "rows": [{"name": "none", "method": "ours", "adapt": "none"}]})
    check_study(spec, "study t", preset)
    with pytest.raises(DataError, match="elsewhere"):
        check_study(spec, "study t", load_preset("smoke"))
    targets = scenario_targets(["real"], preset.tta, preset.data.eval_seed, str(path), preset.data.root)
    assert {len(t.pairs) for t in targets} and all(t.pairs for t in targets)
    out = CliRunner().invoke(app, ["data", "scenarios", "--scenarios", str(path), "--data-root", str(root), "--json"])
    assert out.exit_code == 0, out.output
    assert '"error"' not in out.output.split('"name": "real"')[1].split('"name"')[0]


PLUGIN_SCENARIO = {"description": "a plugin's shift", "noise": ["nam-like"], "tiles": 2, "draws": 1}
NOT_A_SCENARIO = 42


def test_scenario_plugins_are_read_through_the_entry_point_loader(monkeypatch, run_cli):
    from bench.core import plugins
    from bench.data import scenarios as S

    group = S.PLUGIN_GROUP
    entries = (plugins.Declared("plugin-shift", "test_pairs_scenarios:PLUGIN_SCENARIO", "demo", "1.0", group),
               plugins.Declared("broken-shift", "test_pairs_scenarios:NOT_A_SCENARIO", "demo", "1.0", group),
               plugins.Declared("camera-shift", "test_pairs_scenarios:PLUGIN_SCENARIO", "demo", "1.0", group))
    monkeypatch.setattr(plugins, "declared", lambda g: entries if g == group else ())
    monkeypatch.setattr(S, "PLUGIN_SCENARIOS", {})
    sc = get_scenario("plugin-shift")
    assert sc.noise[0].base == "nam-like" and instance_count(sc, "test") == 2 * 2
    assert get_scenario("camera-shift") == load_scenarios()["camera-shift"]  # a built-in name stays the built-in's
    with pytest.raises(ConfigError, match="broken-shift' \\(plugin demo 1.0.*expected a Scenario"):
        get_scenario("broken-shift")
    with pytest.raises(ConfigError, match="taken by a built-in scenario"):
        S.plugin_scenario("camera-shift")
    assert "plugin-shift" in S.scenario_names()
