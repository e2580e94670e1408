"""The one evaluator: a trained model + an adaptation entry + evaluation instances → per-image rows.

Every row of every study is scored here, whatever it adapts with: Table 2's "without meta-test"
row is the ``none`` entry, its "with meta-test" row the preset's meta-test entry (``alg3`` or
``official``), a TTA study's rows their own entries on each scenario's instances. Each instance is
adapted on its own by ``bench.adaptation.run.adapt_image`` (the model is never modified) and
gives one wide row: the 8-bit metrics every table shows (psnr, ssim, ssim_gauss), ``psnr_float``
(what paired differences use) and, with ``diagnostics``, cost, gradient alignment (over every adapted
parameter, ``alignment``, and over those L_pri moves, ``alignment_pri``), L_pri's predicted and actual
change over the first update (``lpri_pred``, ``lpri_actual``) and the per-step curves at no more than
``MAX_STEP_COLUMNS`` steps.
"""
from __future__ import annotations

import contextlib
from dataclasses import dataclass
from typing import Callable, ContextManager, Sequence

import numpy as np
import torch
from torch import nn

from bench.adaptation.domain import DomainFit, fit_domain
from bench.adaptation.registry import Adaptation
from bench.adaptation.registry import get as get_adaptation
from bench.adaptation.select import adaptations_needed, choose
from bench.adaptation.run import adapt_image
from bench.core.config import TTAConfig
from bench.core.errors import ConfigError
from bench.core.images import to_tensor
from bench.core.metrics import image_metrics, psnr_float
from bench.data.base import ImagePair
from bench.data.scenarios import get_scenario, instances, sized

MAX_STEP_COLUMNS = 21
"""Per-step columns per curve: every step up to 20 updates, else 21 evenly spaced ones (named by step)."""
STEP_CURVES = ("loss", "dgrey", "psnr")
ROW_COLUMNS = ("psnr", "ssim", "ssim_gauss", "psnr_float", "seconds", "peak_mib", "updates", "alignment",
               "alignment_pri", "lpri_pred", "lpri_actual")
"""The per-instance columns besides split/scenario/image and the per-step ``loss@t``/``dgrey@t``/``psnr@t``."""
MEASURED = ("seconds", "peak_mib")
"""Columns that measure the run (wall time, memory), not its result: two identical runs differ there."""


@dataclass(frozen=True)
class Target:
    """Evaluation instances of one split (and scenario; "" for a plain study's val/test images)."""

    split: str
    scenario: str
    pairs: Sequence[ImagePair]


def scenario_targets(names: Sequence[str], cfg: TTAConfig, eval_seed: int, path: str | None = None,
                     root: str | None = None) -> list[Target]:
    """Every scenario × evaluated split (``cfg.splits``), its instances sized by the preset;
    ``root``: the data root that ``{data_root}`` in a scenario's folder names (the preset's ``data.root``)."""
    out = []
    for name in names:
        scenario = sized(get_scenario(name, path, root), cfg)
        for split in cfg.splits:
            out.append(Target(split, name, instances(scenario, split, eval_seed)))
    return out


def step_indices(n: int) -> list[int]:
    """Which of the iterates 0 … n−1 get a column: all of them, or ``MAX_STEP_COLUMNS`` evenly spaced."""
    if n <= MAX_STEP_COLUMNS:
        return list(range(n))
    return sorted({int(i) for i in np.round(np.linspace(0, n - 1, MAX_STEP_COLUMNS))})


def step_columns(losses: list[float], delta_grey: list[float], psnrs: list[float]) -> dict[str, float]:
    """``loss@t`` and ``psnr@t`` for iterate t (after t updates), ``dgrey@t`` for the change from t−1 to t."""
    out: dict[str, float] = {}
    n = max(len(losses), len(psnrs), len(delta_grey) + 1 if delta_grey else 0)
    for t in step_indices(n):
        if t < len(losses):
            out[f"loss@{t}"] = losses[t]
        if t < len(psnrs) and len(psnrs) > 1:
            out[f"psnr@{t}"] = psnrs[t]
        if 1 <= t <= len(delta_grey):
            out[f"dgrey@{t}"] = delta_grey[t - 1]
    return out


