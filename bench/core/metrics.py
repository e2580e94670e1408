"""Image-quality metrics on what a saved 8-bit PNG would hold (clamp to [0,1], quantize).

- ``psnr``: piq, data range 1 (equal to scikit-image's to ~1e-5 dB).
- ``ssim``: the paper's convention, scikit-image defaults (7×7 uniform window, sample
  covariance, per channel, averaged); what Tables 1–3 report.
- ``psnr_float``: the same PSNR on float outputs clamped to [0,1], not rounded: what paired
  differences of test-time adaptation are computed on (they live below one grey level).
- ``ssim_gauss``: piq's Gaussian SSIM (11×11, σ 1.5) without downsampling, the convention of most
  newer papers; equal to scikit-image with gaussian_weights=True, use_sample_covariance=False.
"""
from __future__ import annotations

from typing import Any

import numpy as np
import piq
import torch
from skimage.metrics import structural_similarity
from torch import Tensor

MSE_FLOOR = 1e-10  # a perfect output scores 100 dB instead of infinity


def quantize(x: Tensor) -> Tensor:
    """Clamp to [0,1] and round to 8 bits, as writing a PNG would (a diverged NaN pixel becomes 0)."""
    return torch.round(torch.nan_to_num(x, nan=0.0, posinf=1.0, neginf=0.0).clamp(0, 1) * 255) / 255


def psnr(pred: Tensor, target: Tensor) -> Tensor:
    """Per-image PSNR in dB of (B,3,H,W) tensors after quantization."""
    return piq.psnr(quantize(pred), quantize(target), data_range=1.0, reduction="none")


def ssim_gauss(pred: Tensor, target: Tensor) -> Tensor:
    return piq.ssim(quantize(pred), quantize(target), data_range=1.0, reduction="none", downsample=False)


def ssim(pred: Tensor, target: Tensor) -> Tensor:
    """Per-image SSIM, the paper's convention (scikit-image defaults on HWC float images)."""
    p = quantize(pred).permute(0, 2, 3, 1).double().cpu().numpy()
    t = quantize(target).permute(0, 2, 3, 1).double().cpu().numpy()
    vals = [structural_similarity(a, b, data_range=1.0, channel_axis=-1) for a, b in zip(p, t)]
    return torch.tensor(np.array(vals), dtype=torch.float64)


def image_metrics(pred: Tensor, target: Tensor) -> dict[str, list[float]]:
    """All three metrics, one value per image of the batch."""
    pred, target = pred.float(), target.float()
    return {"psnr": psnr(pred, target).tolist(), "ssim": ssim(pred, target).tolist(),
            "ssim_gauss": ssim_gauss(pred, target).tolist()}


def psnr_float(pred: Any, clean: Any) -> float | np.ndarray:
    """PSNR in dB (data range 1) on float outputs clamped to [0, 1], *not* rounded to 8 bits.

    Paired differences of test-time adaptation live below one grey level, where 8-bit rounding
    (what ``bench.core.metrics.psnr`` measures, a saved PNG) can hide or flip them. Per image over the
    last three axes (HWC or CHW), so a batch gives one value per image; numpy arrays or CPU/GPU
    tensors. NaN in ``pred`` counts as 0 (as ``metrics.quantize`` does); MSE is floored at 1e-10.
    """
    p, c = (np.asarray(x.detach().cpu().numpy() if hasattr(x, "detach") else x, dtype=np.float64)
            for x in (pred, clean))
    if p.shape != c.shape or p.ndim < 3:
        raise ValueError(f"psnr_float: expected two images of the same shape (..., 3 axes), got {p.shape} "
                         f"and {c.shape}")
    p = np.clip(np.nan_to_num(p, nan=0.0, posinf=1.0, neginf=0.0), 0.0, 1.0)
    mse = ((p - np.clip(c, 0.0, 1.0)) ** 2).mean(axis=(-3, -2, -1))
    out = 10.0 * np.log10(1.0 / np.maximum(mse, MSE_FLOOR))
    return float(out) if np.ndim(out) == 0 else out
