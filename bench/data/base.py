"""The one small interface every data source speaks: named clean/noisy image pairs in memory."""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np


@dataclass(frozen=True)
class ImagePair:
    """A clean image and, for paired (real) data, its noisy twin.

    Both are float32 arrays of shape (H, W, 3) in [0, 1]. ``noisy`` is None for clean-only
    sources (DIV2K, the embedded default's pre-training set), whose noise is synthesised on the fly.
    """

    name: str
    clean: np.ndarray
    noisy: np.ndarray | None = None

    def __post_init__(self) -> None:
        for arr in (self.clean, self.noisy):
            if arr is None:
                continue
            if arr.ndim != 3 or arr.shape[2] != 3 or arr.dtype != np.float32:
                raise ValueError(f"{self.name}: expected float32 (H, W, 3), got {arr.dtype} {arr.shape}")
        if self.noisy is not None and self.noisy.shape != self.clean.shape:
            raise ValueError(f"{self.name}: noisy {self.noisy.shape} != clean {self.clean.shape}")
