"""Peak memory and device synchronisation around one call: what the adaptation executor reports per
image and what ``bench perf`` builds its timings on."""
from __future__ import annotations

import re
from typing import Any

import torch

MiB = 2.0**20


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def _read_status(field: str) -> int | None:
    try:
        with open("/proc/self/status") as fh:
            m = re.search(rf"^{field}:\s+(\d+) kB", fh.read(), re.M)
        return int(m.group(1)) * 1024 if m else None
    except OSError:
        return None


def _reset_rss_peak() -> bool:
    try:
        with open("/proc/self/clear_refs", "w") as fh:
            fh.write("5")
        return True
    except OSError:
        return False


class MemoryProbe:
    """Peak memory of one call: CUDA allocator stats, or the process RSS peak on CPU."""

    def __init__(self, device: torch.device) -> None:
        self.device = device
        self.peak: float | None = None  # MiB, max over calls
        self.over: float | None = None

    def __enter__(self) -> "MemoryProbe":
        if self.device.type == "cuda":
            torch.cuda.reset_peak_memory_stats(self.device)
            self._base = torch.cuda.memory_allocated(self.device)
        else:
            self._ok = _reset_rss_peak()
            self._base = _read_status("VmRSS")
        return self

    def __exit__(self, *exc: Any) -> None:
        if self.device.type == "cuda":
            peak = torch.cuda.max_memory_allocated(self.device)
        else:
            peak = _read_status("VmHWM") if self._ok else None
        if peak is None or self._base is None:
            return
        self.peak = max(self.peak or 0.0, peak / MiB)
        self.over = max(self.over or 0.0, (peak - self._base) / MiB)
