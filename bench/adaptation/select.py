"""Choosing an adaptation's values on validation: a row's ``select:`` grid, scored by the paired gain.

A TTA study row may list candidate values (``select: {optimizer: [sgd, adam], lr: [1e-5, 1e-3],
steps: [5, 10]}``). Before the row touches a test instance, every combination runs on the
validation instances of the study's scenarios, and the one with the largest mean paired gain in
float PSNR over the same network without adaptation wins; that entry then runs on test. The test
split never takes part in the choice. Candidates that differ only in ``steps`` share one run: the
float PSNR of every iterate is in the diagnostics, so the gain after K updates is read off the
longest run (the prediction after K, or K−1 for ``predict_after: before-last``, updates).

Every family is tuned alike: an entry that learns nothing (NLM, BM3D) has no steps or lr, and its
grid names keys of its ``options`` instead (``select: {sigma_scale: [0.5, 0.75, 1.0, 1.5, 2.0]}`` on
bm3d, ``{h_factor: [...]}`` on nlm); each of its candidates is a run of its own.

Edges: for every grid axis with at least three distinct numeric values, a choice at the axis' minimum
or maximum marks the chosen record (``"edge": "steps=10 (grid max)"``, several axes joined by "; ").
A choice on a grid's edge means the grid should be widened: the best value may lie beyond it; the
TTA table says so.
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


def choosable(entry: Adaptation) -> tuple[str, ...]:
    """The keys a ``select:`` grid may name for ``entry``: ``SELECTABLE`` for a learned entry, the
    keys of its ``options`` (but its algorithm) for one that learns nothing."""
    return SELECTABLE if entry.learns else entry.option_keys


def candidates(entry: Adaptation, grid: dict[str, Sequence[Any]]) -> list[Adaptation]:
    """Every combination of the grid's values applied to ``entry`` (one-line errors for bad grids)."""
    allowed = choosable(entry)
    for key, values in grid.items():
        if key not in allowed:
            if entry.learns:
                raise ConfigError(f"select: {key!r} cannot be chosen; choosable: {', '.join(SELECTABLE)}")
            what = f"choosable: its options {', '.join(allowed)}" if allowed else "there is nothing to choose"
            raise ConfigError(f"select: {key!r} cannot be chosen for adaptation {entry.name!r}, which does not "
                              f"learn; {what}")
        if not isinstance(values, (list, tuple)) or not values:
            raise ConfigError(f"select.{key}: expected a non-empty list of candidate values, got {values!r}")
    keys = list(grid)
    return [entry.with_(**dict(zip(keys, combo))) for combo in itertools.product(*(grid[k] for k in keys))]


def _run_key(entry: Adaptation) -> tuple:
    """Candidates with the same key differ only in K and share one (longest) run; an entry that
    learns nothing has K = 0, so each of its candidates (its options) is a run of its own."""
    options = repr(sorted(entry.options.items(), key=lambda kv: kv[0]))
    return (entry.optimizer, entry.lr, entry.mask_threshold, entry.predict_after, entry.halve_lr_at, options)


def _runs(options: list[Adaptation]) -> list[Adaptation]:
    """One (the longest) candidate per group of candidates that differ only in K."""
    return [max(group, key=lambda e: e.steps) for _, group in
            itertools.groupby(sorted(options, key=lambda e: (repr(_run_key(e)), e.steps)), key=_run_key)]


def adaptations_needed(entry: Adaptation, grid: dict[str, Sequence[Any]], instances: int) -> int:
    """How many single-image adaptations ``choose`` runs (for a progress display)."""
    return instances * (1 + len(_runs(candidates(entry, grid))))


def run_label(entry: Adaptation) -> str:
    """The name under which ``candidate_curves`` keeps the run ``entry``'s candidates share."""
    return repr(_run_key(entry))


