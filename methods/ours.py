"""The paper's multi-task denoiser f_θ1 and mask network g_θ2 (docs/design.md §1).

f_θ1 = U-Net body → primary head (residual r, clean = noisy + r) → auxiliary head that
reconstructs the noisy input from (clean, r). Only the two heads are adapted at test time, so the
forward pass accepts precomputed body ``features``: the inner loops run the body once and the heads
K times.
"""
from __future__ import annotations

import torch
from torch import Tensor, nn

from .blocks import Down, Up, conv3x3, res_stack


class UNetBody(nn.Module):
    """conv 3→base, then a 3-level encoder/decoder of widths base, base+s, base+2s (544,608 params)."""

    def __init__(self, base: int = 32, scale: int = 16, blocks: int = 2) -> None:
        super().__init__()
        w1, w2, w3 = base, base + scale, base + 2 * scale
        self.stem = conv3x3(3, w1)
        self.enc1, self.enc2, self.enc3 = res_stack(w1, blocks), res_stack(w2, blocks), res_stack(w3, blocks)
        self.down1, self.down2 = Down(w1, w2), Down(w2, w3)
        self.dec3, self.dec2, self.dec1 = res_stack(w3, blocks), res_stack(w2, blocks), res_stack(w1, blocks)
        self.up2, self.up1 = Up(w3, w2), Up(w2, w1)
        self.out_channels = w1

    def forward(self, x: Tensor) -> Tensor:
        e1 = self.enc1(self.stem(x))
        e2 = self.enc2(self.down1(e1))
        e3 = self.enc3(self.down2(e2))
        d2 = self.dec2(self.up2(self.dec3(e3), e2))
        return self.dec1(self.up1(d2, e1))


class PrimaryHead(nn.Module):
    """2 ResBlocks + conv → residual r (37,728 params at width 32)."""

    def __init__(self, ch: int = 32, blocks: int = 2) -> None:
        super().__init__()
        self.blocks = res_stack(ch, blocks)
        self.out = conv3x3(ch, 3)

    def forward(self, features: Tensor) -> Tensor:
        return self.out(self.blocks(features))


class SequentialAuxHead(nn.Module):
    """Ours: conv on concat(clean, r) → ResBlock → conv → predicted noisy (21,024 params)."""

    def __init__(self, ch: int = 32, blocks: int = 1) -> None:
        super().__init__()
        self.inp = conv3x3(6, ch)
        self.blocks = res_stack(ch, blocks)
        self.out = conv3x3(ch, 3)

    def forward(self, features: Tensor, clean: Tensor, residual: Tensor) -> Tensor:
        return self.out(self.blocks(self.inp(torch.cat([clean, residual], dim=1))))


class MultiTaskRestorer(nn.Module):
    """body → primary head (clean) → auxiliary head (noisy reconstruction).

    ``forward(noisy, features=None) -> (clean, noisy_rec)``; pass ``features = self.body(noisy)``
    to skip the body (the inner loops do, since the body is frozen there).
    """

    head_names = ("primary_head", "aux_head")

    def __init__(self, body: nn.Module, primary_head: nn.Module, aux_head: nn.Module) -> None:
        super().__init__()
        self.body, self.primary_head, self.aux_head = body, primary_head, aux_head

    def forward(self, noisy: Tensor, features: Tensor | None = None) -> tuple[Tensor, Tensor]:
        if features is None:
            features = self.body(noisy)
        residual = self.primary_head(features)
        clean = noisy + residual
        return clean, self.aux_head(features, clean, residual)


class MaskNet(nn.Module):
    """conv 3→32, 3 ResBlocks sharing one PReLU, conv 32→1, sigmoid (56,449 params).

    The mask weighs the auxiliary loss per pixel; it is soft (never thresholded).
    """

    def __init__(self, ch: int = 32, blocks: int = 3) -> None:
        super().__init__()
        self.inp = conv3x3(3, ch)
        self.act = nn.PReLU()
        self.blocks = res_stack(ch, blocks, act=self.act)
        self.out = conv3x3(ch, 1)

    def forward(self, noisy: Tensor) -> Tensor:
        return torch.sigmoid(self.out(self.blocks(self.inp(noisy))))


class MultiTaskModel(nn.Module):
    """What a meta-learned method trains: ``.restorer`` (f_θ1) and ``.mask_net`` (g_θ2)."""

    def __init__(self, restorer: MultiTaskRestorer, mask_net: nn.Module) -> None:
        super().__init__()
        self.restorer, self.mask_net = restorer, mask_net

    def forward(self, noisy: Tensor) -> Tensor:
        return self.restorer(noisy)[0]


def build_ours(base: int = 32, scale: int = 16, mask_base: int = 32) -> MultiTaskModel:
    """The paper's network: 603,360 restorer + 56,449 mask parameters at the defaults."""
    body = UNetBody(base, scale)
    restorer = MultiTaskRestorer(body, PrimaryHead(base), SequentialAuxHead(base))
    return MultiTaskModel(restorer, MaskNet(mask_base))
