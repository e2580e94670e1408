"""What a study row means, resolved once: the method, the preset with the row's overrides, the
adaptation entry it is scored with, the stage it is scored after and the stages it trains.

Running (``bench.studies.row``), logging (``bench.studies.runner``) and checking a study file
(``check_study``) all read a ``RowPlan``; nothing else interprets a ``RowSpec``.

How a row's adaptation is resolved:

- a row with ``adapt: NAME`` runs that entry, bound to its method (``registry.bind``), with the
  preset's TTA budget for it, then (``adapt_from: metatest``) the preset's meta-test K, lr and
  optimizer, then the row's ``adapt_set``;
- a row without ``adapt`` in a plain study runs the preset's meta-test entry (``metatest.variant``:
  ``alg3`` or ``official``, with its K, lr, optimizer) when it is scored with meta-test (``metatest:
  true``, or by default for a meta-learned method after fine-tuning), else ``none``;
- in a TTA study a row without ``adapt`` runs ``none``.

So Table 2's "Ours with meta-test" and a TTA study's ``alg3`` row with ``adapt_from: metatest``
are the same entry, run by the same evaluator.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import methods
from bench.adaptation.registry import Adaptation, bind, from_metatest, get, has_aux_head
from bench.adaptation.select import candidates
from bench.core.config import Preset, TTAConfig
from bench.core.errors import ConfigError
from bench.core.home import HomeLike
from bench.studies.spec import REFERENCE_ROW, RowSpec, StudySpec, find_study, read_study
from bench.training.stages import Stage, stages_for, val_split, validation_entry
from methods import MethodSpec, Recipe


def resolve_method(name: str, recipe_overrides: dict | None = None) -> MethodSpec:
    """A registered method with one-field recipe overrides; KeyError / TypeError as ``methods`` raises."""
    spec = methods.get(name)
    return spec.with_recipe(**recipe_overrides) if recipe_overrides else spec


def meta_learned_method(name: str, refusal: str) -> MethodSpec:
    """The registered method ``name``, which must be meta-learned (MTL); else ``ConfigError(refusal)``."""
    try:
        spec = resolve_method(name)
    except KeyError as e:
        raise ConfigError(str(e.args[0])) from None
    if spec.recipe.finetune != "mtl":
        raise ConfigError(refusal)
    return spec


def row_entry(adapt: str | None, method: str, preset: Preset, adapt_set: dict[str, Any] | None = None,
              adapt_from: str = "entry", recipe: Recipe | None = None) -> Adaptation:
    """The adaptation a row with ``adapt`` runs: the entry bound to ``method`` (and the row's
    resolved ``recipe``), with the preset's budget for it, then (``adapt_from="metatest"``) the
    preset's meta-test steps/lr/optimizer, then the row's ``adapt_set``."""
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
class RowPlan:
    """One study row, resolved under one preset."""

    row: RowSpec
    method: MethodSpec  # the registered method with the row's recipe overrides
    preset: Preset  # the study's preset with the row's ``set:``
    entry: Adaptation  # what the row is scored with (before a ``select:`` choice)
    tta: bool  # scored on a TTA study's scenario instances (else the preset's val/test images)
    params: dict[str, Any]  # the row's run parameters (besides seed and device)
    validation: Adaptation  # what fine-tuning validates after (the preset's meta-test, or none)

    @property
    def name(self) -> str:
        return self.row.name

    @property
    def until(self) -> str:
        """The stage the row is scored after (``pretrain``: Table 1)."""
        return self.row.stage

    @property
    def metatest(self) -> bool:
        """Whether the row's scores come after a test-time update (logged as the run's ``metatest``)."""
        return self.entry.learns

    @property
    def select(self) -> dict[str, list]:
        """The row's ``select:`` grid, its step counts capped by the preset's ``tta.select_max_steps``
        (values above the cap become the cap: the smoke preset's few steps)."""
        cap = self.preset.tta.select_max_steps
        if cap is None or "steps" not in self.row.select:
            return self.row.select
        return {**self.row.select, "steps": sorted({min(int(k), cap) for k in self.row.select["steps"]})}

    @property
    def val_split(self) -> str:
        return val_split(self.until)

    @property
    def objective_key(self) -> str:
        """The metric that is the trial's value: float PSNR pooled over instances for a row that
        names its adaptation (what ``bench tune --target gain`` compares), else the 8-bit mean."""
        return "val/psnr_float" if self.tta or self.row.adapt is not None else "val/psnr"

    def stages(self, data_key: str, seed: int) -> list[Stage]:
        """The stages this row trains for ``seed`` on the data ``data_key`` names, with their cache keys."""
        return stages_for(self.method, self.preset, data_key, seed, self.until)


def plan_row(study: StudySpec, row: RowSpec, preset: Preset) -> RowPlan:
    """Resolve ``row`` of ``study`` under ``preset``; one-line ConfigErrors naming the row."""
    where = f"row {row.name!r}"
    try:
        method = resolve_method(row.method, row.recipe)
    except KeyError as e:
        raise ConfigError(f"{where}: {e.args[0]}") from None
    except TypeError:
        raise ConfigError(f"{where}: unknown recipe field in {sorted(row.recipe)}; "
                          f"expected some of {sorted(methods.Recipe.__dataclass_fields__)}") from None
    preset = preset.with_overrides(row.set, f"{where}: set")
    try:
        entry = _entry(study, row, method, preset)
        if row.select:
            candidates(entry, row.select)
    except ConfigError as e:
        raise ConfigError(f"{where}: {e}") from None
    if (entry.evaluation_only or entry.scope == "domain") and not study.is_tta:
        why = "is evaluation-only (it reads the clean image)" if entry.evaluation_only else \
            "is fitted on each scenario's validation instances"
        raise ConfigError(f"{where}: adaptation {entry.name!r} {why}; use it in a study with scenarios "
                          f"(a TTA study), e.g. `bench run tta`")
    params = {"row": row.name, "method": method.name, "metatest": entry.learns, "row_set": ";".join(row.set),
              "recipe": method.recipe.__dict__, **dict(item.split("=", 1) for item in row.set)}
    return RowPlan(row, method, preset, entry, study.is_tta, params, validation_entry(method, preset))


def _entry(study: StudySpec, row: RowSpec, method: MethodSpec, preset: Preset) -> Adaptation:
    if row.adapt is not None or study.is_tta:
        return row_entry(row.adapt, row.method, preset, row.adapt_set, row.adapt_from,
                         method.recipe if row.recipe else None)
    if row.adapt_set or row.adapt_from != "entry" or row.select:
        raise ConfigError("adapt_set/adapt_from/select need an adapt entry")
    default = method.recipe.metatest and row.stage == "finetune"
    wanted = default if row.metatest is None else row.metatest
    if wanted and has_aux_head(row.method):  # a network without an auxiliary head has nothing to adapt
        return from_metatest(preset.metatest, method.recipe)
    return get("none")


def check_study(study: StudySpec, where: str, preset: Preset | None = None) -> list[RowPlan]:
    """Every row resolves (method, recipe fields, ``set:``, adaptation) under ``preset`` (default:
    the built-in defaults) and the study's own rules hold; returns the plans. One-line ConfigErrors."""
    from bench.data.scenarios import get_scenario

    preset = preset or Preset()
    plans = []
    for row in study.rows:
        data_set = [item for item in row.set if item.startswith("data.")]
        if data_set and not study.is_tta:  # their val/test images would differ: no pairs
            raise ConfigError(f"{where}: row {row.name!r}: set: data.* cannot differ between rows of one study "
                              "(only in a TTA study, whose instances come from its scenarios)")
        if any(item.split("=", 1)[0].strip() in ("data.eval_seed", "data.source") for item in data_set):
            raise ConfigError(f"{where}: row {row.name!r}: set: data.eval_seed and data.source are the study's, "
                              "not a row's")
        try:
            plans.append(plan_row(study, row, preset))
        except ConfigError as e:
            raise ConfigError(f"{where}: {e}") from None
    if study.splits is not None and not study.is_tta:
        raise ConfigError(f"{where}: splits: only a TTA study (one with scenarios) chooses its splits")
    names = [r.name for r in study.rows]
    if len(set(names)) != len(names):
        raise ConfigError(f"{where}: row names must be unique, got {names}")
    if study.reference_row == "noisy" and REFERENCE_ROW in names:
        raise ConfigError(f"{where}: row name {REFERENCE_ROW!r} is taken by the reference row; "
                          f"rename the row or set reference_row: none")
    try:
        check_budgets(preset.tta)
        for name in study.scenarios:
            get_scenario(name, study.scenario_file, preset.data.root)
    except ConfigError as e:
        raise ConfigError(f"{where}: {e}") from None
    return plans


def load_study(name: str, home: HomeLike | None = None) -> tuple[str, StudySpec]:
    """A study by name or path (``spec.find_study``), schema-checked and with every row resolved
    under the built-in defaults; (its name, its spec). One-line ConfigErrors naming the file."""
    path = find_study(name, home)
    spec = read_study(path)
    check_study(spec, str(path))
    return path.stem, spec


__all__ = ["RowPlan", "plan_row", "check_study", "load_study", "row_entry", "check_budgets", "resolve_method",
           "meta_learned_method"]