def candidate_curves(model: nn.Module, entry: Adaptation, grid: dict[str, Sequence[Any]], pairs: Sequence[Any],
                     device: torch.device, seed: int = 0,
                     progress: Callable[[], None] | None = None) -> dict[str, np.ndarray]:
    """Every run the grid needs (one per group of candidates that differ only in K) on ``pairs``:
    ``run_label`` → float PSNR after 0 … K updates, (instances, K+1)."""
    tick = progress or (lambda: None)
    tensors = [(to_tensor(p.noisy, device), to_tensor(p.clean, device)) for p in pairs]

    def psnrs(e: Adaptation) -> np.ndarray:
        out = []
        for n, c in tensors:
            out.append(adapt_image(e, model, n, c, diagnostics=True, seed=seed).psnr)
            tick()
        return np.array(out)

    return {run_label(run): psnrs(run) for run in _runs(candidates(entry, grid))}


def pick(entry: Adaptation, grid: dict[str, Sequence[Any]], base: np.ndarray, curves: dict[str, np.ndarray],
         chosen: int | None = None) -> tuple[Adaptation, list[dict]]:
    """The grid's best entry by mean paired gain of ``curves`` over ``base`` (float PSNR without
    adaptation on the same instances), and one record per candidate; ``chosen`` (a candidate's
    index) overrides the choice, for results shared across networks (``bench.studies.shared``)."""
    options = candidates(entry, grid)
    records = []
    for cand in options:
        gains = curves[run_label(cand)][:, cand.updates_behind_prediction] - base
        records.append({"optimizer": cand.optimizer, "lr": cand.lr, "steps": cand.steps,
                        **({} if cand.learns else dict(cand.options)),
                        **{k: _value(cand, k) for k in grid if k not in ("optimizer", "lr", "steps")},
                        "val_gain_db": float(gains.mean()),
                        "val_gain_se": float(gains.std(ddof=1) / np.sqrt(len(gains))) if len(gains) > 1 else float("nan"),
                        "n": len(gains)})
    best = chosen if chosen is not None else max(range(len(options)), key=lambda i: (records[i]["val_gain_db"], -i))
    records[best]["chosen"] = True
    edge = edges(grid, {k: _value(options[best], k) for k in grid})
    if edge:
        records[best]["edge"] = edge
    return options[best], records


def no_adaptation(model: nn.Module, pairs: Sequence[Any], device: torch.device,
                  progress: Callable[[], None] | None = None) -> np.ndarray:
    """Float PSNR of ``model`` without adaptation on each of ``pairs``: what a candidate's gain is over."""
    return candidate_curves(model, get("none"), {}, pairs, device, progress=progress)[run_label(get("none"))][:, 0]


def choose(model: nn.Module, entry: Adaptation, grid: dict[str, Sequence[Any]], pairs: Sequence[Any],
           device: torch.device, seed: int = 0,
           progress: Callable[[], None] | None = None) -> tuple[Adaptation, list[dict]]:
    """The grid's best entry by mean paired validation gain over no adaptation, and one record per
    candidate (its values, mean gain in dB, its standard error, n). Ties go to the earlier candidate.
    ``progress`` is called after each single-image adaptation."""
    candidates(entry, grid)  # one-line errors for a bad grid before anything runs
    if not pairs:
        raise ConfigError(f"select: no validation instances to choose {entry.name!r}'s values on")
    base = no_adaptation(model, pairs, device, progress)
    return pick(entry, grid, base, candidate_curves(model, entry, grid, pairs, device, seed, progress))


def _value(entry: Adaptation, key: str) -> Any:
    """A grid key's value in a candidate: a field of a learned entry, an option of one that learns nothing."""
    return getattr(entry, key) if entry.learns else entry.options[key]


def _numeric(v: Any) -> bool:
    return isinstance(v, (int, float)) and not isinstance(v, bool)


def edges(grid: dict[str, Sequence[Any]], chosen: dict[str, Any]) -> str:
    """"axis=value (grid max)" (or min) for every axis with at least three distinct numeric values
    whose chosen value is its smallest or largest, joined by "; "; "" when the choice is interior."""
    out = []
    for key, values in grid.items():
        numbers = {v for v in values if _numeric(v)}
        value = chosen.get(key)
        if len(numbers) < 3 or not _numeric(value):
            continue
        side = "max" if value == max(numbers) else "min" if value == min(numbers) else None
        if side:
            out.append(f"{key}={value:g} (grid {side})")
    return "; ".join(out)


__all__ = ["SELECTABLE", "choosable", "candidates", "adaptations_needed", "candidate_curves", "choose", "edges",
           "no_adaptation", "pick", "run_label"]
