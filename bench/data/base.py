"""The one small interface every data source speaks: named clean/noisy image pairs in memory."""
from __future__ import annotations

import re
from dataclasses import dataclass

import numpy as np


@dataclass(frozen=True)
class ImagePair:
    """A clean image and, for paired (real) data, its noisy twin.

    Both are float32 arrays of shape (H, W, 3) in [0, 1], or uint8 (H, W, 3) for large 8-bit
    training sets kept compactly in memory (DIV2K: 6.5 GB as uint8, 26 GB as float32); ``as_float``
    converts a crop. ``noisy`` is None for clean-only sources (DIV2K, the embedded default's
    pre-training set), whose noise is synthesised on the fly.
    """

    name: str
    clean: np.ndarray
    noisy: np.ndarray | None = None

    def __post_init__(self) -> None:
        for arr in (self.clean, self.noisy):
            if arr is None:
                continue
            if arr.ndim != 3 or arr.shape[2] != 3 or arr.dtype not in (np.float32, np.uint8):
                raise ValueError(f"{self.name}: expected float32 or uint8 (H, W, 3), got {arr.dtype} {arr.shape}")
        if self.noisy is not None and self.noisy.shape != self.clean.shape:
            raise ValueError(f"{self.name}: noisy {self.noisy.shape} != clean {self.clean.shape}")


def as_float(arr: np.ndarray) -> np.ndarray:
    """float32 in [0, 1] from a float32 or uint8 array (no copy for float32)."""
    return arr.astype(np.float32) / 255.0 if arr.dtype == np.uint8 else arr


def as_uint8(pair: ImagePair) -> ImagePair:
    """The compact form of an 8-bit image pair (exact for images decoded from 8-bit files)."""
    q = lambda a: None if a is None else np.round(a * 255).astype(np.uint8)  # noqa: E731
    return ImagePair(pair.name, q(pair.clean), q(pair.noisy))


def center_crop(img: np.ndarray, size: int) -> np.ndarray:
    """The central ``size`` x ``size`` window (or the whole side where the image is smaller), contiguous."""
    h, w = img.shape[:2]
    th, tw = min(size, h), min(size, w)
    y, x = (h - th) // 2, (w - tw) // 2
    return np.ascontiguousarray(img[y : y + th, x : x + tw])


_DRAW = re.compile(r"^d\d+$")


def instance_levels(name: str) -> tuple[str, str, str]:
    """(photograph, tile, draw) an instance name encodes.

    ``photo/tNN/dD`` (a TTA scenario's tile NN, noise draw D), ``photo/noise#r`` (a plain study's
    noise model, repeat r), ``scene/key`` (SIDD), ``key`` (one image, one instance). The tile is
    what stays when the photograph and the draw are taken off; an empty part means "one".
    """
    parts = str(name).split("/")
    photo, rest = parts[0], parts[1:]
    draw = ""
    if len(rest) >= 2 and _DRAW.match(rest[-1]):
        draw, rest = rest[-1], rest[:-1]
    tile = "/".join(rest)
    if "#" in tile:
        tile, draw = tile.rsplit("#", 1)
    return photo, tile, draw
