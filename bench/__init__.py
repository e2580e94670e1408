"""ttaid-bench. ``bench.Denoiser`` is imported on first use, so ``import bench`` stays light.

How OpenMP threads wait is read once, when torch loads, so it is chosen here, before anything in
bench imports torch. Spinning at barriers (OpenMP's default) is the fastest on an idle machine but
slows a training stage down severalfold when another process holds a core; passive waiting costs
some speed on an idle machine (``python -m bench.perf.contention`` measures both). So by default
(``BENCH_OMP_WAIT=auto``) threads wait passively only if another process is running when bench
starts (``/proc/loadavg``'s runnable count, three readings); ``passive`` and ``active`` force one
way, and an ``OMP_WAIT_POLICY`` the user set wins. Results do not depend on it (same kernels, same
summation order).
"""
from __future__ import annotations

import os
from typing import Any

WAIT_ENV = "BENCH_OMP_WAIT"


def machine_busy(readings: int = 3, read=None) -> bool:
    """Whether another task is runnable right now (``bench.runtime.workers.runnable_others`` over a few
    quick readings of /proc/loadavg); True where it cannot be read (the safe choice)."""
    from bench.runtime.workers import runnable_others  # light: no torch

    others = runnable_others(samples=readings, interval=0.005, read=read)
    return others is None or others > 0


def wait_policy(setting: str, busy) -> str | None:
    """The OMP_WAIT_POLICY to set for ``BENCH_OMP_WAIT=setting`` (None: OpenMP's default)."""
    if setting == "active":
        return None
    if setting == "passive":
        return "PASSIVE"
    return "PASSIVE" if busy() else None


if "OMP_WAIT_POLICY" not in os.environ:
    _policy = wait_policy(os.environ.get(WAIT_ENV, "auto").lower(), machine_busy)
    if _policy is not None:
        os.environ["OMP_WAIT_POLICY"] = _policy

__all__ = ["Denoiser", "machine_busy", "wait_policy", "WAIT_ENV"]


def __getattr__(name: str) -> Any:
    if name == "Denoiser":
        from bench.inference.denoise import Denoiser

        return Denoiser
    raise AttributeError(f"module 'bench' has no attribute {name!r}")
