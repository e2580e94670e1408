"""A training stage alone and beside a CPU-bound process, in one run: how much a busy machine costs.

Each measurement runs the stage in a fresh Python process (OpenMP reads its wait policy when torch
is imported, so the settings under test must be in the environment before that), with the same
seed, steps and thread count. "Beside" starts a busy loop in another process (bounded in time,
killed when the stage ends), then the stage. The ratio beside / alone is what a busy machine costs
a stage; sharing 2 cores fairly costs ~2×, and the target is ≤ 2.5× on 2 cores.

``python -m bench.perf.contention`` prints the table; ``bench perf --only contention`` puts the same
numbers in the perf report.
"""
from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from typing import Any

# The stage: pre-training (MAXL: aux + meta pass) of the paper's network on 64² patches of a bundled
# photograph, a few steps: the same kernels as `bench run`'s first stage, seconds instead of minutes.
STAGE = r"""
import json, sys, time
import bench  # noqa: F401  (its OpenMP settings, before torch)
import numpy as np
import torch
import methods
from bench.core.config import PretrainConfig
from bench.data import Source
from bench.data.base import ImagePair
from bench.perf.harness import sample_pair
from bench.training.context import TrainContext
from bench.training.pretrain import pretrain
steps, batch, patch = (int(a) for a in sys.argv[1:4])
torch.manual_seed(0)
model = methods.create("ours")
pairs = [ImagePair(f"img{i}", *reversed(sample_pair(max(2 * patch, 128), i, 0))) for i in range(2)]
cfg = PretrainConfig(epochs=1, steps_per_epoch=steps, batch=batch, patch=patch)
ctx = TrainContext(torch.device("cpu"), np.random.default_rng(0), quiet=True)
start, cpu = time.perf_counter(), time.process_time()
pretrain(model, methods.get("ours").recipe, cfg, Source(pairs), ctx)
print(json.dumps({"seconds": time.perf_counter() - start, "cpu_seconds": time.process_time() - cpu,
                  "threads": torch.get_num_threads()}))
"""

BUSY = "import time\nend = time.monotonic() + float(__import__('sys').argv[1])\nwhile time.monotonic() < end:\n    pass\n"

# Environment variables that decide how OpenMP threads wait; cleared for the "spinning" baseline.
WAIT_VARS = ("OMP_WAIT_POLICY", "GOMP_SPINCOUNT", "KMP_BLOCKTIME")


def run_stage(env: dict[str, str], steps: int, batch: int, patch: int, busy: bool, timeout: float = 1800) -> dict:
    """One stage in a fresh process with ``env``; with ``busy`` a busy loop runs beside it."""
    hog = None
    if busy:
        hog = subprocess.Popen([sys.executable, "-c", BUSY, str(timeout)], env=env)
        time.sleep(0.5)  # let it take its core before the stage starts
    try:
        out = subprocess.run([sys.executable, "-c", STAGE, str(steps), str(batch), str(patch)], env=env,
                             capture_output=True, text=True, timeout=timeout, check=True)
    finally:
        if hog is not None:
            hog.kill()
            hog.wait()
    return json.loads(out.stdout.strip().splitlines()[-1])


def settings() -> dict[str, dict[str, str | None]]:
    """The settings compared: OpenMP's default (threads spin at barriers), passive waiting, what bench
    does by default (passive only when another process runs at its start), a short spin (libgomp's
    spin count: ~tens of µs before sleeping; the alternative where passive waiting costs time on an
    idle machine), and bench's opt-in thread choice from the cores free at stage start
    (``bench.runtime.workers.stage_threads``)."""
    return {"spinning (OpenMP default)": {k: None for k in WAIT_VARS} | {"BENCH_OMP_WAIT": "active",
                                                                         "BENCH_THREADS": None},
            "passive wait (BENCH_OMP_WAIT=passive)": {k: None for k in WAIT_VARS} | {
                "BENCH_OMP_WAIT": "passive", "BENCH_THREADS": None},
            "bench default (passive if busy at start)": {k: None for k in WAIT_VARS} | {
                "BENCH_OMP_WAIT": None, "BENCH_THREADS": None},
            "short spin (GOMP_SPINCOUNT=10000)": {k: None for k in WAIT_VARS} | {
                "BENCH_OMP_WAIT": "active", "GOMP_SPINCOUNT": "10000", "BENCH_THREADS": None},
            "passive wait + BENCH_THREADS=auto": {k: None for k in WAIT_VARS} | {
                "BENCH_OMP_WAIT": "passive", "BENCH_THREADS": "auto"}}


def measure(steps: int = 6, batch: int = 4, patch: int = 64, threads: int | None = None,
            log=lambda s: None, rounds: int = 1) -> dict[str, Any]:
    """Alone and beside a busy process, for each of ``settings()``, ``rounds`` times (settings
    interleaved, the median round kept per setting); seconds and ratios."""
    runs: dict[str, list[dict]] = {name: [] for name in settings()}
    for _ in range(rounds):
        for name, r in _one_round(steps, batch, patch, threads, log).items():
            runs[name].append(r)
    rows = {name: sorted(rs, key=lambda r: r["ratio"])[len(rs) // 2] | {"ratios": [r["ratio"] for r in rs]}
            for name, rs in runs.items()}
    return {"stage": f"pretrain (MAXL), {steps} steps of B={batch}, {patch}²", "cpu_count": os.cpu_count(),
            "rounds": rounds, "load_average": [round(x, 2) for x in os.getloadavg()], "settings": rows}


def _one_round(steps: int, batch: int, patch: int, threads: int | None, log) -> dict[str, dict]:
    rows = {}
    for name, changes in settings().items():
        env = dict(os.environ)
        for k, v in changes.items():
            if v is None:
                env.pop(k, None)
            else:
                env[k] = v
        if threads is not None:
            env["OMP_NUM_THREADS"] = str(threads)
        log(f"  {name}: alone")
        alone = run_stage(env, steps, batch, patch, busy=False)
        log(f"  {name}: beside a busy process")
        beside = run_stage(env, steps, batch, patch, busy=True)
        rows[name] = {"alone": alone, "beside": beside, "ratio": beside["seconds"] / alone["seconds"]}
    return rows


def main() -> None:
    import argparse

    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--steps", type=int, default=6)
    ap.add_argument("--batch", type=int, default=4)
    ap.add_argument("--patch", type=int, default=64)
    ap.add_argument("--threads", type=int, default=None)
    ap.add_argument("--rounds", type=int, default=1, help="repeat all settings; the median round is shown")
    a = ap.parse_args()
    res = measure(a.steps, a.batch, a.patch, a.threads, log=lambda s: print(s, file=sys.stderr), rounds=a.rounds)
    print(f"{res['stage']}; {res['cpu_count']} cores; load average at the end {res['load_average']}")
    for name, r in res["settings"].items():
        print(f"{name:30s} alone {r['alone']['seconds']:7.2f} s   beside a busy process "
              f"{r['beside']['seconds']:7.2f} s   ratio {r['ratio']:.2f}×   "
              f"(CPU {r['alone']['cpu_seconds']:.1f} → {r['beside']['cpu_seconds']:.1f} s; ratios of all rounds "
              f"{', '.join(f'{x:.2f}' for x in r['ratios'])})")


if __name__ == "__main__":
    main()
