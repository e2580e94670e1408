"""The roofline of a `bench perf` run: how many FLOPs each variant does, how fast it does them, and
how fast this machine can do them at best — measured in the same run, so "how far from the limit"
is a number on any machine (docs/performance.md).

FLOPs are PyTorch's count (``torch.utils.flop_counter.FlopCounterMode``): convolutions (forward
and backward) and matrix products, 2 per multiply-add; element-wise work (activations, the loss,
optimizer updates, interpolation) is not counted, so a memory-bound variant shows a low rate.
The peaks are a large fp32 matrix product and a 3×3 convolution of the network's width, each
the best of a few short runs.
"""
from __future__ import annotations

import time
from typing import Any, Callable

import torch
from torch.utils.flop_counter import FlopCounterMode

from bench.core.probe import sync

MATMUL_N = 1024  # square fp32 matrix product, n×n by n×n: 2n³ FLOPs
CONV_SHAPE = (1, 32, 256, 256)  # (batch, channels, H, W) of a 3×3, stride-1, padded convolution, channels in = out


def count_flops(fn: Callable[[], Any]) -> int:
    """FLOPs of one call of ``fn`` (convolutions and matrix products, forward and backward)."""
    with FlopCounterMode(display=False) as counter:
        fn()
    return int(counter.get_total_flops())


def best_rate(fn: Callable[[], Any], flops: float, device: torch.device, seconds: float) -> float:
    """GFLOP/s of ``fn`` (``flops`` per call): the best of repeated calls within about ``seconds``."""
    fn()  # warm-up: kernel selection, allocation
    sync(device)
    best, spent = float("inf"), 0.0
    while spent < seconds or best == float("inf"):
        start = time.perf_counter()
        fn()
        sync(device)
        took = time.perf_counter() - start
        best, spent = min(best, took), spent + took
    return flops / best / 1e9


def peaks(device: torch.device, seconds: float = 1.0) -> dict[str, Any]:
    """The machine's measured fp32 matrix-product and 3×3-convolution rates (GFLOP/s), ~``seconds`` each."""
    n = MATMUL_N
    a, b = torch.randn(n, n, device=device), torch.randn(n, n, device=device)
    batch, ch, h, w = CONV_SHAPE
    x = torch.randn(batch, ch, h, w, device=device)
    conv = torch.nn.Conv2d(ch, ch, 3, padding=1, bias=False).to(device)
    conv_flops = 2 * batch * ch * ch * 9 * h * w
    with torch.no_grad():
        matmul = best_rate(lambda: a @ b, 2 * n**3, device, seconds)
        convolution = best_rate(lambda: conv(x), conv_flops, device, seconds)
    return {"matmul_gflops": matmul, "conv_gflops": convolution,
            "matmul": f"{n}×{n} @ {n}×{n}, fp32",
            "conv": f"3×3 conv, {ch}→{ch} channels, {batch}×{h}×{w}, fp32, forward",
            "threads": torch.get_num_threads() if device.type == "cpu" else None}


def add_rates(variants: dict[str, dict[str, Any]], flops: dict[str, int]) -> None:
    """Each variant's GFLOP per call and achieved GFLOP/s (over its median time)."""
    for name, n in flops.items():
        v = variants.get(name)
        if v is None:
            continue
        median = v.get("timing", {}).get("median")
        v["gflop"] = n / 1e9
        v["gflops_per_s"] = n / 1e9 / median if median else None


__all__ = ["CONV_SHAPE", "MATMUL_N", "add_rates", "best_rate", "count_flops", "peaks"]
