"""Scenarios: loading and validation, instance counts, determinism, and that the strong shift is strong."""
from __future__ import annotations

import zlib

import numpy as np
import pytest

from bench.core.errors import ConfigError
from bench.data import camera
from bench.data.scenarios import (
    Scenario,
    chosen_tiles,
    get_scenario,
    grid,
    instance_count,
    instances,
    load_scenarios,
    shift_strength,
)

SEED = 20240101


def _user(tmp_path, text: str):
    path = tmp_path / "mine.yaml"
    path.write_text(text)
    return path


# --- loading and validation ----------------------------------------------------------------------


def test_defaults_define_the_control_the_camera_shift_and_a_strong_shift():
    sc = load_scenarios()
    assert {"in-distribution", "camera-shift", "strong-shift"} <= set(sc)
    assert [s.label() for s in sc["in-distribution"].noise] == list(camera.TRAIN_PROFILES)
    assert [s.label() for s in sc["camera-shift"].noise] == [camera.TEST_PROFILE]
    strong = sc["strong-shift"].camera(0)
    # the strong shift's shot noise starts above the top of every training camera's range
    assert strong.shot_range[0] > max(camera.get_profile(p).shot_range[1] for p in camera.TRAIN_PROFILES)


@pytest.mark.parametrize("name", sorted(n for n, s in load_scenarios().items() if s.kind == "simulated"))
def test_every_default_scenario_has_at_least_64_paired_instances(name):
    from bench.core.config import load_preset
    from bench.data.scenarios import sized

    sc = get_scenario(name)
    assert instance_count(sc, "test") >= 64
    assert instance_count(sc, "val") >= 64
    assert instance_count(sized(sc, load_preset("quick").tta), "test") >= 64  # as the quick TTA study cuts it


def test_instance_count_agrees_with_instances():
    sc = get_scenario("camera-shift").replace(tiles=3, draws=2)
    pairs = instances(sc, "test", SEED)
    assert len(pairs) == instance_count(sc, "test") == 2 * 3 * 2  # 2 photographs x 3 tiles x 2 draws
    assert [p.name for p in pairs[:4]] == ["chelsea/t00/d0", "chelsea/t00/d1", "chelsea/t02/d0", "chelsea/t02/d1"]


@pytest.mark.parametrize("body, needle", [
    ("bad: {description: x, noise: [no-such-camera]}",
     "scenario 'bad': noise[0]: unknown camera profile 'no-such-camera'"),
    ("bad: {description: x, noise: [{base: sidd-like, shot_range: [-1.0e-3, 1.0e-2]}]}",
     "scenario 'bad': noise[0]: camera profile 'sidd-like+shot_range': shot_range (-0.001, 0.01) must satisfy"),
    ("bad: {description: x, noise: [{base: nam-like, cfa: XYZW}]}", "scenario 'bad': noise[0]: camera profile"),
    ("bad: {description: x, noise: [{base: nam-like, chroma_nr: null}]}", "null is only allowed for jpeg_quality"),
    ("bad: {description: x, noise: [{base: nam-like, shot: 1}]}", "scenario 'bad': noise[0].shot: Extra inputs"),
    ("bad: {description: x, noise: [nam-like], draws: 0}", "scenario 'bad': draws: Input should be greater than 0"),
    ("bad: {description: x, noise: []}", "scenario 'bad': noise:"),
    ("bad: {description: x, noise: [nam-like], tile: 400}", "tile: 400 is larger than chelsea (300×451)"),
    ("bad: {description: x, noise: [nam-like], photos: {test: [astronaut]}}",
     "photos: test: 'astronaut' is not a test photograph"),
    ("camera-shift: {tiles: many}", "scenario 'camera-shift': tiles: 'many': expected 'all' or a positive number"),
    ("- just a list", "expected a mapping of scenario name"),
    ("bad: [1, 2", "malformed YAML"),
])
def test_invalid_scenarios_give_one_line_naming_scenario_and_field(tmp_path, body, needle):
    path = _user(tmp_path, body)
    with pytest.raises(ConfigError) as err:
        load_scenarios(path)
    msg = str(err.value)
    assert needle in msg and "\n" not in msg
    assert str(path) in msg


