"""Running trials in several processes on one machine (``--workers N``).

Each worker is a fresh (spawned) process with ``cores // N`` torch threads that runs its share of
the trials against the same Optuna storage and MLflow store; stages two workers both need are
trained once (``StageCache`` locks them). Several machines share a study the same way, through an
RDB storage URL and a common MLFLOW_TRACKING_URI.
"""
from __future__ import annotations

import multiprocessing as mp
import os
from typing import Callable

from .errors import BenchError


def _worker(fn: Callable[[int], None], n: int, threads: int) -> None:
    import torch

    torch.set_num_threads(threads)
    fn(n)


def run_workers(fn: Callable[[int], None], n_trials: int, workers: int) -> None:
    """Call ``fn(k)`` in ``workers`` processes with the k summing to ``n_trials`` (in-process if 1)."""
    if workers < 1:
        raise BenchError(f"--workers {workers}: expected a positive integer")
    workers = min(workers, n_trials)
    if workers <= 1:
        fn(n_trials)
        return
    shares = [n_trials // workers + (i < n_trials % workers) for i in range(workers)]
    threads = max(1, (os.cpu_count() or 1) // workers)
    ctx = mp.get_context("spawn")
    procs = [ctx.Process(target=_worker, args=(fn, k, threads)) for k in shares]
    for p in procs:
        p.start()
    for p in procs:
        p.join()
    failed = [p.exitcode for p in procs if p.exitcode]
    if failed:
        raise BenchError(f"{len(failed)} of {workers} workers failed (exit codes {failed}); rerun to retry their trials")
