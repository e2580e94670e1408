"""Zero-Shot Noise2Noise (Mansour & Heckel, CVPR 2023): the pair down-sampler, its loss and its network.

The loss is written for a *denoiser* g (noisy → clean), so that it serves a pre-trained restorer
(LAN's offset, self-supervised fine-tuning) and the zero-shot network alike (that network predicts
the noise, so its denoiser is g(y) = y − f(y)). With D1, D2 the two half-resolution sub-images:

    residual    = ½ (mse(g(D1 y), D2 y) + mse(g(D2 y), D1 y))
    consistency = ½ (mse(g(D1 y), D1 g(y)) + mse(g(D2 y), D2 g(y)))
    loss        = residual + consistency          (mse = mean squared error)
"""
from __future__ import annotations

from typing import Callable

import torch
import torch.nn.functional as F
from torch import Tensor, nn

# D1 averages each 2×2 cell's main diagonal, D2 its anti-diagonal (stride 2, per channel).
D1_KERNEL = ((0.5, 0.0), (0.0, 0.5))
D2_KERNEL = ((0.0, 0.5), (0.5, 0.0))


def crop_even(x: Tensor) -> Tensor:
    """Drop the last row / column of an odd-sized image: the down-sampler needs whole 2×2 cells."""
    h, w = x.shape[-2:]
    if h < 2 or w < 2:
        raise ValueError(f"ZS-N2N needs an image of at least 2×2 pixels, got {h}×{w}")
    return x[..., : h - h % 2, : w - w % 2]


def pair_downsample(x: Tensor) -> tuple[Tensor, Tensor]:
    """(D1 x, D2 x): two (B, C, H/2, W/2) sub-images from stride-2 depthwise convolutions.

    Odd sizes are cropped to even first (``crop_even``).
    """
    x = crop_even(x)
    c = x.shape[1]
    k = torch.tensor((D1_KERNEL, D2_KERNEL), dtype=x.dtype, device=x.device)  # (2, 2, 2)
    d1 = F.conv2d(x, k[0].expand(c, 1, 2, 2), stride=2, groups=c)
    d2 = F.conv2d(x, k[1].expand(c, 1, 2, 2), stride=2, groups=c)
    return d1, d2


def zsn2n_loss(denoise: Callable[[Tensor], Tensor], noisy: Tensor) -> Tensor:
    """The ZS-N2N loss (residual + consistency) of a denoiser ``denoise`` (noisy → clean) on ``noisy``.

    Odd sizes: the image is cropped to even first, and g(y) of the consistency term runs on that crop.
    """
    y = crop_even(noisy)
    d1, d2 = pair_downsample(y)
    g1, g2 = denoise(d1), denoise(d2)
    residual = 0.5 * (F.mse_loss(g1, d2) + F.mse_loss(g2, d1))
    full1, full2 = pair_downsample(denoise(y))
    consistency = 0.5 * (F.mse_loss(g1, full1) + F.mse_loss(g2, full2))
    return residual + consistency


class ZeroShotNet(nn.Module):
    """ZS-N2N's network f (predicts the noise): conv3x3 3→48, LeakyReLU 0.2, conv3x3 48→48,
    LeakyReLU 0.2, conv1x1 48→3, with biases (22,275 parameters at width 48)."""

    def __init__(self, channels: int = 3, width: int = 48) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(channels, width, 3, padding=1)
        self.conv2 = nn.Conv2d(width, width, 3, padding=1)
        self.conv3 = nn.Conv2d(width, channels, 1)

    def forward(self, x: Tensor) -> Tensor:
        x = F.leaky_relu(self.conv1(x), 0.2)
        x = F.leaky_relu(self.conv2(x), 0.2)
        return self.conv3(x)

    def denoise(self, noisy: Tensor) -> Tensor:
        return noisy - self(noisy)


def zero_shot_net(seed: int = 0, device: torch.device | str = "cpu", dtype: torch.dtype = torch.float32) -> ZeroShotNet:
    """A freshly initialised zero-shot network (PyTorch's default init from ``seed``; the global RNG is left alone)."""
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        net = ZeroShotNet()
    return net.to(device=device, dtype=dtype)
