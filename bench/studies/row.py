"""One planned row × seed: train (or reuse) its stages, choose its adaptation's values on validation
if it has a ``select:`` grid, and score it with the one evaluator."""
from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Sequence

import mlflow
import torch

from bench.adaptation.domain import first_tiles
from bench.adaptation.evaluate import Target, row_metrics, score
from bench.adaptation.registry import Adaptation
from bench.core.progress import stage_progress
from bench.data import DataBundle
from bench.studies.plan import RowPlan
from bench.studies.shared import SharedResults, network_free, score_shared
from bench.training.stages import StageCache, train_stages


@dataclass
class RowResult:
    metrics: dict[str, float]  # mean per split (and scenario) of each per-instance column, e.g. "test/psnr"
    images: list[dict]  # tidy per-instance rows
    params: dict[str, int]
    checkpoint: Path  # the last stage's checkpoint (``model``, ``payload``, ``run_id``, ``history``)
    checkpoint_run: str  # the stage run that trained that checkpoint (its ``run_id``)
    adaptation: Adaptation  # the entry the row ran (after a ``select:`` choice)
    selection: list[dict] = field(default_factory=list)  # one record per ``select:`` candidate (validation)
    objective_key: str = "val/psnr"

    @property
    def objective(self) -> float:
        """The trial's value (``RowPlan.objective_key``); 0.0 for a TTA row that scored no validation
        split (studies read the logged rows, never this value)."""
        return float(self.metrics.get(self.objective_key, self.metrics.get("val/psnr", 0.0)))


def run_row(plan: RowPlan, data: DataBundle, seed: int, device: torch.device, cache: StageCache, exp_id: str,
            quiet: bool = False, on_validate: Callable | None = None, targets: Sequence[Target] | None = None,
            val_targets: Sequence[Target] | None = None) -> RowResult:
    """Train or reuse the plan's stages, then score the model with the plan's entry on ``targets``
    (default: the data's validation images for the plan's stage, and its test images). With a
    ``select:`` grid the entry's values are first chosen on validation: ``val_targets`` (a TTA
    study's scenarios, the first ``tta.select_tiles`` tiles of each photograph), else the data's
    validation images; a domain-scope entry is fitted on ``val_targets`` of each scenario. Test
    instances play no part in either."""
    torch.manual_seed(seed)
    model = plan.method.create().to(device)
    stages = plan.stages(data.key, seed)
    trained_in = train_stages(stages, plan.method, model, plan.preset, data, cache, exp_id, device, seed,
                              plan.validation, quiet, on_validate)
    val = getattr(data, plan.val_split)
    active = mlflow.active_run()
    label = f"{active.info.run_name}: " if active else ""
    select_pairs = val if val_targets is None else \
        [p for t in val_targets for p in first_tiles(t.pairs, plan.preset.tta.select_tiles)]
    targets = targets if targets is not None else [Target("val", "", val), Target("test", "", data.test)]
    progress = lambda total, what: stage_progress(total, f"{label}{what}", quiet)  # noqa: E731
    if network_free(plan.entry):  # the same results on every seed's network: computed once per study
        entry, rows, selection = score_shared(SharedResults(cache.root), model, plan.entry, targets, device,
                                              grid=plan.select, select_pairs=select_pairs, progress=progress)
    else:
        entry, rows, selection = score(model, plan.entry, targets, device, seed=seed, grid=plan.select,
                                       select_pairs=select_pairs, fit_on=val_targets, progress=progress)
    images = [{**r, "metatest": entry.learns} for r in rows]
    last = stages[-1]
    return RowResult(row_metrics(images), images, plan.method.with_recipe(metatest=plan.metatest).param_counts(model),
                     cache.path(last.name, last.key), trained_in, entry, selection, plan.objective_key)


__all__ = ["RowResult", "run_row"]
