"""Random training patches: crop, flip/rotate, then noise (fresh at every draw for clean sources)."""
from __future__ import annotations

from dataclasses import dataclass
from typing import Sequence

import numpy as np
import torch

from ..errors import DataError
from .base import ImagePair, as_float
from .noise import NoiseFn


@dataclass
class Source:
    """Training images and, when they are clean-only, the noise models to draw from."""

    pairs: Sequence[ImagePair]
    noise: Sequence[NoiseFn] = ()

    def __post_init__(self) -> None:
        if not self.pairs:
            raise DataError("a training source has no images")
        if any(p.noisy is None for p in self.pairs) and not self.noise:
            raise DataError("clean-only training images need a noise model")


class PatchSampler:
    """Batches of (noisy, clean) patches as (B,3,P,P) float tensors.

    An image is picked with probability proportional to its area, a patch cropped at random,
    flipped and rotated by a random multiple of 90°; clean-only images get fresh noise from a
    randomly chosen noise model (applied to the patch only, which is what makes this cheap).
    """

    def __init__(self, source: Source, patch: int, batch: int, rng: np.random.Generator) -> None:
        small = [p.name for p in source.pairs if min(p.clean.shape[:2]) < patch]
        if small:
            raise DataError(f"image {small[0]} is smaller than the patch size {patch}; use a smaller patch")
        self.source, self.patch, self.batch, self.rng = source, patch, batch, rng
        areas = np.array([p.clean.shape[0] * p.clean.shape[1] for p in source.pairs], dtype=np.float64)
        self.weights = areas / areas.sum()

    def _one(self) -> tuple[np.ndarray, np.ndarray]:
        rng, p = self.rng, self.patch
        pair = self.source.pairs[rng.choice(len(self.source.pairs), p=self.weights)]
        h, w = pair.clean.shape[:2]
        y, x = rng.integers(0, h - p + 1), rng.integers(0, w - p + 1)
        k, flip = int(rng.integers(4)), bool(rng.integers(2))
        stack = [pair.clean] if pair.noisy is None else [pair.clean, pair.noisy]
        crops = []
        for img in stack:
            c = img[y : y + p, x : x + p]
            c = np.rot90(c[:, ::-1] if flip else c, k)
            crops.append(np.ascontiguousarray(as_float(c)))
        clean = crops[0]
        if pair.noisy is None:
            model = self.source.noise[int(rng.integers(len(self.source.noise)))]
            noisy = model(clean, rng).astype(np.float32)
        else:
            noisy = crops[1]
        return noisy, clean

    def __call__(self) -> tuple[torch.Tensor, torch.Tensor]:
        noisy, clean = zip(*(self._one() for _ in range(self.batch)))
        to = lambda xs: torch.from_numpy(np.stack(xs)).permute(0, 3, 1, 2).contiguous()  # noqa: E731
        return to(noisy), to(clean)
