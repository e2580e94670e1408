"""The noise simulators: determinism, shapes, and the statistics that make camera noise camera noise.

All statistics are measured on flat grey images (no texture), at a fixed noise level and gains
(``CameraParams``), so that differences come from the pipeline and not from the random draw.
"""
from __future__ import annotations

import dataclasses
import math

import numpy as np
import pytest

from bench.core.errors import DataError
from bench.data import camera
from bench.data.camera import CameraParams, get_profile, simulate, synthetic_mix

PROFILE_NAMES = sorted(camera.profiles())
SHOT = 2e-3
FIXED = CameraParams(shot=SHOT, read=math.exp(2.18 * math.log(SHOT) + 1.20), red_gain=2.0, blue_gain=1.6,
                     digital_gain=1.1)


def _flat(level: float, h: int = 32, w: int = 40) -> np.ndarray:
    return np.full((h, w, 3), level, np.float32)


def _residuals(profile: str, level: float, seed: int = 0, n: int = 4) -> np.ndarray:
    """(n, H, W, 3) noise of n simulated shots of a flat grey image, each centred on its own mean."""
    rng = np.random.default_rng(seed)
    shots = np.stack([simulate(_flat(level), profile, rng, params=FIXED) for _ in range(n)]).astype(np.float64)
    return shots - shots.mean(axis=(1, 2), keepdims=True)


def _rg_corr(res: np.ndarray) -> float:
    return float(np.corrcoef(res[..., 0].ravel(), res[..., 1].ravel())[0, 1])


def _lag1(res: np.ndarray) -> float:
    """Spatial autocorrelation at one pixel, averaged over horizontal and vertical neighbours."""
    var = res.var()
    return float(((res[:, :, 1:] * res[:, :, :-1]).mean() + (res[:, 1:] * res[:, :-1]).mean()) / (2 * var))


def _gaussian_residuals(level: float, seed: int = 0, n: int = 4) -> np.ndarray:
    rng = np.random.default_rng(seed)
    shots = np.stack([camera.gaussian_noise(_flat(level), 10 / 255, rng) for _ in range(n)]).astype(np.float64)
    return shots - shots.mean(axis=(1, 2), keepdims=True)


# --- registry and validation ---------------------------------------------------------------------


def test_registry_has_two_training_profiles_and_a_distinct_test_profile():
    profiles = camera.profiles()
    assert set(camera.TRAIN_PROFILES) | {camera.TEST_PROFILE} <= set(profiles)
    test = profiles[camera.TEST_PROFILE]
    for name in camera.TRAIN_PROFILES:
        train = profiles[name]
        assert train.ccm != test.ccm and train.cfa != test.cfa and train.demosaic != test.demosaic
        assert train.shot_range != test.shot_range and train.jpeg_quality != test.jpeg_quality
        # the test range overlaps each training range without equalling it
        assert test.shot_range[0] < train.shot_range[1] and train.shot_range[0] < test.shot_range[1]


def test_unknown_profile_lists_known_names():
    with pytest.raises(DataError, match="unknown camera profile 'canon'.*nam-like.*polyu-like.*sidd-like"):
        get_profile("canon")


@pytest.mark.parametrize(
    "change, message",
    [
        ({"cfa": "RGBG"}, "cfa"),
        ({"demosaic": "ahd"}, "demosaic"),
        ({"shot_range": (1e-2, 1e-3)}, "shot_range"),
        ({"ccm": ((2.0, 0.0, 0.0), (0.0, 1.0, 0.0), (0.0, 0.0, 1.0))}, "rows must sum to 1"),
        ({"jpeg_quality": 0}, "jpeg_quality"),
    ],
)
def test_invalid_profile_is_rejected(change, message):
    with pytest.raises(DataError, match=message):
        dataclasses.replace(get_profile("sidd-like"), **change)


