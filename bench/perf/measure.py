"""Timing and memory primitives for `bench perf`.

Timing: every variant of a case runs in the same process, interleaved (A B A B …) after warm-up,
so slow drifts of background load hit all variants alike; we report the median, the quartiles and
the extremes, and speed-ups as the median of the per-round ratios (each round's variants ran
back to back) beside the ratio of medians. On CPU the process CPU time (all threads,
``time.process_time``) is recorded too: other processes do not inflate it, so with one thread it
is close to what an idle machine's wall clock would show (with several threads it also counts
OpenMP threads spinning at barriers).

Memory (what each number means):
- CUDA: ``torch.cuda.max_memory_allocated`` during the call (absolute, as PyTorch reports it) and
  the same minus what was allocated before the call (what the call itself needed).
- CPU, ``tensor_peak_mib``: the peak of live tensor bytes that the call allocated, from the
  PyTorch profiler's allocation events (``profile_memory=True``) summed in time order — the
  CPU analogue of CUDA's peak-minus-baseline, independent of the allocator's caching. Needs one
  extra (profiled) run per variant.
- CPU, ``rss_peak_mib``: the process's peak resident set size during the call (VmHWM, reset
  before each call through /proc/self/clear_refs; Linux only, else absent). It includes the
  Python interpreter and libraries (~0.3–0.5 GiB), so only differences between variants mean much.
"""
from __future__ import annotations

import os
import re
import statistics
import time
from typing import Any, Callable

import torch

from bench.core.probe import MemoryProbe, MiB, sync


def summary(xs: list[float]) -> dict[str, float | int]:
    """median, quartiles, min, max (seconds) of repeated timings."""
    if not xs:
        return {"n": 0}
    q = statistics.quantiles(xs, n=4, method="inclusive") if len(xs) > 1 else [xs[0]] * 3
    return {"n": len(xs), "median": statistics.median(xs), "q1": q[0], "q3": q[2], "min": min(xs), "max": max(xs)}


def interleaved(fns: dict[str, Callable[[], Any]], *, repeats: int, warmup: int,
                device: torch.device) -> dict[str, dict[str, Any]]:
    """Run every function ``warmup`` times, then ``repeats`` rounds of A B C …, each call timed.

    Returns per name: ``times`` (seconds), ``timing`` (summary) and the memory peaks seen.
    """
    for _ in range(warmup):
        for fn in fns.values():
            fn()
            sync(device)
    times: dict[str, list[float]] = {k: [] for k in fns}
    cpu_times: dict[str, list[float]] = {k: [] for k in fns}
    probes = {k: MemoryProbe(device) for k in fns}
    for _ in range(repeats):
        for name, fn in fns.items():
            sync(device)
            with probes[name]:
                start, cpu_start = time.perf_counter(), time.process_time()
                fn()
                sync(device)
                times[name].append(time.perf_counter() - start)
                cpu_times[name].append(time.process_time() - cpu_start)
    out = {}
    for name in fns:
        p = probes[name]
        mem = ({"cuda_peak_mib": p.peak, "cuda_over_baseline_mib": p.over} if device.type == "cuda"
               else {"rss_peak_mib": p.peak, "rss_growth_mib": p.over})
        out[name] = {"times": times[name], "timing": summary(times[name]),
                     "memory": {k: v for k, v in mem.items() if v is not None}}
        if device.type == "cpu":  # CPU time of all threads: robust to other processes, not to spinning
            out[name].update(cpu_times=cpu_times[name], cpu_timing=summary(cpu_times[name]))
    return out


def speedup(base: list[float], fast: list[float]) -> dict[str, float]:
    """Median of per-round ratios base/fast (the headline) and the ratio of medians."""
    if not base or not fast:
        return {}
    per_round = [b / f for b, f in zip(base, fast)]
    return {"median_of_ratios": statistics.median(per_round),
            "ratio_of_medians": statistics.median(base) / statistics.median(fast),
            "min_ratio": min(per_round), "max_ratio": max(per_round)}


def tensor_peak_mib(fn: Callable[[], Any], device: torch.device) -> float:
    """Peak tensor memory one call needs above what was allocated before it, in MiB.

    CUDA: ``max_memory_allocated`` − ``memory_allocated`` before. CPU: the PyTorch profiler's
    allocation and free events of the call, summed in time order (see the module docstring).
    """
    if device.type == "cuda":
        sync(device)
        torch.cuda.reset_peak_memory_stats(device)
        base = torch.cuda.memory_allocated(device)
        fn()
        sync(device)
        return (torch.cuda.max_memory_allocated(device) - base) / MiB
    os.environ.setdefault("KINETO_LOG_LEVEL", "5")
    from torch.profiler import ProfilerActivity, profile

    with profile(activities=[ProfilerActivity.CPU], profile_memory=True) as prof:
        fn()
    events = [(e.start_ns(), e.nbytes()) for e in prof.profiler.kineto_results.events()
              if e.name() == "[memory]" and e.device_type() == torch.autograd.DeviceType.CPU]
    live = peak = 0
    for _, nbytes in sorted(events):
        live += nbytes
        peak = max(peak, live)
    return peak / MiB


def environment(device: torch.device) -> dict[str, Any]:
    """What the numbers were measured on."""
    import platform

    import numpy

    env: dict[str, Any] = {
        "device": device.type, "torch": torch.__version__, "python": platform.python_version(),
        "numpy": numpy.__version__, "platform": platform.platform(), "threads": torch.get_num_threads(),
        "cpu": _cpu_name(), "cpu_count": os.cpu_count(),
    }
    if device.type == "cuda":
        env.update(gpu=torch.cuda.get_device_name(device), cuda=torch.version.cuda,
                   cudnn=torch.backends.cudnn.version(),
                   gpu_memory_gib=torch.cuda.get_device_properties(device).total_memory / 2**30)
    return env


def load_average() -> list[float] | None:
    try:
        return [round(x, 2) for x in os.getloadavg()]
    except OSError:
        return None


def _cpu_name() -> str:
    try:
        with open("/proc/cpuinfo") as fh:
            m = re.search(r"^model name\s*:\s*(.+)$", fh.read(), re.M)
        if m:
            return m.group(1).strip()
    except OSError:
        pass
    import platform

    return platform.processor() or "unknown"


