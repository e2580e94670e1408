"""A small DnCNN-style denoiser (Zhang et al., Beyond a Gaussian Denoiser, TIP 2017).

conv 3→c + ReLU, (depth − 2) × (conv c→c + ReLU), conv c→3 predicting the noise; the clean image is
the input minus it. No batch norm: a supervised network the harness trains, evaluates and adapts
with the entries that need only a restorer (none, ssl-finetune, lan-offset, zs-n2n, nlm, and this
plugin's n2s-finetune).
"""
from __future__ import annotations

from torch import Tensor, nn


class DnCNN(nn.Module):
    def __init__(self, depth: int = 5, channels: int = 24) -> None:
        super().__init__()
        layers: list[nn.Module] = [nn.Conv2d(3, channels, 3, padding=1), nn.ReLU()]
        for _ in range(depth - 2):
            layers += [nn.Conv2d(channels, channels, 3, padding=1), nn.ReLU()]
        layers.append(nn.Conv2d(channels, 3, 3, padding=1))
        self.noise = nn.Sequential(*layers)

    def forward(self, noisy: Tensor) -> Tensor:
        return noisy - self.noise(noisy)


def build_dncnn(depth: int = 5, channels: int = 24) -> DnCNN:
    """DnCNN-style denoiser (example plugin): 5 convolutions of width 24, residual noise prediction."""
    return DnCNN(depth, channels)