def test_user_file_adds_scenarios_and_changes_fields_of_defaults(tmp_path):
    path = _user(tmp_path, "camera-shift: {draws: 8}\n"
                           "mine: {description: my camera, noise: [{base: polyu-like, jpeg_quality: null}], "
                           "tile: null, draws: 2}\n")
    sc = load_scenarios(path)
    assert sc["camera-shift"].draws == 8 and sc["camera-shift"].noise == get_scenario("camera-shift").noise
    assert instance_count(sc["camera-shift"], "test") == 144
    assert sc["mine"].camera(0).jpeg_quality is None and camera.get_profile("polyu-like").jpeg_quality == 90
    whole = instances(sc["mine"], "test", SEED)  # tile null: the whole photograph, one tile
    assert [p.name for p in whole] == ["chelsea/t00/d0", "chelsea/t00/d1", "coffee/t00/d0", "coffee/t00/d1"]
    assert whole[2].clean.shape == (400, 600, 3)
    assert set(load_scenarios()) == set(sc) - {"mine"}  # the defaults are not changed
    with pytest.raises(ConfigError, match="unknown scenario 'nope'; known: in-distribution, camera-shift"):
        get_scenario("nope", path)


# --- instances -----------------------------------------------------------------------------------


def test_grid_is_regular_centred_and_non_overlapping():
    boxes = grid(300, 451, 128)
    assert len(boxes) == 6 and boxes[0] == (22, 33, 128, 128) and boxes[-1] == (150, 289, 128, 128)
    assert len(grid(400, 600, 128)) == 12 and len(grid(512, 512, 128)) == 16
    mask = np.zeros((300, 451), int)
    for y, x, h, w in boxes:
        mask[y : y + h, x : x + w] += 1
    assert mask.max() == 1 and mask.sum() == 6 * 128 * 128
    assert chosen_tiles(Scenario(name="s", description="d", noise=["nam-like"], tiles=3), 12) == [0, 6, 11]


def test_instances_are_deterministic_and_each_depends_only_on_its_name():
    sc = get_scenario("in-distribution").replace(tiles=2, draws=2)
    a, b = instances(sc, "val", SEED), instances(sc, "val", SEED)
    assert [p.name for p in a] == [p.name for p in b] == ["astronaut/t00/d0", "astronaut/t00/d1",
                                                          "astronaut/t15/d0", "astronaut/t15/d1"]
    for p, q in zip(a, b):
        np.testing.assert_array_equal(p.noisy, q.noisy)
        np.testing.assert_array_equal(p.clean, q.clean)
    other = instances(sc, "val", SEED + 1)
    assert not np.array_equal(a[0].noisy, other[0].noisy)
    # more tiles and draws: the shared instances keep their pixels
    more = {p.name: p for p in instances(sc.replace(tiles=4, draws=3), "val", SEED)}
    for p in a:
        np.testing.assert_array_equal(more[p.name].noisy, p.noisy)
    # the seeding contract: draw 1 is the second training camera, seeded by (eval_seed, crc32(name))
    p = a[1]
    rng = np.random.default_rng([SEED, zlib.crc32(p.name.encode())])
    np.testing.assert_array_equal(p.noisy, camera.simulate(p.clean, "polyu-like", rng))
    assert p.clean.shape == (128, 128, 3) and p.noisy.dtype == np.float32


def test_strong_shift_noise_is_clearly_above_the_training_cameras():
    """Measured on 8 test instances (2 tiles of each photograph, 2 draws); the full 72 give noisy-input
    PSNR 19.5 dB and noise std 27.5 grey levels against 26.3 / 12.9 (sidd-like), 30.7 / 7.8 (polyu-like)."""
    sc = get_scenario("strong-shift").replace(tiles=2, draws=2)
    strong, sidd, polyu = shift_strength(sc, "test", SEED)
    assert strong.n == sidd.n == polyu.n == 8
    assert (sidd.label, polyu.label) == ("training camera sidd-like", "training camera polyu-like")
    assert strong.noise_std > 1.6 * max(sidd.noise_std, polyu.noise_std)
    assert strong.psnr_mean < min(sidd.psnr_mean, polyu.psnr_mean) - 4.0
    # the control is no shift: its strength lies between its two cameras'
    ctrl = shift_strength(get_scenario("in-distribution").replace(tiles=2, draws=2), "test", SEED)[0]
    assert polyu.noise_std < ctrl.noise_std < sidd.noise_std


