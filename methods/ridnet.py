"""RIDNet: "Real Image Denoising with Feature Attention" (Anwar & Barnes, ICCV 2019).

A single-scale residual network: a head conv, four enhancement-attention modules (EAM) and a
tail conv whose output is added to the noisy input. Structure and widths follow the public code
(docs/design.md §4): 1,499,347 parameters at the defaults, the paper's "1.49 M".

The public code wraps the network in EDSR-style mean-shift 1×1 convs (subtract the DIV2K RGB mean
at the input, add it back to the tail output *before* the global skip). They are off by default
here: that code works on 0..255 images, our inputs are in [0, 1], where the shift is a constant
that the head conv's bias absorbs anyway, and adding the mean to the residual only offsets the
initial prediction. ``mean_shift=True`` restores them (mean in [0, 1] units, frozen, +24
parameters) for a like-for-like count.
"""
from __future__ import annotations

import torch
from torch import Tensor, nn

#: DIV2K RGB mean used by the EDSR family's mean shift, in [0, 1] units.
DIV2K_RGB_MEAN: tuple[float, float, float] = (0.4488, 0.4371, 0.4040)


def conv3x3(cin: int, cout: int, dilation: int = 1) -> nn.Conv2d:
    """3×3 conv with bias; padding equal to the dilation keeps the spatial size."""
    return nn.Conv2d(cin, cout, 3, padding=dilation, dilation=dilation, bias=True)


def conv_relu(cin: int, cout: int, dilation: int = 1) -> nn.Sequential:
    return nn.Sequential(conv3x3(cin, cout, dilation), nn.ReLU())


class MeanShift(nn.Conv2d):
    """Frozen 1×1 conv that adds ``sign · mean`` per channel (EDSR convention, std 1)."""

    def __init__(self, mean: tuple[float, ...], sign: int) -> None:
        c = len(mean)
        super().__init__(c, c, 1, bias=True)
        with torch.no_grad():
            self.weight.copy_(torch.eye(c).view(c, c, 1, 1))
            self.bias.copy_(sign * torch.tensor(mean))
        self.requires_grad_(False)


class MergeRunUnit(nn.Module):
    """Two dilated branches (1, 2) and (3, 4), concatenated, fused by a 3×3 conv, plus input."""

    def __init__(self, ch: int) -> None:
        super().__init__()
        self.branch_a = nn.Sequential(conv_relu(ch, ch, 1), conv_relu(ch, ch, 2))
        self.branch_b = nn.Sequential(conv_relu(ch, ch, 3), conv_relu(ch, ch, 4))
        self.fuse = conv_relu(2 * ch, ch)

    def forward(self, x: Tensor) -> Tensor:
        return self.fuse(torch.cat((self.branch_a(x), self.branch_b(x)), dim=1)) + x


class ResidualBlock(nn.Module):
    """conv → ReLU → conv, then ReLU(out + in)."""

    def __init__(self, ch: int) -> None:
        super().__init__()
        self.body = nn.Sequential(conv_relu(ch, ch), conv3x3(ch, ch))

    def forward(self, x: Tensor) -> Tensor:
        return torch.relu(self.body(x) + x)


class EnhancedResidualBlock(nn.Module):
    """conv → ReLU → conv → ReLU → 1×1 conv, then ReLU(out + in)."""

    def __init__(self, ch: int) -> None:
        super().__init__()
        self.body = nn.Sequential(conv_relu(ch, ch), conv_relu(ch, ch), nn.Conv2d(ch, ch, 1, bias=True))

    def forward(self, x: Tensor) -> Tensor:
        return torch.relu(self.body(x) + x)


class ChannelAttention(nn.Module):
    """Squeeze-and-excitation: global average pool, 1×1 C→C/r, ReLU, 1×1 C/r→C, sigmoid, scale."""

    def __init__(self, ch: int, reduction: int = 16) -> None:
        super().__init__()
        self.gate = nn.Sequential(
            nn.AdaptiveAvgPool2d(1),
            nn.Conv2d(ch, ch // reduction, 1, bias=True),
            nn.ReLU(),
            nn.Conv2d(ch // reduction, ch, 1, bias=True),
            nn.Sigmoid(),
        )

    def forward(self, x: Tensor) -> Tensor:
        return x * self.gate(x)


class EAM(nn.Sequential):
    """Enhancement attention module: merge-and-run → residual → enhanced residual → attention."""

    def __init__(self, ch: int) -> None:
        super().__init__(MergeRunUnit(ch), ResidualBlock(ch), EnhancedResidualBlock(ch), ChannelAttention(ch))


class RIDNet(nn.Module):
    """RIDNet denoiser: ``forward(noisy) -> clean``, (B, 3, H, W) in [0, 1], any H and W."""

    def __init__(self, n_feats: int = 64, n_blocks: int = 4, mean_shift: bool = False) -> None:
        super().__init__()
        self.sub_mean = MeanShift(DIV2K_RGB_MEAN, -1) if mean_shift else nn.Identity()
        self.add_mean = MeanShift(DIV2K_RGB_MEAN, +1) if mean_shift else nn.Identity()
        self.head = conv_relu(3, n_feats)
        self.body = nn.Sequential(*(EAM(n_feats) for _ in range(n_blocks)))
        self.tail = conv3x3(n_feats, 3)

    def forward(self, noisy: Tensor) -> Tensor:
        residual = self.tail(self.body(self.head(self.sub_mean(noisy))))
        return self.add_mean(residual) + noisy
