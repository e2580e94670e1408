"""The paper's losses (docs/design.md §1). Each is a per-sample mean over C×H×W, averaged over the batch."""
from __future__ import annotations

from torch import Tensor


def l1(pred: Tensor, target: Tensor) -> Tensor:
    """L_pri (and plain L_rec): mean absolute error."""
    return (pred - target).abs().mean()


def aux_loss(rec: Tensor, noisy: Tensor, mask: Tensor | None, weight: Tensor | None = None) -> Tensor:
    """L_MaskRec = mean(M ⊙ |Î_n − I_n|) with M (B,1,H,W) broadcast over channels; L_rec if no mask.

    ``weight`` (H, W), optional, multiplies each pixel's term: a tile's share of a whole image's loss
    (``bench.inference.denoise`` adapts once on the sum over overlapping tiles, each pixel counted once).
    """
    err = (rec - noisy).abs()
    if mask is not None:
        err = err * mask
    if weight is not None:
        err = err * weight
    return err.mean()


def gradient_loss(mask: Tensor, noisy: Tensor) -> Tensor:
    """L_G: L1 between the absolute forward differences of the mask and of the noisy input.

    Along width and height, no padding; the mask's 1-channel difference is broadcast against the
    three RGB channels; mean per direction, summed (λ_G is applied by the caller).
    """
    total = mask.new_zeros(())
    for dim in (-1, -2):
        dm = mask.diff(dim=dim).abs()
        dn = noisy.diff(dim=dim).abs()
        total = total + (dm - dn).abs().mean()
    return total
