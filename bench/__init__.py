"""ttaid-bench. ``bench.Denoiser`` is imported on first use, so ``import bench`` stays light."""
from __future__ import annotations

from typing import Any

__all__ = ["Denoiser"]


def __getattr__(name: str) -> Any:
    if name == "Denoiser":
        from .denoise import Denoiser

        return Denoiser
    raise AttributeError(f"module 'bench' has no attribute {name!r}")
