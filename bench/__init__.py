"""ttaid-bench. ``bench.Denoiser`` is imported on first use, so ``import bench`` stays light.

OpenMP threads wait passively (``OMP_WAIT_POLICY=PASSIVE``, read once when torch loads, so it is
set here, before anything in bench imports torch): spinning at barriers made a training stage
several times slower whenever another process held a core (``python -m bench.perf.contention``
measures both). A value the user set wins; ``BENCH_OMP_WAIT=active`` keeps OpenMP's default.
Results do not depend on it (same kernels, same summation order).
"""
from __future__ import annotations

import os
from typing import Any

if os.environ.get("BENCH_OMP_WAIT", "passive") != "active":
    os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

__all__ = ["Denoiser"]


def __getattr__(name: str) -> Any:
    if name == "Denoiser":
        from .denoise import Denoiser

        return Denoiser
    raise AttributeError(f"module 'bench' has no attribute {name!r}")
