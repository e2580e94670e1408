"""Running trials in several processes on one machine (``--workers N``).

Each worker is a fresh (spawned) process with ``cores // N`` torch threads that claims queued
trials (``bench.trialqueue``) from the same Optuna storage until none is left, logging to the same
MLflow store; stages two workers both need are
trained once (``StageCache`` locks them). Several machines share a study the same way, through an
RDB storage URL and a common MLFLOW_TRACKING_URI.
"""
from __future__ import annotations

import multiprocessing as mp
import os
from typing import Callable

from .errors import BenchError


def _worker(fn: Callable[[], None], threads: int) -> None:
    import torch

    torch.set_num_threads(threads)
    fn()


def run_workers(fn: Callable[[], None], workers: int) -> None:
    """Call ``fn()`` in ``workers`` processes (in this one if 1); each claims trials until none is left."""
    if workers < 1:
        raise BenchError(f"--workers {workers}: expected a positive integer")
    if workers == 1:
        fn()
        return
    threads = max(1, (os.cpu_count() or 1) // workers)
    ctx = mp.get_context("spawn")
    procs = [ctx.Process(target=_worker, args=(fn, threads)) for _ in range(workers)]
    for p in procs:
        p.start()
    for p in procs:
        p.join()
    failed = [p.exitcode for p in procs if p.exitcode]
    if failed:
        raise BenchError(f"{len(failed)} of {workers} workers failed (exit codes {failed}); rerun to retry their trials")