@pytest.mark.parametrize("bad", [np.zeros((8, 8), np.float32), np.zeros((8, 8, 3), np.uint8), _flat(1.5, 4, 4)])
def test_bad_clean_images_are_rejected(bad):
    with pytest.raises(DataError, match="expected"):
        simulate(bad, "sidd-like", np.random.default_rng(0))
    with pytest.raises(DataError, match="synthetic_mix"):
        synthetic_mix(bad, np.random.default_rng(0))


# --- simulate: contract --------------------------------------------------------------------------


@pytest.mark.parametrize("name", PROFILE_NAMES)
def test_simulate_is_deterministic_given_the_seed(name):
    clean = np.random.default_rng(7).random((24, 30, 3), dtype=np.float32)
    a = simulate(clean, name, np.random.default_rng(3))
    b = simulate(clean, get_profile(name), np.random.default_rng(3))
    c = simulate(clean, name, np.random.default_rng(4))
    np.testing.assert_array_equal(a, b)
    assert not np.array_equal(a, c)


@pytest.mark.parametrize("name", PROFILE_NAMES)
@pytest.mark.parametrize("shape", [(32, 40), (31, 39), (7, 2), (1, 1)])
def test_simulate_shape_dtype_range(name, shape):
    clean = np.random.default_rng(0).random((*shape, 3), dtype=np.float32)
    noisy = simulate(clean, name, np.random.default_rng(1))
    assert noisy.shape == (*shape, 3) and noisy.dtype == np.float32
    assert noisy.min() >= 0.0 and noisy.max() <= 1.0
    np.testing.assert_allclose(noisy * 255, np.rint(noisy * 255), atol=1e-4)  # an 8-bit photograph


@pytest.mark.parametrize("name", PROFILE_NAMES)
def test_noise_free_round_trip_keeps_the_image(name):
    """With (almost) no noise, unprocess -> process gives the image back (up to demosaicking and JPEG)."""
    quiet = CameraParams(shot=1e-12, read=1e-14, red_gain=2.0, blue_gain=1.6, digital_gain=1.1)
    grey = _flat(0.4)
    out = simulate(grey, name, np.random.default_rng(0), params=quiet)
    assert np.abs(out - grey).max() <= 2 / 255


# --- simulate: noise statistics ------------------------------------------------------------------


def test_sensor_noise_variance_grows_with_the_signal():
    """Raw domain: variance = shot * x + read, so a bright patch is much noisier than a dark one."""
    rng = np.random.default_rng(0)
    dark = camera.add_sensor_noise(np.full((64, 64), 0.05), FIXED.shot, FIXED.read, rng) - 0.05
    bright = camera.add_sensor_noise(np.full((64, 64), 0.6), FIXED.shot, FIXED.read, rng) - 0.6
    ratio = bright.var() / dark.var()
    expected = (0.6 * FIXED.shot + FIXED.read) / (0.05 * FIXED.shot + FIXED.read)  # ~11.6
    assert ratio > 1.5
    assert ratio == pytest.approx(expected, rel=0.15)


@pytest.mark.parametrize("name", PROFILE_NAMES)
def test_srgb_noise_is_signal_dependent(name):
    """sRGB domain: shot noise rises out of black, the gamma curve compresses it in the highlights.

    Measured (std, 4 x 32x40, shot 2e-3): levels 0.02 / 0.15 / 0.85 give sidd-like 0.019 / 0.030 /
    0.019, polyu-like 0.025 / 0.043 / 0.026, nam-like 0.029 / 0.049 / 0.035 (variance ratios 2.0 to
    3.1); additive Gaussian noise is flat (variance ratio 0.97).
    """
    var = {level: _residuals(name, level).var() for level in (0.02, 0.15, 0.85)}
    assert var[0.15] > 1.5 * var[0.02]
    assert var[0.15] > 1.5 * var[0.85]
    gauss = _gaussian_residuals(0.15).var() / _gaussian_residuals(0.85, seed=1).var()
    assert 0.8 < gauss < 1.25


