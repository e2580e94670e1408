"""Training-free anchors: non-local means with the noise level estimated per image.

scikit-image's ``denoise_nl_means`` docstring: with ``sigma`` given, "a reasonable starting point is
h = 0.8 * sigma when fast_mode is True"; patch size 5 and search distance 6 follow its NLM gallery
example. sigma is scikit-image's ``estimate_sigma`` estimator (Donoho & Johnstone's robust median of
the finest diagonal db2 wavelet coefficients, per channel, averaged over channels), written out here
because scikit-image needs PyWavelets for it, which is not a dependency of this project; a test
checks the two agree where PyWavelets is installed. BM3D is not offered: the ``bm3d`` package is
not installed in this environment.
"""
from __future__ import annotations

import math

import numpy as np
from scipy.stats import norm
from skimage.restoration import denoise_nl_means

NLM_DEFAULTS = {"patch_size": 5, "patch_distance": 6, "h_factor": 0.8, "fast_mode": True}


_R3, _NORM = math.sqrt(3.0), 4.0 * math.sqrt(2.0)
# Daubechies-2 decomposition high-pass filter (PyWavelets' ``Wavelet("db2").dec_hi``).
DB2_DEC_HI = np.array([-(1 + _R3), 3 + _R3, -(3 - _R3), 1 - _R3]) / _NORM


def _db2_detail(x: np.ndarray, axis: int) -> np.ndarray:
    """One level of db2 high-pass filtering and down-sampling along ``axis``, symmetric extension
    (PyWavelets' ``dwt`` detail coefficients, mode "symmetric": length ⌊(n + 3) / 2⌋)."""
    x = np.moveaxis(x, axis, -1)
    f = len(DB2_DEC_HI)
    ext = np.concatenate([x[..., : f - 1][..., ::-1], x, x[..., -(f - 1):][..., ::-1]], axis=-1)
    n_out = (x.shape[-1] + f - 1) // 2
    # d[i] = Σ_j h[j]·x[2i + 1 − j]: in the extended signal, index 2i + f − j
    d = sum(DB2_DEC_HI[j] * ext[..., f - j :: 2][..., :n_out] for j in range(f))
    return np.moveaxis(d, -1, axis)


def noise_sigma(channel: np.ndarray) -> float:
    """Robust noise standard deviation of one 2-D channel: median(|HH|) / Φ⁻¹(0.75) over the
    non-zero finest diagonal db2 coefficients (Donoho & Johnstone 1994, §4.2; what
    ``skimage.restoration.estimate_sigma`` computes)."""
    hh = _db2_detail(_db2_detail(np.asarray(channel, dtype=np.float64), 0), 1)
    hh = hh[np.nonzero(hh)]
    return float(np.median(np.abs(hh)) / norm.ppf(0.75)) if hh.size else 0.0


def nlm_sigma(image: np.ndarray) -> float:
    """The noise standard deviation of a float HWC image, estimated per channel and averaged."""
    return float(np.mean([noise_sigma(image[..., c]) for c in range(image.shape[-1])]))


def nlm_denoise(image: np.ndarray, *, patch_size: int = 5, patch_distance: int = 6, h_factor: float = 0.8,
                fast_mode: bool = True) -> tuple[np.ndarray, float]:
    """Non-local means of a float HWC image in [0, 1]; returns (denoised, the estimated sigma)."""
    if image.ndim != 3 or image.shape[-1] != 3:
        raise ValueError(f"NLM expects an HWC RGB image, got shape {image.shape}")
    image = np.asarray(image, dtype=np.float64)
    sigma = nlm_sigma(image)
    out = denoise_nl_means(image, patch_size=patch_size, patch_distance=patch_distance, h=h_factor * sigma,
                           sigma=sigma, fast_mode=fast_mode, channel_axis=-1, preserve_range=True)
    return out, sigma