def test_noise_lag1_correlation_is_zero_for_white_noise_and_a_half_for_2x2_box_filtered_noise():
    from bench.data.base import ImagePair
    from bench.data.scenarios import measure, noise_lag1

    rng = np.random.default_rng(0)
    clean = rng.uniform(0.2, 0.8, (4, 64, 48, 3))
    white = rng.normal(0, 0.05, (4, 65, 49, 3))
    box = (white[:, :-1, :-1] + white[:, 1:, :-1] + white[:, :-1, 1:] + white[:, 1:, 1:]) / 4  # 2 taps each way
    white = white[:, :-1, :-1]
    assert np.abs(noise_lag1(clean, clean + white)).max() < 0.05
    assert noise_lag1(clean, clean + box) == pytest.approx([0.5] * 4, abs=0.05)
    pairs = [ImagePair(f"i{j}", clean[j].astype(np.float32), (clean[j] + box[j]).astype(np.float32)) for j in range(4)]
    s = measure(pairs, "boxed", ("x",), "test")
    assert s.noise_lag1_corr == pytest.approx(float(noise_lag1(clean, clean + box).mean()), abs=1e-3)
    flat = clean.copy()  # a channel (or an instance) without noise is left out, not a division by zero
    flat[..., 1] += white[..., 1]
    assert np.abs(noise_lag1(clean, flat)).max() < 0.05 and np.isnan(noise_lag1(clean[:1], clean[:1])).all()


def test_strength_measures_the_demosaicked_noise_as_correlated():
    sc = get_scenario("strong-shift").replace(tiles=1, draws=1)
    strong, *train = shift_strength(sc, "test", SEED)
    assert all(0.1 < s.noise_lag1_corr < 0.95 for s in (strong, *train)), [s.noise_lag1_corr for s in (strong, *train)]


def test_unknown_split_is_refused():
    with pytest.raises(ConfigError, match="split 'train'"):
        instances(get_scenario("camera-shift"), "train", SEED)


# --- the CLI -------------------------------------------------------------------------------------


def test_data_preview_draws_a_scenario_and_lists_scenarios_for_unknown_names(tmp_path, capsys):
    from PIL import Image

    from bench.cli import main

    out = tmp_path / "strong.png"
    main(["data", "preview", "strong-shift", "--n", "3", "--out", str(out)])
    with Image.open(out) as im:
        w, h = im.size
    assert w > 200 and h > w  # 3 rows of noisy / clean pairs
    assert f"wrote {out}" in capsys.readouterr().out
    with pytest.raises(SystemExit) as exc:
        main(["data", "preview", "nosuch"])
    assert exc.value.code == 2
    err = capsys.readouterr().err
    assert "in-distribution, camera-shift, strong-shift" in err and "profiles" in err
    bad = _user(tmp_path, "bad: {description: x, noise: [{base: sidd-like, shot_range: [-1.0e-3, 1.0e-2]}]}")
    with pytest.raises(SystemExit) as exc:
        main(["data", "preview", "bad", "--scenarios", str(bad), "--out", str(tmp_path / "bad.png")])
    assert exc.value.code == 2 and not (tmp_path / "bad.png").exists()
    assert "scenario 'bad': noise[0]: camera profile" in capsys.readouterr().err


def test_data_scenarios_lists_counts_as_json(tmp_path, capsys):
    import json

    from bench.cli import main

    mine = _user(tmp_path, "mine: {description: one tile, noise: [nam-like], tiles: 1, draws: 3}")
    main(["data", "scenarios", "--json", "--scenarios", str(mine), "--preset", "paper"])  # no tta sizing
    recs = {r["name"]: r for r in json.loads(capsys.readouterr().out)["scenarios"]}
    assert recs["strong-shift"]["instances"] == {"val": 64, "test": 72}
    assert recs["mine"]["instances"] == {"val": 3, "test": 6} and recs["mine"]["cameras"] == ["nam-like"]
    main(["data", "scenarios", "--json"])  # quick: the sizes `bench run tta` uses
    recs = {r["name"]: r for r in json.loads(capsys.readouterr().out)["scenarios"]}
    assert recs["strong-shift"]["instances"] == {"val": 32, "test": 64} and recs["strong-shift"]["tile"] == 64


def test_fingerprint_changes_with_what_decides_the_pixels_only():
    sc = get_scenario("camera-shift")
    assert sc.fingerprint() == get_scenario("camera-shift").fingerprint()
    assert sc.replace(description="other words").fingerprint() == sc.fingerprint()
    assert sc.replace(draws=5).fingerprint() != sc.fingerprint()
    assert sc.replace(noise=[{"base": "nam-like", "jpeg_quality": 90}]).fingerprint() != sc.fingerprint()
