"""Random training patches: crop, flip/rotate, then noise (fresh at every draw for clean sources).

Two ways to pick the image a patch comes from (``data.sampler``):

- ``area``: each patch draws an image with probability proportional to its area, so every pixel is
  equally likely to be seen; the embedded presets use it.
- ``per-image``: a shuffled walk over all images, each visited once per walk with a fresh random
  crop — the official code's epoch (a shuffled map-style data set). On the paper's data this is
  what gives PolyU's small crops their share: by area they would get ~1 % of the MTL patches.
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Sequence, get_args

import numpy as np
import torch

from bench.core.config import SamplerMode
from bench.core.errors import DataError
from bench.data.base import ImagePair, as_float
from bench.data.noise import NoiseFn

SAMPLER_MODES: tuple[str, ...] = get_args(SamplerMode)


@dataclass
class Source:
    """Training images, the noise models to draw from when they are clean-only, and how a
    sampler picks among them (``data.sampler``)."""

    pairs: Sequence[ImagePair]
    noise: Sequence[NoiseFn] = ()
    sampler: SamplerMode = "area"

    def __post_init__(self) -> None:
        if not self.pairs:
            raise DataError("a training source has no images")
        if self.sampler not in SAMPLER_MODES:
            raise DataError(f"unknown sampler {self.sampler!r}; expected one of: {', '.join(SAMPLER_MODES)}")
        if any(p.noisy is None for p in self.pairs) and not self.noise:
            raise DataError("clean-only training images need a noise model")


@dataclass
class DataBundle:
    """What a data source loads (``bench.data.load_data``): the training sources and the fixed evaluation pairs."""
    pretrain: Source
    train: Source
    val: list[ImagePair]
    test: list[ImagePair]
    val_synthetic: list[ImagePair]  # validation images with the pre-training noise (Table 1's "val")
    key: str  # hash of everything that determines the data


class PatchSampler:
    """Batches of (noisy, clean) patches as (B,3,P,P) float tensors.

    The images are drawn by area, or come from a per-image walk (:meth:`next_walk`); each gets a patch
    cropped at random, flipped and rotated by a random multiple of 90°; clean-only images get
    fresh noise from a randomly chosen noise model (applied to the patch only, which is what makes
    this cheap). In ``per-image`` mode a batch never spans two walks: the walk's last batch is
    short when the image count is not a multiple of the batch (as a data loader without
    ``drop_last``). The walk's remaining order is the sampler's state (:meth:`state_dict`), which
    goes into in-stage checkpoints so that a resumed stage draws the same patches.
    """

    def __init__(self, source: Source, patch: int, batch: int, rng: np.random.Generator) -> None:
        small = [p.name for p in source.pairs if min(p.clean.shape[:2]) < patch]
        if small:
            raise DataError(f"image {small[0]} is smaller than the patch size {patch}; use a smaller patch")
        self.source, self.patch, self.batch, self.rng, self.mode = source, patch, batch, rng, source.sampler
        areas = np.array([p.clean.shape[0] * p.clean.shape[1] for p in source.pairs], dtype=np.float64)
        self.weights = areas / areas.sum()
        self.walk: list[int] = []  # per-image: the current walk's images not visited yet, in order

    def steps_per_epoch(self, setting: int | str) -> int:
        """``setting`` as a step count: ``"auto"`` is one walk, ceil(images / batch)."""
        return math.ceil(len(self.source.pairs) / self.batch) if setting == "auto" else int(setting)

    def next_walk(self) -> list[int]:
        """``per-image``: indices (into ``source.pairs``) of the next batch's images; advances the walk."""
        n = len(self.source.pairs)
        if not self.walk:
            self.walk = [int(i) for i in self.rng.permutation(n)]
        picked, self.walk = self.walk[: self.batch], self.walk[self.batch :]
        return picked

    def state_dict(self) -> dict:
        return {"mode": self.mode, "walk": list(self.walk)}

    def load_state_dict(self, state: dict) -> None:
        if state.get("mode") != self.mode:
            raise DataError(f"checkpoint was written by a {state.get('mode')!r} sampler, not {self.mode!r}")
        self.walk = [int(i) for i in state["walk"]]

    def _one(self, index: int) -> tuple[np.ndarray, np.ndarray]:
        rng, p = self.rng, self.patch
        pair = self.source.pairs[index]
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

    def patches(self, images: Sequence[int]) -> tuple[torch.Tensor, torch.Tensor]:
        """(noisy, clean) patches, one per listed image, with fresh crops, flips and noise."""
        return _stack([self._one(i) for i in images])

    def __call__(self) -> tuple[torch.Tensor, torch.Tensor]:
        if self.mode == "per-image":
            return self.patches(self.next_walk())
        n = len(self.source.pairs)  # pick, crop, pick, crop…: another draw order would change every area-mode result
        return _stack([self._one(self.rng.choice(n, p=self.weights)) for _ in range(self.batch)])


def _stack(patches: list[tuple[np.ndarray, np.ndarray]]) -> tuple[torch.Tensor, torch.Tensor]:
    noisy, clean = zip(*patches)
    to = lambda xs: torch.from_numpy(np.stack(xs)).permute(0, 3, 1, 2).contiguous()  # noqa: E731
    return to(noisy), to(clean)
