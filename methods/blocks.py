"""Building blocks shared by the multi-task networks (docs/design.md §1): bias-free 3×3 convs, ResBlocks."""
from __future__ import annotations

import torch.nn.functional as F
from torch import Tensor, nn


def conv3x3(cin: int, cout: int) -> nn.Conv2d:
    """The paper's convolution: 3×3, padding 1, no bias."""
    return nn.Conv2d(cin, cout, 3, padding=1, bias=False)


def conv1x1(cin: int, cout: int) -> nn.Conv2d:
    return nn.Conv2d(cin, cout, 1, bias=False)


class ResBlock(nn.Module):
    """conv → act → conv, plus identity (no activation after the sum)."""

    def __init__(self, ch: int, act: nn.Module | None = None) -> None:
        super().__init__()
        self.conv1 = conv3x3(ch, ch)
        self.act = act if act is not None else nn.ReLU()
        self.conv2 = conv3x3(ch, ch)

    def forward(self, x: Tensor) -> Tensor:
        return x + self.conv2(self.act(self.conv1(x)))


def res_stack(ch: int, n: int, act: nn.Module | None = None) -> nn.Sequential:
    """``n`` ResBlocks of width ``ch``; a given ``act`` instance is shared by all of them."""
    return nn.Sequential(*(ResBlock(ch, act) for _ in range(n)))


class Down(nn.Module):
    """Bilinear ×0.5, then a 1×1 conv to the next level's width."""

    def __init__(self, cin: int, cout: int) -> None:
        super().__init__()
        self.conv = conv1x1(cin, cout)

    def forward(self, x: Tensor) -> Tensor:
        return self.conv(F.interpolate(x, scale_factor=0.5, mode="bilinear", align_corners=False))


class Up(nn.Module):
    """Bilinear resize to the skip's size (so any H×W works), 1×1 conv, add the skip."""

    def __init__(self, cin: int, cout: int) -> None:
        super().__init__()
        self.conv = conv1x1(cin, cout)

    def forward(self, x: Tensor, skip: Tensor) -> Tensor:
        x = F.interpolate(x, size=skip.shape[-2:], mode="bilinear", align_corners=False)
        return self.conv(x) + skip


def count_params(module: nn.Module) -> int:
    return sum(p.numel() for p in module.parameters())



class SingleTaskModel(nn.Module):
    """A plain denoiser (the baselines) behind the same ``.restorer`` interface as ours.

    It has no auxiliary head, so there is nothing to adapt at test time.
    """

    def __init__(self, restorer: nn.Module) -> None:
        super().__init__()
        self.restorer = restorer

    def forward(self, noisy: Tensor) -> Tensor:
        return self.restorer(noisy)