def evaluate(model: nn.Module, entry: Adaptation, targets: Sequence[Target], device: torch.device,
             seed: int = 0, progress: Callable[[], None] | None = None, diagnostics: bool = True,
             fit_on: Sequence[Target] | None = None) -> list[dict]:
    """One row per instance of every target, in order (see the module docstring); the model is
    left as it was. ``diagnostics=False`` (training's validation) keeps only the image metrics and
    ``psnr_float``, and never shows the clean image to the adaptation. A domain-scope entry
    (``bench.adaptation.domain``) is fitted once per scenario on that scenario's target in
    ``fit_on`` (its validation instances) and each instance is then scored with the fitted copy,
    unadapted; ``updates`` is then the fit's chosen update count."""
    model.eval()
    rows = []
    fits: dict[str, DomainFit] = {}
    try:
        for target in targets:
            scored, scored_entry = model, entry
            if entry.scope == "domain":
                if target.scenario not in fits:
                    fits[target.scenario] = fit_domain(entry, model, fit_pairs(fit_on, target), device, seed)
                scored, scored_entry = fits[target.scenario].model.eval(), get_adaptation("none")
            for pair in target.pairs:
                noisy, clean = to_tensor(pair.noisy, device), to_tensor(pair.clean, device)
                res = adapt_image(scored_entry, scored, noisy, clean if diagnostics else None, diagnostics=diagnostics,
                                  seed=seed)
                if entry.scope == "domain":
                    res.updates = fits[target.scenario].steps
                m = {k: v[0] for k, v in image_metrics(res.prediction, clean).items()}
                row = {"split": target.split, "scenario": target.scenario, "image": pair.name, **m,
                       "psnr_float": float(psnr_float(res.prediction[0], clean[0]))}
                if diagnostics:
                    row.update(seconds=res.seconds, peak_mib=res.peak_mib, updates=res.updates,
                               alignment=res.alignment, alignment_pri=res.alignment_pri, lpri_pred=res.lpri_pred,
                               lpri_actual=res.lpri_actual, **step_columns(res.losses, res.delta_grey, res.psnr))
                rows.append(row)
                if progress:
                    progress()
    finally:
        model.train()
    return rows


Progress = Callable[[int, str], ContextManager[Callable[[], None]]]
"""``progress(total, what)``: a context that yields the tick a long loop calls once per image."""


def _silent(total: int, what: str) -> ContextManager[Callable[[], None]]:
    return contextlib.nullcontext(lambda **_: None)


def score(model: nn.Module, entry: Adaptation, targets: Sequence[Target], device: torch.device, *, seed: int = 0,
          grid: dict[str, Sequence] | None = None, select_pairs: Sequence[ImagePair] = (),
          fit_on: Sequence[Target] | None = None, progress: Progress = _silent) -> tuple[Adaptation, list[dict], list[dict]]:
    """A row's scoring: with a ``select:`` ``grid`` the entry's values are first chosen on
    ``select_pairs`` (validation instances; ``bench.adaptation.select``), then the entry runs on
    ``targets``; returns (the entry run, the per-instance rows, one record per grid candidate)."""
    selection: list[dict] = []
    if grid:
        with progress(adaptations_needed(entry, grid, len(select_pairs)), f"select {entry.name} on val") as tick:
            entry, selection = choose(model, entry, grid, select_pairs, device, seed, progress=tick)
    with progress(sum(len(t.pairs) for t in targets), f"adapt ({entry.name})") as tick:
        rows = evaluate(model, entry, targets, device, seed, progress=tick, fit_on=fit_on)
    return entry, rows, selection


def fit_pairs(fit_on: Sequence[Target] | None, target: Target) -> Sequence[ImagePair]:
    """The validation instances a domain-scope entry is fitted on for ``target``'s scenario."""
    for t in fit_on or ():
        if t.scenario == target.scenario and t.split == "val":
            return t.pairs
    raise ConfigError(f"a domain-scope adaptation needs the validation instances of scenario "
                      f"{target.scenario or '(none)'!r}; it runs in TTA studies only")


def mean_psnr(model: nn.Module, entry: Adaptation, pairs: Sequence[ImagePair], device: torch.device) -> float:
    """The mean 8-bit PSNR over ``pairs`` after ``entry``: what training validates with."""
    rows = evaluate(model, entry, [Target("val", "", pairs)], device, diagnostics=False)
    return float(np.mean([r["psnr"] for r in rows]))


def row_metrics(rows: list[dict]) -> dict[str, float]:
    """MLflow metrics of a row: the mean per split (and scenario) of each per-instance column, and
    the float PSNR pooled over a split's scenarios (``split/psnr_float``)."""
    out: dict[str, float] = {}
    groups: dict[str, list[dict]] = {}
    for r in rows:
        groups.setdefault(f"{r['split']}/{r['scenario']}/" if r.get("scenario") else f"{r['split']}/", []).append(r)
    for prefix, rs in groups.items():
        for col in ROW_COLUMNS:
            vals = [float(r[col]) for r in rs if r.get(col) is not None and np.isfinite(float(r[col]))]
            if vals:
                out[f"{prefix}{col}"] = float(np.mean(vals))
    for split in {r["split"] for r in rows if r.get("scenario")}:  # pooled over scenarios: a trial's value
        vals = [float(r["psnr_float"]) for r in rows if r["split"] == split and r.get("scenario")]
        out[f"{split}/psnr_float"] = float(np.mean(vals))
    return out


def noisy_rows(pairs: Sequence[ImagePair]) -> list[dict]:
    """The "noisy input" reference: the metrics of the unprocessed noisy images."""
    rows = []
    for pair in pairs:
        m = image_metrics(to_tensor(pair.noisy), to_tensor(pair.clean))
        rows.append({"image": pair.name, **{k: v[0] for k, v in m.items()}})
    return rows


__all__ = ["Target", "Progress", "scenario_targets", "step_indices", "step_columns", "evaluate", "score", "fit_pairs", "mean_psnr", "row_metrics",
           "noisy_rows", "MAX_STEP_COLUMNS", "STEP_CURVES", "ROW_COLUMNS", "MEASURED"]
