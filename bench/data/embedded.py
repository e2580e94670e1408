"""The embedded default: scikit-image's bundled colour photographs, no download needed.

Fixed, disjoint splits by image (DESIGN.md §5). Pre-training sees other content (microscopy,
astronomy, a colour wheel, a retina) with the synthetic noise mix; MTL trains on two photographs
with the two training camera profiles and validates on a third; test uses two photographs that no
other split sees, with a different camera profile — a real shift for test-time adaptation.
"""
from __future__ import annotations

from functools import lru_cache

import numpy as np
import skimage.data

from .base import ImagePair

SPLITS: dict[str, tuple[str, ...]] = {
    "pretrain": ("hubble_deep_field", "immunohistochemistry", "retina", "colorwheel", "motorcycle_right"),
    "train": ("rocket", "motorcycle_left"),
    "val": ("astronaut",),
    "test": ("chelsea", "coffee"),
}


def _load(name: str) -> np.ndarray:
    if name.startswith("motorcycle_"):
        left, right, _ = skimage.data.stereo_motorcycle()
        img = left if name.endswith("left") else right
    else:
        img = getattr(skimage.data, name)()
    return np.ascontiguousarray(img[..., :3], dtype=np.float32) / 255.0


@lru_cache(maxsize=None)
def clean_images(split: str) -> tuple[ImagePair, ...]:
    """The clean images of one split (noise is added by the caller)."""
    return tuple(ImagePair(name, _load(name)) for name in SPLITS[split])
