"""A Noise2Self-style blind-spot loss (Batson & Royer, Noise2Self: Blind Denoising by
Self-Supervision, ICML 2019), and an adaptation entry that fine-tunes every restorer weight on it.

J-invariance by masking: the pixels of one phase of a g×g grid are replaced by the mean of their
four neighbours (none of which is in that phase), the denoiser runs on that image, and the loss is
the squared error against the noisy image on the replaced pixels only. A denoiser cannot copy a
pixel it never saw, so the loss is minimised by predicting the clean signal for independent noise.
Every phase is used at every step (g² forward passes), so the loss is deterministic.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor

from bench.adaptation.families import Loss
from bench.adaptation.registry import Adaptation

NOISE2SELF = "Batson & Royer, Noise2Self: Blind Denoising by Self-Supervision, ICML 2019"


def neighbour_mean(x: Tensor) -> Tensor:
    """The mean of each pixel's four neighbours, per channel (reflected at the border)."""
    k = torch.tensor([[0.0, 0.25, 0.0], [0.25, 0.0, 0.25], [0.0, 0.25, 0.0]], dtype=x.dtype, device=x.device)
    c = x.shape[1]
    return F.conv2d(F.pad(x, (1, 1, 1, 1), mode="reflect"), k.expand(c, 1, 3, 3), groups=c)


def phase_masks(height: int, width: int, grid: int, like: Tensor) -> list[Tensor]:
    """One (1, 1, H, W) 0/1 mask per phase of a ``grid``×``grid`` lattice."""
    masks = []
    for i in range(grid):
        for j in range(grid):
            m = torch.zeros(1, 1, height, width, dtype=like.dtype, device=like.device)
            m[..., i::grid, j::grid] = 1
            masks.append(m)
    return masks


class BlindSpot(Loss):
    """The masked-pixel loss of Noise2Self on the entry's denoiser (any moves that give one)."""

    name = "blind-spot"
    requires = "restorer"
    description = "Noise2Self: squared error on pixels hidden from the denoiser (grid phases, neighbour fill)"

    def __init__(self, grid: int = 2) -> None:
        self.grid = grid

    def bind(self, entry, model, moved, clean):
        noisy = moved.noisy
        fill = neighbour_mean(noisy)
        masks = phase_masks(noisy.shape[-2], noisy.shape[-1], self.grid, noisy)
        inputs = [noisy * (1 - m) + fill * m for m in masks]  # fixed during the steps: computed once

        def loss(p):
            total = noisy.new_zeros(())
            for m, x in zip(masks, inputs):
                err = (moved.denoise(p, x) - noisy) ** 2 * m
                total = total + err.sum() / (m.sum() * noisy.shape[1])
            return total / len(masks)

        return loss


N2S_FINETUNE = Adaptation(
    "n2s-finetune", "all", BlindSpot(),
    "example plugin: fine-tune every restorer weight on a Noise2Self blind-spot loss (2×2 grid phases, "
    "neighbour fill), Adam lr 1e-4, 5 steps",
    f"{NOISE2SELF}; ttaid-bench-example-plugin", optimizer="adam", steps=5, lr=1e-4)
