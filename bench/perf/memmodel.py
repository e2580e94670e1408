"""How much memory an MTL step needs, as a function of K, batch and patch size (and width).

Measured: the tensor peak of one fast MTL step (``mtl_loss(...).backward()``; see
``measure.tensor_peak_mib``: CUDA max allocated over baseline, or the profiler's live-tensor peak
on CPU) over a small grid. Fitted by ordinary least squares (the large points dominate, which is
what extrapolation to "what fits" needs; the smallest points may be off by ~20%):

    M [MiB] ≈ c0 + B·P²·(a + b·K) + c·B·K

a: bytes per pixel per sample that do not depend on K (body and mask activations kept for the
outer backward, the outer forward/backward); b: bytes per pixel per sample per inner step (the
heads' activations and their backward graph, kept for the second-order outer gradient);
c: per-sample, per-step copies of the adapted parameters; c0: parameters' gradients and the rest.
A held-out larger point checks the extrapolation.
"""
from __future__ import annotations

import math
from typing import Any, Callable

import numpy as np
import torch

from bench.adaptation.inner import mtl_loss
from bench.perf.harness import MTL_HP, build_model
from bench.perf.measure import tensor_peak_mib

GPU_GIB = (16, 24, 40, 80)
RESERVE_GIB = 1.0  # CUDA context, cuDNN workspaces and allocator slack, not in the tensor peak


def grid(device: torch.device, wide: bool) -> tuple[list[tuple[int, int, int]], tuple[int, int, int]]:
    """(B, P, K) points to fit and one held-out point to check the fit on."""
    if device.type == "cuda":
        patches, ks, batches, held = (64, 128, 192), (1, 3, 5, 8), (1, 2, 4), (2, 256, 5)
    else:  # the profiler is slow on CPU: small patches, extrapolate to the held-out 128²
        patches, ks, batches, held = ((32, 64) if wide else (32, 64, 96)), (1, 3, 5), (1, 2), (2, 128, 5)
    return [(b, p, k) for b in batches for p in patches for k in ks], held


def measure_point(width: tuple[int, int], batch: int, patch: int, steps: int, first_order: bool,
                  device: torch.device, seed: int = 0) -> float:
    torch.manual_seed(seed)
    model = build_model(width).to(device)
    noisy = torch.rand(batch, 3, patch, patch, device=device)
    clean = (noisy + 0.05 * torch.randn_like(noisy)).clamp(0, 1)

    def step() -> None:
        model.zero_grad(set_to_none=True)
        mtl_loss(model, noisy, clean, steps=steps, first_order=first_order, **MTL_HP).backward()

    if device.type == "cuda":
        step()  # lazy CUDA/cuDNN initialisation out of the measurement
    peak = tensor_peak_mib(step, device)
    del model, noisy, clean
    if device.type == "cuda":
        torch.cuda.empty_cache()
    return peak


def _features(b: float, p: float, k: float) -> list[float]:
    return [1.0, b * p * p, b * k * p * p, b * k]


def fit(points: list[dict[str, Any]]) -> dict[str, float]:
    X = np.array([_features(q["batch"], q["patch"], q["steps"]) for q in points])
    y = np.array([q["mib"] for q in points])
    coef, *_ = np.linalg.lstsq(X, y, rcond=None)
    pred = X @ coef
    ss_res, ss_tot = float(((y - pred) ** 2).sum()), float(((y - y.mean()) ** 2).sum())
    return {"c0_mib": coef[0], "a_bytes_per_px": coef[1] * 2**20, "b_bytes_per_px_step": coef[2] * 2**20,
            "c_mib_per_sample_step": coef[3], "r2": 1 - ss_res / ss_tot if ss_tot else 1.0,
            "max_rel_residual": float(np.max(np.abs(pred - y) / y))}


def predict(f: dict[str, float], batch: int, patch: int, steps: int) -> float:
    coef = [f["c0_mib"], f["a_bytes_per_px"] / 2**20, f["b_bytes_per_px_step"] / 2**20, f["c_mib_per_sample_step"]]
    return float(np.dot(coef, _features(batch, patch, steps)))


def what_fits(f: dict[str, float], batch: int = 2, patch: int = 128, steps: int = 5) -> list[dict[str, Any]]:
    """Per GPU size: the largest K (at batch, patch), patch (at batch, K) and batch (at patch, K)."""
    rows = []
    for gib in GPU_GIB:
        budget = (gib - RESERVE_GIB) * 1024
        a, b, c = f["a_bytes_per_px"] / 2**20, f["b_bytes_per_px_step"] / 2**20, f["c_mib_per_sample_step"]
        free = budget - f["c0_mib"]
        per_k = batch * (b * patch * patch + c)
        max_k = math.floor((free - batch * a * patch * patch) / per_k) if per_k > 0 else None
        per_px = batch * (a + b * steps)
        max_p = math.isqrt(max(0, int((free - c * batch * steps) / per_px))) if per_px > 0 else None
        per_b = a * patch * patch + steps * (b * patch * patch + c)
        max_b = math.floor(free / per_b) if per_b > 0 else None
        rows.append({"gpu_gib": gib, "max_steps": max_k, "max_patch": max_p and max_p // 8 * 8, "max_batch": max_b})
    return rows


def memory_model(device: torch.device, log: Callable[[str], None] = lambda s: None, seed: int = 0) -> dict[str, Any]:
    """Measure, fit and extrapolate for the paper's network (second and first order) and a 2× wider one."""
    nets = [("ours, second order", (32, 16), False), ("ours, first order", (32, 16), True),
            ("2× wider (base 64, scale 32), second order", (64, 32), False)]
    out: dict[str, Any] = {"formula": "M_MiB = c0 + B·P²·(a + b·K)/2^20 + c·B·K", "reserve_gib": RESERVE_GIB,
                           "networks": []}
    for name, width, first_order in nets:
        pts, held = grid(device, wide=width[0] > 32)
        points = []
        for bb, p, k in pts:
            log(f"  memory model [{name}] B={bb} P={p} K={k}")
            points.append({"batch": bb, "patch": p, "steps": k,
                           "mib": measure_point(width, bb, p, k, first_order, device, seed)})
        f = fit(points)
        log(f"  memory model [{name}] held-out B={held[0]} P={held[1]} K={held[2]}")
        measured = measure_point(width, *held, first_order, device, seed)
        predicted = predict(f, *held)
        out["networks"].append({
            "name": name, "width": list(width), "first_order": first_order, "points": points, "fit": f,
            "held_out": {"batch": held[0], "patch": held[1], "steps": held[2], "measured_mib": measured,
                         "predicted_mib": predicted, "rel_error": (predicted - measured) / measured},
            "paper_setting_mib": predict(f, 2, 128, 5), "what_fits": what_fits(f)})
    return out
