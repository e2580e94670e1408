"""Running trials in several processes on one machine (``--workers N``).

Each worker is a fresh (spawned) process with ``cores // N`` torch threads that claims queued
trials (``bench.runtime.trialqueue``) from the same Optuna storage until none is left, logging to the same
MLflow store; stages two workers both need are
trained once (``StageCache`` locks them). Several machines share a study the same way, through an
RDB storage URL and a common MLFLOW_TRACKING_URI.
"""
from __future__ import annotations

import multiprocessing as mp
import os
from typing import Callable

from bench.core.errors import BenchError

THREADS_ENV = "BENCH_THREADS"  # "auto": each training stage takes the cores free when it starts


def usable_cores() -> int:
    """The cores this process may run on (its affinity mask; cgroup quotas are not read)."""
    try:
        return len(os.sched_getaffinity(0))
    except (AttributeError, OSError):
        return os.cpu_count() or 1


def free_threads(cores: int, others: float) -> int:
    """Threads for a stage that starts now: the ``cores`` not taken by ``others`` runnable threads
    of other processes; at least 1."""
    return max(1, min(cores, cores - int(max(0.0, others) + 0.5)))


def runnable_others(samples: int = 5, interval: float = 0.02, read=None) -> float | None:
    """Runnable threads of other processes right now: the median over ``samples`` readings of
    /proc/loadavg's "running/total" field, less this reading thread (the 1-minute average lags
    by a minute and counts our own previous stage). None where /proc/loadavg is missing."""
    import statistics
    import time

    def read_proc() -> str:
        with open("/proc/loadavg") as fh:
            return fh.read()

    read = read or read_proc
    counts = []
    for i in range(samples):
        try:
            counts.append(int(read().split()[3].split("/")[0]) - 1)
        except (OSError, IndexError, ValueError):
            return None
        if i + 1 < samples:
            time.sleep(interval)
    return float(statistics.median(counts))


def stage_threads() -> int | None:
    """With ``BENCH_THREADS=auto``, set torch's thread count from the cores free now and return
    it; else leave it alone (None). Off by default: the thread count changes how sums are split,
    so results of a study would depend on the machine's load (README, reproducibility)."""
    if os.environ.get(THREADS_ENV, "").lower() != "auto":
        return None
    import torch

    others = runnable_others()
    if others is None:
        return None
    n = free_threads(usable_cores(), others)
    torch.set_num_threads(n)
    return n


def parent_death_signal(sig: int = 15) -> bool:
    """Linux: ask the kernel to send this process ``sig`` (SIGTERM) when its parent dies (kept
    across exec, so also usable in a subprocess's ``preexec_fn``); returns whether it could."""
    import sys

    if not sys.platform.startswith("linux"):
        return False
    import ctypes

    try:
        return ctypes.CDLL(None, use_errno=True).prctl(1, sig) == 0  # PR_SET_PDEATHSIG
    except (OSError, AttributeError):
        return False


def _die_with_parent(parent: int) -> None:
    """Ask the kernel to end this worker when its parent dies (Linux), so that a ``kill -9`` of
    the command never leaves workers training on; elsewhere a thread watches the parent's pid."""
    if parent_death_signal():
        if os.getppid() != parent:  # died before the request took effect
            os._exit(1)
        return
    import threading
    import time

    def watch() -> None:
        while os.getppid() == parent:
            time.sleep(1.0)
        os._exit(1)
    threading.Thread(target=watch, daemon=True).start()


def _worker(fn: Callable[[], None], threads: int, parent: int) -> None:
    import sys

    _die_with_parent(parent)
    from bench.core.allocator import keep_freed_memory

    keep_freed_memory()  # the parent checked BENCH_MALLOC already
    import torch

    torch.set_num_threads(threads)
    try:
        fn()
    except KeyboardInterrupt:  # Ctrl-C reaches every worker; the parent says it once
        sys.exit(130)
    except BenchError as e:
        print(f"error: {e}", file=sys.stderr)
        sys.exit(2)


def run_workers(fn: Callable[[], None], workers: int) -> None:
    """Call ``fn()`` in ``workers`` processes (in this one if 1); each claims trials until none is left.

    Ctrl-C reaches the workers too (one process group): they end their trials and runs, and this
    process waits for them before it exits."""
    if workers < 1:
        raise BenchError(f"--workers {workers}: expected a positive integer")
    if workers == 1:
        fn()
        return
    threads = max(1, usable_cores() // workers)
    ctx = mp.get_context("spawn")
    procs = [ctx.Process(target=_worker, args=(fn, threads, os.getpid())) for _ in range(workers)]
    try:
        for p in procs:
            p.start()
        for p in procs:
            p.join()
    except KeyboardInterrupt:
        for p in procs:
            p.join(timeout=30)
            if p.is_alive():
                p.terminate()
        raise
    failed = [p.exitcode for p in procs if p.exitcode]
    if failed:
        raise BenchError(f"{len(failed)} of {workers} workers failed (exit codes {failed}); rerun to retry their trials")
