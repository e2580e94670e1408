"""MIRNet: "Learning Enriched Features for Real Image Restoration and Enhancement" (Zamir et al., ECCV 2020).

A full-resolution network of recursive residual groups (RRG), each a chain of multi-scale
residual blocks (MSRB). An MSRB runs ``height`` parallel streams (n_feat·chan_factor^k channels at
1/2^k scale) for ``width`` columns of dual-attention units (DAU); between columns every stream
receives all streams, resampled to its scale and merged by selective kernel feature fusion (SKFF).
Structure, widths and formulas follow the public code (docs/design.md §4).

Two weight-sharing quirks of the public code are kept because the published size (31.79 M) is only
reached with them: each stream's DAU is one module reused in every column (``share_dau=True``;
42,239,263 parameters without it) and one PReLU instance serves as the activation of every DAU
(kept in both settings). Unlike the public code, which shares that PReLU across every network in the
process (a mutable default argument), the sharing here is per network.

Any H × W is accepted: the input is padded (reflect, bottom/right) to a multiple of 2^(height-1)
and the output cropped back.
"""
from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import Tensor, nn


def conv(cin: int, cout: int, kernel_size: int, bias: bool) -> nn.Conv2d:
    """Stride-1 conv with 'same' padding."""
    return nn.Conv2d(cin, cout, kernel_size, padding=kernel_size // 2, bias=bias)


def pad_to_multiple(x: Tensor, multiple: int) -> Tensor:
    """Pad the bottom/right of ``x`` to a multiple of ``multiple``: reflect where possible, else replicate."""
    h, w = x.shape[-2:]
    ph, pw = -h % multiple, -w % multiple
    if ph == 0 and pw == 0:
        return x
    mode = "reflect" if ph < h and pw < w else "replicate"
    return F.pad(x, (0, pw, 0, ph), mode=mode)


class BlurDownsample(nn.Module):
    """Anti-aliased stride-2 downsampling: fixed depthwise [1,2,1]ᵀ[1,2,1]/16 blur, reflect padding 1."""

    kernel: Tensor

    def __init__(self) -> None:
        super().__init__()
        k = torch.tensor([1.0, 2.0, 1.0])
        self.register_buffer("kernel", (torch.outer(k, k) / 16).view(1, 1, 3, 3), persistent=False)

    def forward(self, x: Tensor) -> Tensor:
        c = x.shape[1]
        return F.conv2d(F.pad(x, (1, 1, 1, 1), mode="reflect"), self.kernel.expand(c, 1, 3, 3), stride=2, groups=c)


class ResidualDownsample(nn.Module):
    """Halve the resolution, cin → cout channels: (1×1, PReLU, 3×3, PReLU, blur↓, 1×1) + (blur↓, 1×1)."""

    def __init__(self, cin: int, cout: int, bias: bool) -> None:
        super().__init__()
        self.main = nn.Sequential(
            conv(cin, cin, 1, bias), nn.PReLU(),
            conv(cin, cin, 3, bias), nn.PReLU(),
            BlurDownsample(), conv(cin, cout, 1, bias),
        )
        self.shortcut = nn.Sequential(BlurDownsample(), conv(cin, cout, 1, bias))

    def forward(self, x: Tensor) -> Tensor:
        return self.main(x) + self.shortcut(x)


class ResidualUpsample(nn.Module):
    """Double the resolution, cin → cout channels: (1×1, PReLU, 3×3 transposed ↑2, PReLU, 1×1) + (bilinear ↑2, 1×1)."""

    def __init__(self, cin: int, cout: int, bias: bool) -> None:
        super().__init__()
        self.main = nn.Sequential(
            conv(cin, cin, 1, bias), nn.PReLU(),
            nn.ConvTranspose2d(cin, cin, 3, stride=2, padding=1, output_padding=1, bias=bias), nn.PReLU(),
            conv(cin, cout, 1, bias),
        )
        self.shortcut = nn.Sequential(
            nn.Upsample(scale_factor=2, mode="bilinear", align_corners=False), conv(cin, cout, 1, bias)
        )

    def forward(self, x: Tensor) -> Tensor:
        return self.main(x) + self.shortcut(x)


def resample(widths: Sequence[int], src: int, dst: int, bias: bool) -> nn.Sequential:
    """Chain of residual down/up-samplers taking stream ``src`` to the scale and width of stream ``dst``."""
    step = 1 if dst > src else -1
    block = ResidualDownsample if step > 0 else ResidualUpsample
    return nn.Sequential(*(block(widths[k], widths[k + step], bias) for k in range(src, dst, step)))


class SpatialAttention(nn.Module):
    """Channel-wise max and mean → 5×5 conv 2→1 → sigmoid → scale."""

    def __init__(self, bias: bool) -> None:
        super().__init__()
        self.conv = conv(2, 1, 5, bias)

    def forward(self, x: Tensor) -> Tensor:
        pooled = torch.cat((x.amax(dim=1, keepdim=True), x.mean(dim=1, keepdim=True)), dim=1)
        return x * torch.sigmoid(self.conv(pooled))


class ChannelAttention(nn.Module):
    """Global average pool → 1×1 C→C/r → ReLU → 1×1 C/r→C → sigmoid → scale."""

    def __init__(self, ch: int, reduction: int, bias: bool) -> None:
        super().__init__()
        self.gate = nn.Sequential(
            nn.AdaptiveAvgPool2d(1),
            conv(ch, ch // reduction, 1, bias), nn.ReLU(),
            conv(ch // reduction, ch, 1, bias), nn.Sigmoid(),
        )

    def forward(self, x: Tensor) -> Tensor:
        return x * self.gate(x)


class DAU(nn.Module):
    """Dual-attention unit: 3×3, act, 3×3; spatial and channel attention in parallel; 1×1 2C→C; + input.

    ``act`` is taken as given, so one instance can be shared by many units (the public code's quirk).
    """

    def __init__(self, ch: int, act: nn.Module, bias: bool, reduction: int = 8) -> None:
        super().__init__()
        self.body = nn.Sequential(conv(ch, ch, 3, bias), act, conv(ch, ch, 3, bias))
        self.spatial = SpatialAttention(bias)
        self.channel = ChannelAttention(ch, reduction, bias)
        self.fuse = conv(2 * ch, ch, 1, bias)

    def forward(self, x: Tensor) -> Tensor:
        res = self.body(x)
        return self.fuse(torch.cat((self.spatial(res), self.channel(res)), dim=1)) + x


class SKFF(nn.Module):
    """Selective kernel feature fusion: softmax-over-inputs channel weights from the pooled sum.

    The weighted sum is accumulated input by input rather than over a stacked copy of all inputs.
    """

    def __init__(self, ch: int, n_inputs: int, bias: bool, reduction: int = 8) -> None:
        super().__init__()
        hidden = max(ch // reduction, 4)
        self.squeeze = nn.Sequential(nn.AdaptiveAvgPool2d(1), conv(ch, hidden, 1, bias), nn.PReLU())
        self.excite = nn.ModuleList(conv(hidden, ch, 1, bias) for _ in range(n_inputs))

    def forward(self, feats: Sequence[Tensor]) -> Tensor:
        total = feats[0]
        for f in feats[1:]:
            total = total + f
        z = self.squeeze(total)
        weights = torch.stack([fc(z) for fc in self.excite], dim=1).softmax(dim=1)  # (B, n, C, 1, 1)
        out = weights[:, 0] * feats[0]
        for i in range(1, len(feats)):
            out = out + weights[:, i] * feats[i]
        return out


class MSRB(nn.Module):
    """Multi-scale residual block: ``height`` streams × ``width`` DAU columns, SKFF exchange, 3×3 conv, + input."""

    def __init__(
        self, n_feat: int, chan_factor: int, height: int, width: int, act: nn.Module, share_dau: bool, bias: bool
    ) -> None:
        super().__init__()
        self.height, self.width, self.share_dau = height, width, share_dau
        widths = [n_feat * chan_factor**k for k in range(height)]
        n_units = 1 if share_dau else width
        self.dau = nn.ModuleList(
            nn.ModuleList(DAU(widths[k], act, bias) for _ in range(n_units)) for k in range(height)
        )
        # Resamplers between every ordered pair of streams, keyed "src_dst" (the first column reuses
        # the k-1 → k down-samplers); the final merge to full scale has its own up-samplers.
        self.resample = nn.ModuleDict(
            {f"{s}_{d}": resample(widths, s, d, bias) for s in range(height) for d in range(height) if s != d}
        )
        self.final_up = nn.ModuleDict({str(k): resample(widths, k, 0, bias) for k in range(1, height)})
        self.fuse = nn.ModuleList(SKFF(widths[k], height, bias) for k in range(height))
        self.conv_out = conv(n_feat, n_feat, 3, bias)

    def _dau(self, stream: int, column: int) -> nn.Module:
        return self.dau[stream][0 if self.share_dau else column]

    def forward(self, x: Tensor) -> Tensor:
        feats: list[Tensor] = []
        h = x
        for k in range(self.height):  # first column: top-down chain
            if k:
                h = self.resample[f"{k - 1}_{k}"](h)
            h = self._dau(k, 0)(h)
            feats.append(h)
        for col in range(1, self.width):  # later columns: every stream sees all streams
            fused = [
                self.fuse[d]([f if s == d else self.resample[f"{s}_{d}"](f) for s, f in enumerate(feats)])
                for d in range(self.height)
            ]
            feats = [self._dau(k, col)(f) for k, f in enumerate(fused)]
            del fused
        merged = self.fuse[0]([f if k == 0 else self.final_up[str(k)](f) for k, f in enumerate(feats)])
        del feats
        return self.conv_out(merged) + x


class RRG(nn.Module):
    """Recursive residual group: MSRBs, a 3×3 conv, + input."""

    def __init__(
        self, n_feat: int, n_msrb: int, chan_factor: int, height: int, width: int,
        act: nn.Module, share_dau: bool, bias: bool,
    ) -> None:
        super().__init__()
        self.body = nn.Sequential(
            *(MSRB(n_feat, chan_factor, height, width, act, share_dau, bias) for _ in range(n_msrb))
        )
        self.conv = conv(n_feat, n_feat, 3, bias)

    def forward(self, x: Tensor) -> Tensor:
        return self.conv(self.body(x)) + x


class MIRNet(nn.Module):
    """MIRNet denoiser: ``forward(noisy) -> clean``, (B, 3, H, W), any H and W; global residual."""

    def __init__(
        self,
        n_feat: int = 64,
        chan_factor: int = 2,
        n_rrg: int = 3,
        n_msrb: int = 2,
        height: int = 3,
        width: int = 2,
        share_dau: bool = True,
        bias: bool = False,
    ) -> None:
        super().__init__()
        self.multiple = 2 ** (height - 1)
        self.dau_act = nn.PReLU()  # the one activation shared by every DAU
        self.conv_in = conv(3, n_feat, 3, bias)
        self.body = nn.Sequential(
            *(
                RRG(n_feat, n_msrb, chan_factor, height, width, self.dau_act, share_dau, bias)
                for _ in range(n_rrg)
            )
        )
        self.conv_out = conv(n_feat, 3, 3, bias)

    def forward(self, noisy: Tensor) -> Tensor:
        h, w = noisy.shape[-2:]
        x = pad_to_multiple(noisy, self.multiple)
        out = self.conv_out(self.body(self.conv_in(x))) + x
        return out[..., :h, :w]
