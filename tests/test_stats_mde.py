"""The minimum detectable effect and the float PSNR of paired differences, against hand computations."""
from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from bench.core.metrics import psnr_float
from bench.report.stats import mde, paired_test

# diffs (dB) 0.01 … 0.05: n = 5, sd(ddof=1) = sqrt(2.5e-4) = 0.0158114, sd / sqrt(5) = 0.00707107.
DIFFS = [0.01, 0.02, 0.03, 0.04, 0.05]
SE = math.sqrt(2.5e-4) / math.sqrt(5)


def test_mde_normal_matches_the_hand_computation():
    # z(0.975) = 1.959964, z(0.8) = 0.841621: (1.959964 + 0.841621) * 0.00707107 = 0.0198102
    assert SE == pytest.approx(0.00707107, rel=1e-6)
    assert mde(DIFFS, dist="normal") == pytest.approx((1.959964 + 0.841621) * SE, rel=1e-6)
    assert mde(DIFFS, dist="normal") == pytest.approx(0.0198102, rel=1e-5)


def test_mde_t_matches_the_hand_computation_and_is_the_default():
    # t(0.975, 4 df) = 2.776445, t(0.8, 4 df) = 0.940965: (2.776445 + 0.940965) * 0.00707107 = 0.0262861
    assert mde(DIFFS, dist="t") == pytest.approx((2.776445 + 0.940965) * SE, rel=1e-6)
    assert mde(DIFFS) == pytest.approx(0.0262861, rel=1e-5)


def test_mde_follows_alpha_power_and_n():
    # alpha 0.10, power 0.9, normal: z(0.95) = 1.644854, z(0.9) = 1.281552
    assert mde(DIFFS, alpha=0.10, power=0.9, dist="normal") == pytest.approx((1.644854 + 1.281552) * SE, rel=1e-6)
    # four times the instances with the same spread: the MDE halves (normal) — sqrt(n) scaling
    assert mde(DIFFS * 4, dist="normal") == pytest.approx(
        mde(DIFFS, dist="normal") / 2 * np.std(DIFFS * 4, ddof=1) / np.std(DIFFS, ddof=1), rel=1e-9)
    # from n = 64 the t and normal versions agree within 2 %
    d = np.random.default_rng(0).normal(0, 0.05, 64)
    assert 1.0 < mde(d) / mde(d, dist="normal") < 1.02


def test_mde_edge_cases():
    assert math.isnan(mde([0.3]))
    assert math.isnan(mde([]))
    assert mde([0.1, float("nan"), 0.2, 0.3], dist="normal") == pytest.approx(mde([0.1, 0.2, 0.3], dist="normal"))
    assert mde([0.2, 0.2, 0.2]) == pytest.approx(0.0, abs=1e-12)  # no spread: any effect is detectable
    with pytest.raises(ValueError, match="dist"):
        mde(DIFFS, dist="z")
    with pytest.raises(ValueError, match="power"):
        mde(DIFFS, power=1.0)


def test_psnr_float_matches_the_hand_computation():
    clean = np.full((4, 4, 3), 0.5, np.float32)
    # error 0.01 everywhere: MSE 1e-4 -> 40 dB; error 0.02: MSE 4e-4 -> 40 - 20 log10 2 = 33.979400 dB
    assert psnr_float(clean + 0.01, clean) == pytest.approx(40.0, abs=1e-4)
    assert psnr_float(clean - 0.02, clean) == pytest.approx(33.979400, abs=1e-4)


def test_paired_difference_of_float_psnr_equals_the_hand_difference_below_one_grey_level():
    """Outputs off by 0.255 and 0.3825 grey levels: 8-bit rounding makes them identical, float does not."""
    clean = np.full((3, 8, 8, 3), 0.4, np.float64)  # 0.4 * 255 = 102, exactly on the 8-bit grid
    offsets_a = np.array([0.001, 0.002, 0.004])[:, None, None, None]
    a, b = clean + offsets_a, clean + 1.5 * offsets_a
    # by hand: PSNR = -20 log10(offset), so a - b = 20 log10(1.5) = 3.521825 dB for every image
    diff = psnr_float(a, clean) - psnr_float(b, clean)
    np.testing.assert_allclose(psnr_float(a, clean), [60.0, 53.979400, 47.958800], atol=1e-4)
    np.testing.assert_allclose(diff, 3.521825, atol=1e-5)
    assert paired_test(diff, n_boot=200)["mean"] == pytest.approx(3.521825, abs=1e-5)
    # what 8-bit rounding would see for the first image: both round to the clean image, no difference
    q = lambda x: np.round(x * 255) / 255  # noqa: E731
    assert np.array_equal(q(a[0]), q(clean[0])) and np.array_equal(q(b[0]), q(clean[0]))


def test_psnr_float_clamps_not_rounds_and_takes_tensors():
    clean = np.ones((2, 2, 3), np.float32)
    assert psnr_float(np.full_like(clean, 1.3), clean) == pytest.approx(100.0)  # clamped: perfect, floored MSE
    nan = np.full_like(clean, np.nan)
    assert psnr_float(nan, clean) == pytest.approx(0.0)  # NaN counts as 0: MSE 1
    pred = torch.full((2, 3, 4, 4), 0.5)
    target = torch.stack([torch.full((3, 4, 4), 0.51), torch.full((3, 4, 4), 0.52)])
    np.testing.assert_allclose(psnr_float(pred, target), [40.0, 33.979400], atol=1e-4)
    with pytest.raises(ValueError, match="same shape"):
        psnr_float(np.zeros((4, 4, 3)), np.zeros((4, 4, 1)))
