"""Image-quality metrics on what a saved 8-bit PNG would hold (clamp to [0,1], quantize).

- ``psnr``: piq, data range 1 (equal to scikit-image's to ~1e-5 dB).
- ``ssim``: the paper's convention, scikit-image defaults (7×7 uniform window, sample
  covariance, per channel, averaged); what Tables 1–3 report.
- ``ssim_gauss``: piq's Gaussian SSIM (11×11, σ 1.5) without downsampling, the convention of most
  newer papers; equal to scikit-image with gaussian_weights=True, use_sample_covariance=False.
"""
from __future__ import annotations

import numpy as np
import piq
import torch
from skimage.metrics import structural_similarity
from torch import Tensor


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
