"""The embedded default: scikit-image's bundled colour photographs, no download needed.

Fixed splits by image (docs/design.md §5). Pre-training sees microscopy, astronomy, a colour wheel, a
retina, one motorcycle view and scikit-image's seven grey-level photographs and textures (camera,
brick, grass, gravel, moon, coins, clock; grey copied to R, G and B — the colour pipeline still
gives their noise colour) with the synthetic noise mix; MTL trains on two more photographs plus
those images, now with the two training camera profiles, and validates on a third photograph;
test uses two photographs that no other split sees, with a different camera profile — a real shift
for test-time adaptation. The grey images add the fine natural texture (fur, grass, gravel) that
the colour set lacks; ``data.grey_images: false`` leaves them out (the ``quick-choices`` study
compares both on validation).
"""
from __future__ import annotations

from functools import lru_cache

import numpy as np
import skimage.data

from bench.data.base import ImagePair

_GREY = ("camera", "brick", "grass", "gravel", "moon", "coins", "clock")
_PRETRAIN = ("hubble_deep_field", "immunohistochemistry", "retina", "colorwheel", "motorcycle_right", *_GREY)
SPLITS: dict[str, tuple[str, ...]] = {
    "pretrain": _PRETRAIN,
    # MTL also sees the pre-training images (now with camera noise): two photographs alone overfit
    # within a few epochs. Validation and test images appear nowhere else.
    "train": ("rocket", "motorcycle_left", *_PRETRAIN),
    "val": ("astronaut",),
    "test": ("chelsea", "coffee"),
}


def _load(name: str) -> np.ndarray:
    if name.startswith("motorcycle_"):
        left, right, _ = skimage.data.stereo_motorcycle()
        img = left if name.endswith("left") else right
    else:
        img = getattr(skimage.data, name)()
    if img.ndim == 2:  # a grey-level image: the same values in R, G and B
        img = np.repeat(img[..., None], 3, axis=-1)
    return np.ascontiguousarray(img[..., :3], dtype=np.float32) / 255.0


@lru_cache(maxsize=None)
def clean_images(split: str, grey: bool = True) -> tuple[ImagePair, ...]:
    """The clean images of one split (noise is added by the caller); ``grey=False`` leaves out the
    grey photographs and textures (``data.grey_images``)."""
    return tuple(ImagePair(name, _load(name)) for name in SPLITS[split] if grey or name not in _GREY)
