"""Chi et al.'s parallel-head baseline (docs/design.md §4): the auxiliary head reads the body features.

Same body and primary head as ours; the auxiliary head sees F (not the clean prediction) together
with the primary residual r: conv 32→32 on F, concat r (35 ch), conv 35→32, ResBlock, conv 32→3.
620,928 parameters; both heads are adapted at test time.
"""
from __future__ import annotations

import torch
from torch import Tensor, nn

from .blocks import conv3x3, res_stack
from .ours import MaskNet, MultiTaskModel, MultiTaskRestorer, PrimaryHead, UNetBody


class ParallelAuxHead(nn.Module):
    def __init__(self, ch: int = 32) -> None:
        super().__init__()
        self.feat = conv3x3(ch, ch)
        self.inp = conv3x3(ch + 3, ch)
        self.blocks = res_stack(ch, 1)
        self.out = conv3x3(ch, 3)

    def forward(self, features: Tensor, clean: Tensor, residual: Tensor) -> Tensor:
        x = torch.cat([self.feat(features), residual], dim=1)
        return self.out(self.blocks(self.inp(x)))


def build_chi(base: int = 32, scale: int = 16, mask_base: int = 32) -> MultiTaskModel:
    restorer = MultiTaskRestorer(UNetBody(base, scale), PrimaryHead(base), ParallelAuxHead(base))
    return MultiTaskModel(restorer, MaskNet(mask_base))