@pytest.mark.parametrize("name", PROFILE_NAMES)
def test_noise_is_channel_and_spatially_correlated(name):
    """Demosaicking, chroma NR and JPEG correlate neighbours and channels; i.i.d. noise does neither.

    Measured at grey 0.5: R-G correlation 0.34 (sidd-like), 0.50 (polyu-like), 0.45 (nam-like);
    lag-1 autocorrelation 0.68 / 0.46 / 0.43; Gaussian |both| < 0.05.
    """
    res = _residuals(name, 0.5)
    gauss = _gaussian_residuals(0.5)
    assert _rg_corr(res) > 0.2 and abs(_rg_corr(gauss)) < 0.05
    assert _lag1(res) > 0.3 and abs(_lag1(gauss)) < 0.05


def _signature(name: str, seed: int) -> np.ndarray:
    """Noise std and lag-1 autocorrelation on grey 0.5 at a fixed noise level."""
    res = _residuals(name, 0.5, seed=seed)
    return np.array([res.std(), _lag1(res)])


def test_test_profile_noise_differs_from_both_training_profiles():
    """At the same raw noise level the test camera's noise looks different: nam-like vs sidd-like
    differ in spatial correlation (lag-1 0.42 vs 0.68), nam-like vs polyu-like in strength (std
    0.040 vs 0.031, its stronger colour matrix); two draws of one profile differ by < 5 %."""
    test = _signature(camera.TEST_PROFILE, seed=0)
    same = np.abs(np.log(_signature(camera.TEST_PROFILE, seed=1) / test))
    assert same.max() < math.log(1.1)
    for name in camera.TRAIN_PROFILES:
        diff = np.abs(np.log(_signature(name, seed=0) / test))
        assert diff.max() > math.log(1.2), (name, diff)


# --- the paper's synthetic mix -------------------------------------------------------------------


@pytest.mark.parametrize("n, p, q", [(3840, 0.01, 0.3), (3840, 0.0042, 0.77), (36, 0.005, 0.5), (10, 0.0, 0.5)])
def test_salt_and_pepper_counts_follow_the_ceil_formula(n, p, q):
    assert camera.salt_and_pepper_counts(n, p, q) == (math.ceil(p * n * q), math.ceil(p * n * (1 - q)))


def test_salt_and_pepper_sets_exactly_the_formula_counts():
    x = _flat(0.5)  # N = 32 * 40 * 3 = 3840
    out = camera.salt_and_pepper(x, 0.01, 0.3, np.random.default_rng(0))
    assert (out == 1).sum() == math.ceil(0.01 * 3840 * 0.3) == 12
    assert (out == 0).sum() == math.ceil(0.01 * 3840 * 0.7) == 27
    assert ((out == 0.5) | (out == 0) | (out == 1)).all() and (out == 0.5).sum() == 3840 - 39
    assert x.min() == 0.5  # the input is not modified


def test_salt_and_pepper_reaches_every_element_including_the_last_row_column_channel():
    x = _flat(0.5, 3, 4)
    rng = np.random.default_rng(0)
    hit = np.zeros(x.shape, bool)
    for _ in range(200):
        hit |= camera.salt_and_pepper(x, 0.1, 0.5, rng) != 0.5
    assert hit.all() and hit[-1, -1, -1]


def test_synthetic_mix_contract():
    clean = np.random.default_rng(0).random((32, 40, 3), dtype=np.float32)
    a = synthetic_mix(clean, np.random.default_rng(5))
    b = synthetic_mix(clean, np.random.default_rng(5))
    np.testing.assert_array_equal(a, b)
    assert a.shape == clean.shape and a.dtype == np.float32
    assert a.min() >= 0.0 and a.max() <= 1.0
    sigma = np.std(a - clean)
    assert 3 / 255 < sigma < 0.35  # some noise, never garbage
    assert not np.array_equal(a, synthetic_mix(clean, np.random.default_rng(6)))
