"""Choosing an adaptation's values on validation: a row's ``select:`` grid, scored by the paired gain.

A TTA study row may list candidate values (``select: {optimizer: [sgd, adam], lr: [1e-5, 1e-3],
steps: [5, 10]}``). Before the row touches a test instance, every combination runs on the
validation instances of the study's scenarios, and the one with the largest mean paired gain in
float PSNR over the same network without adaptation wins; that entry then runs on test. The test
split never takes part in the choice. Candidates that differ only in ``steps`` share one run: the
float PSNR of every iterate is in the diagnostics, so the gain after K updates is read off the
longest run (the prediction after K, or K−1 for ``predict_after: before-last``, updates).
"""
from __future__ import annotations

import itertools
from typing import Any, Callable, Sequence

import numpy as np
import torch
from torch import nn

from bench.adaptation.registry import Adaptation, get
from bench.adaptation.run import adapt_image
from bench.core.errors import ConfigError
from bench.core.images import to_tensor

SELECTABLE = ("steps", "lr", "optimizer", "mask_threshold", "predict_after", "halve_lr_at")


def candidates(entry: Adaptation, grid: dict[str, Sequence[Any]]) -> list[Adaptation]:
    """Every combination of the grid's values applied to ``entry`` (one-line errors for bad grids)."""
    if not entry.learns:
        raise ConfigError(f"select: adaptation {entry.name!r} does not learn; there is nothing to choose")
    for key, values in grid.items():
        if key not in SELECTABLE:
            raise ConfigError(f"select: {key!r} cannot be chosen; choosable: {', '.join(SELECTABLE)}")
        if not isinstance(values, (list, tuple)) or not values:
            raise ConfigError(f"select.{key}: expected a non-empty list of candidate values, got {values!r}")
    keys = list(grid)
    return [entry.with_(**dict(zip(keys, combo))) for combo in itertools.product(*(grid[k] for k in keys))]


def _run_key(entry: Adaptation) -> tuple:
    """Candidates with the same key differ only in K and share one (longest) run."""
    return (entry.optimizer, entry.lr, entry.mask_threshold, entry.predict_after, entry.halve_lr_at)


def _runs(options: list[Adaptation]) -> list[Adaptation]:
    """One (the longest) candidate per group of candidates that differ only in K."""
    return [max(group, key=lambda e: e.steps) for _, group in
            itertools.groupby(sorted(options, key=lambda e: (repr(_run_key(e)), e.steps)), key=_run_key)]


def adaptations_needed(entry: Adaptation, grid: dict[str, Sequence[Any]], instances: int) -> int:
    """How many single-image adaptations ``choose`` runs (for a progress display)."""
    return instances * (1 + len(_runs(candidates(entry, grid))))


def choose(model: nn.Module, entry: Adaptation, grid: dict[str, Sequence[Any]], pairs: Sequence[Any],
           device: torch.device, seed: int = 0,
           progress: Callable[[], None] | None = None) -> tuple[Adaptation, list[dict]]:
    """The grid's best entry by mean paired validation gain over no adaptation, and one record per
    candidate (its values, mean gain in dB, its standard error, n). Ties go to the earlier candidate.
    ``progress`` is called after each single-image adaptation."""
    options = candidates(entry, grid)
    if not pairs:
        raise ConfigError(f"select: no validation instances to choose {entry.name!r}'s values on")
    tick = progress or (lambda: None)
    tensors = [(to_tensor(p.noisy, device), to_tensor(p.clean, device)) for p in pairs]

    def psnrs(e: Adaptation) -> np.ndarray:
        out = []
        for n, c in tensors:
            out.append(adapt_image(e, model, n, c, diagnostics=True, seed=seed).psnr)
            tick()
        return np.array(out)  # (instances, K+1): PSNR after 0 … K updates

    base = psnrs(get("none"))[:, 0]
    curves = {_run_key(run): psnrs(run) for run in _runs(options)}
    records = []
    for cand in options:
        gains = curves[_run_key(cand)][:, cand.updates_behind_prediction] - base
        records.append({"optimizer": cand.optimizer, "lr": cand.lr, "steps": cand.steps,
                        **{k: getattr(cand, k) for k in grid if k not in ("optimizer", "lr", "steps")},
                        "val_gain_db": float(gains.mean()),
                        "val_gain_se": float(gains.std(ddof=1) / np.sqrt(len(gains))) if len(gains) > 1 else float("nan"),
                        "n": len(gains)})
    best = max(range(len(options)), key=lambda i: (records[i]["val_gain_db"], -i))
    records[best]["chosen"] = True
    return options[best], records


__all__ = ["SELECTABLE", "candidates", "adaptations_needed", "choose"]
