"""Training-free anchors: non-local means and BM3D, with the noise level estimated per image.

What: ``classical_denoise(image, algorithm, **options)`` denoises one float HWC RGB image in [0, 1]
with no network and no training data, and returns the estimated noise sigma with the result. Why:
the TTA study needs anchors that are real denoisers, tuned the same way the learned entries are
(their options chosen on validation by a ``select:`` grid), to say what adapting a network buys over
a classical method that sees the same single noisy image.

sigma is scikit-image's ``estimate_sigma(image, channel_axis=-1, average_sigmas=True)`` (Donoho &
Johnstone's robust median of the finest diagonal wavelet coefficients, per channel, averaged over
channels; it needs PyWavelets), times the option ``sigma_scale`` (default 1.0) so a validation grid
can correct the estimator's bias on real noise.

nlm   scikit-image ``denoise_nl_means`` (Buades, Coll & Morel, A non-local algorithm for image
      denoising, CVPR 2005). Its docstring: with ``sigma`` given, "a reasonable starting point is
      h = 0.8 * sigma when fast_mode is True"; patch size 5 and search distance 6 follow its NLM
      gallery example. h = h_factor · sigma, sigma already scaled.
bm3d  Dabov, Foi, Katkovnik & Egiazarian, Image denoising by sparse 3-D transform-domain
      collaborative filtering, IEEE TIP 2007, through the ``bm3d`` package (Mäkinen, Azzari & Foi;
      PyPI ``bm3d``): ``bm3d.bm3d_rgb(image, sigma_psd=sigma, profile="np")``, which transforms the
      image to the opponent colour space (the package's default ``colorspace="opp"``, a
      luminance-chrominance transform), matches blocks on the luminance, and transforms back; the
      result is clipped to [0, 1]. The named profile runs single-threaded (``num_threads = 1``): the
      package's default, one thread per core, sums in a varying order and so differs from run to run
      (by ~1e-6), and a tile must equal the whole image bit for bit. About 1.2 s per 64×64 tile.
"""
from __future__ import annotations

from typing import Any

import numpy as np
from skimage.restoration import denoise_nl_means, estimate_sigma

ALGORITHMS = ("nlm", "bm3d")
NLM_DEFAULTS = {"algorithm": "nlm", "sigma_scale": 1.0, "patch_size": 5, "patch_distance": 6, "h_factor": 0.8,
                "fast_mode": True}
BM3D_DEFAULTS = {"algorithm": "bm3d", "sigma_scale": 1.0, "profile": "np"}
# the bm3d package's named profiles (``bm3d._select_profile``) and their classes in ``bm3d.profiles``
_BM3D_PROFILE_CLASSES = {"np": "BM3DProfile", "refilter": "BM3DProfileRefilter", "vn": "BM3DProfileVN",
                         "vn_old": "BM3DProfileVNOld", "high": "BM3DProfileHigh", "deb": "BM3DProfileDeb"}
BM3D_PROFILES = tuple(_BM3D_PROFILE_CLASSES)


def _rgb(image: np.ndarray, what: str) -> np.ndarray:
    if image.ndim != 3 or image.shape[-1] != 3:
        raise ValueError(f"{what} expects an HWC RGB image, got shape {image.shape}")
    return np.asarray(image, dtype=np.float64)


def estimated_sigma(image: np.ndarray) -> float:
    """scikit-image's noise standard deviation estimate of a float HWC image, averaged over channels."""
    return float(estimate_sigma(image, channel_axis=-1, average_sigmas=True))


def nlm_denoise(image: np.ndarray, *, sigma_scale: float = 1.0, patch_size: int = 5, patch_distance: int = 6,
                h_factor: float = 0.8, fast_mode: bool = True) -> tuple[np.ndarray, float]:
    """Non-local means of a float HWC image in [0, 1]; returns (denoised, sigma_scale × the estimated sigma)."""
    image = _rgb(image, "NLM")
    sigma = sigma_scale * estimated_sigma(image)
    out = denoise_nl_means(image, patch_size=patch_size, patch_distance=patch_distance, h=h_factor * sigma,
                           sigma=sigma, fast_mode=fast_mode, channel_axis=-1, preserve_range=True)
    return out, sigma


def bm3d_denoise(image: np.ndarray, *, sigma_scale: float = 1.0, profile: str = "np") -> tuple[np.ndarray, float]:
    """BM3D of a float HWC image in [0, 1]; returns (denoised clipped to [0, 1], sigma_scale × the estimated sigma)."""
    import bm3d
    import bm3d.profiles

    if profile not in _BM3D_PROFILE_CLASSES:
        raise ValueError(f"unknown BM3D profile {profile!r}; known: {', '.join(BM3D_PROFILES)}")
    image = _rgb(image, "BM3D")
    sigma = sigma_scale * estimated_sigma(image)
    settings = getattr(bm3d.profiles, _BM3D_PROFILE_CLASSES[profile])()
    settings.num_threads = 1  # deterministic (see the module docstring)
    out = bm3d.bm3d_rgb(image, sigma_psd=sigma, profile=settings)
    return np.clip(np.asarray(out, dtype=np.float64), 0.0, 1.0), sigma


_DENOISERS = {"nlm": nlm_denoise, "bm3d": bm3d_denoise}


def classical_denoise(image: np.ndarray, algorithm: str, **options: Any) -> tuple[np.ndarray, float]:
    """``algorithm`` (nlm | bm3d) on a float HWC image in [0, 1] with its ``options``; returns
    (denoised, sigma_estimated), the sigma the denoiser used (the estimate times ``sigma_scale``)."""
    if algorithm not in _DENOISERS:
        raise ValueError(f"unknown classical algorithm {algorithm!r}; known: {', '.join(ALGORITHMS)}")
    return _DENOISERS[algorithm](image, **options)


__all__ = ["ALGORITHMS", "BM3D_DEFAULTS", "BM3D_PROFILES", "NLM_DEFAULTS", "bm3d_denoise", "classical_denoise",
           "estimated_sigma", "nlm_denoise"]
