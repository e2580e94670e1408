"""The one place a trained model + an adaptation entry + evaluation instances become per-image rows.

A study row names an adaptation (``adapt``); ``row_entry`` resolves it against the method (the
registry's ``bind``), the preset's TTA budget, the preset's ``metatest`` section (``adapt_from:
metatest``, which is what ``bench tune`` writes) and the row's own ``adapt_set``, in that order.
``evaluate_entry`` runs ``bench.tta.run.adapt_image`` with the clean image (diagnostics) on every
target — a scenario × split of a TTA study, or a plain study's val/test images — and returns one
wide row per instance: the 8-bit metrics (as every table), ``psnr_float`` (what paired differences
use), cost, alignment, and the per-step curves at no more than ``MAX_STEP_COLUMNS`` steps.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Callable, Sequence

import numpy as np
import torch
from torch import nn

from ..config import Preset, TTAConfig
from ..data.base import ImagePair
from ..data.scenarios import get_scenario, instances, sized
from ..errors import ConfigError
from ..evaluate import to_tensor
from ..metrics import image_metrics, psnr_float
from .registry import Adaptation, bind, get
from .run import adapt_image

MAX_STEP_COLUMNS = 21
"""Per-step columns per curve: every step up to 20 updates, else 21 evenly spaced ones (named by step)."""
STEP_CURVES = ("loss", "dgrey", "psnr")
ROW_COLUMNS = ("psnr", "ssim", "ssim_gauss", "psnr_float", "seconds", "peak_mib", "updates", "alignment")
"""The per-instance columns besides split/scenario/image and the per-step ``loss@t``/``dgrey@t``/``psnr@t``."""


def row_entry(adapt: str | None, method: str, preset: Preset, adapt_set: dict[str, Any] | None = None,
              adapt_from: str = "entry", recipe: Any = None) -> Adaptation:
    """The adaptation a study row runs: the entry bound to ``method`` (and the row's resolved
    ``recipe``), with the preset's budget for it, then (``adapt_from="metatest"``) the preset's
    meta-test steps/lr/optimizer, then the row's ``adapt_set``."""
    entry = bind(get(adapt or "none"), method, recipe)
    if not entry.learns:
        if adapt_set or adapt_from != "entry":
            raise ConfigError(f"adaptation {entry.name!r} does not learn: adapt_set/adapt_from do not apply")
        return entry
    budget = preset.tta.budgets.get(entry.name, {})
    if not isinstance(budget, dict):
        raise ConfigError(f"tta.budgets.{entry.name}: expected a mapping of overrides, got {budget!r}")
    entry = entry.with_(**budget)
    if adapt_from == "metatest":
        mt = preset.metatest
        entry = entry.with_(steps=mt.steps, lr=mt.lr, optimizer=mt.optimizer)
    elif adapt_from != "entry":
        raise ConfigError(f"adapt_from {adapt_from!r}: expected entry or metatest")
    return entry.with_(**(adapt_set or {}))


def check_budgets(cfg: TTAConfig) -> None:
    """Every budget names a known entry and only fields ``Adaptation.with_`` accepts (one-line errors)."""
    for name, budget in cfg.budgets.items():
        if not isinstance(budget, dict):
            raise ConfigError(f"tta.budgets.{name}: expected a mapping of overrides, got {budget!r}")
        get(name).with_(**budget)


@dataclass(frozen=True)
class Target:
    """Evaluation instances of one split (and scenario; "" for a plain study's val/test images)."""

    split: str
    scenario: str
    pairs: Sequence[ImagePair]


def scenario_targets(names: Sequence[str], cfg: TTAConfig, eval_seed: int, path: str | None = None) -> list[Target]:
    """Every scenario × evaluated split (``cfg.splits``), its instances sized by the preset."""
    out = []
    for name in names:
        scenario = sized(get_scenario(name, path), cfg)
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


def evaluate_entry(model: nn.Module, entry: Adaptation, targets: Sequence[Target], device: torch.device,
                   seed: int = 0, progress: Callable[[], None] | None = None) -> list[dict]:
    """One wide row per instance of every target (see the module docstring); the model is left as it was."""
    model.eval()
    rows = []
    try:
        for target in targets:
            for pair in target.pairs:
                noisy, clean = to_tensor(pair.noisy, device), to_tensor(pair.clean, device)
                res = adapt_image(entry, model, noisy, clean, diagnostics=True, seed=seed)
                m = {k: v[0] for k, v in image_metrics(res.prediction, clean).items()}
                rows.append({"split": target.split, "scenario": target.scenario, "image": pair.name, **m,
                             "psnr_float": float(psnr_float(res.prediction[0], clean[0])),
                             "seconds": res.seconds, "peak_mib": res.peak_mib, "updates": res.updates,
                             "alignment": res.alignment,
                             **step_columns(res.losses, res.delta_grey, res.psnr)})
                if progress:
                    progress()
    finally:
        model.train()
    return rows


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


__all__ = ["row_entry", "check_budgets", "Target", "scenario_targets", "step_indices", "step_columns",
           "evaluate_entry", "row_metrics", "MAX_STEP_COLUMNS", "STEP_CURVES", "ROW_COLUMNS"]
