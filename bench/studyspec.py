"""A study file: its rows, how it is found (shipped or under the bench home) and checked.

Light on purpose: it imports no torch, MLflow, Optuna or pandas at the top, so that a study that
does not exist or does not validate is reported in a fraction of a second, before any heavy
library loads (the methods and the adaptation registry are imported only to check rows).
"""
from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from .config import STUDIES_DIR, Preset, one_line, read_yaml
from .errors import ConfigError


def default_home() -> Path:
    """The bench home: ``$BENCH_HOME``, else ``./.bench``."""
    return Path(os.environ.get("BENCH_HOME", ".bench"))


class RowSpec(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)
    name: str
    method: str
    metatest: bool | None = None  # default: the method's recipe (off for stage=pretrain)
    stage: Literal["pretrain", "finetune"] = "finetune"  # evaluate after this stage
    recipe: dict = Field(default_factory=dict)  # one-field overrides of the method's recipe
    set: list[str] = Field(default_factory=list)  # preset overrides for this row, e.g. finetune.first_order=true
    # The test-time adaptation the row is scored with (a ``bench adaptations`` entry). None: today's
    # evaluation (meta-test per ``metatest``); in a TTA study None means ``none``.
    adapt: str | None = None
    adapt_set: dict = Field(default_factory=dict)  # the entry's steps/lr/optimizer/... for this row
    adapt_from: Literal["entry", "metatest"] = "entry"  # metatest: K, lr, optimizer from the preset's metatest
    # Candidate values chosen on validation before the row runs on test (``bench.tta.select``), e.g.
    # {optimizer: [sgd, adam], lr: [1e-5, 1e-3], steps: [5, 10]}: the best mean paired validation gain wins.
    select: dict[str, list] = Field(default_factory=dict)

    @property
    def training(self) -> tuple:
        """What decides the stages this row trains: rows equal here share them (the stage cache's
        keys say the same in full; this is what a study file shows of them)."""
        return self.method, json.dumps(self.recipe, sort_keys=True), tuple(self.set)


class StudySpec(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)
    title: str
    description: str = ""
    reference_row: Literal["noisy", "none"] = "noisy"
    rows: list[RowSpec] = Field(min_length=1)
    paper: dict[str, dict[str, float]] = Field(default_factory=dict)  # row -> the paper's numbers
    # A TTA study: every row is scored on each scenario's instances (bench/data/scenarios.yaml, or
    # ``scenario_file`` merged over it) instead of the preset's val/test images.
    scenarios: list[str] = Field(default_factory=list)
    scenario_file: str | None = None
    # Which splits a TTA study scores (default: the preset's ``tta.splits``); [val] for a study that
    # chooses values, so that its command cannot report test numbers by mistake.
    splits: list[Literal["val", "test"]] | None = None

    @property
    def is_tta(self) -> bool:
        return bool(self.scenarios)

    @property
    def reads_tta(self) -> bool:
        """Whether the preset's ``tta`` section (sizes, budgets) decides any of this study's numbers."""
        return self.is_tta or any(r.adapt is not None for r in self.rows)


REFERENCE_ROW = "Noisy input"


def user_studies_dir(home: Path) -> Path:
    """Where a user's own and ``bench tune``'s studies live: under the bench home, never the package."""
    return home / "studies"


def study_names(home: Path | None = None) -> list[str]:
    """The shipped studies, and those under ``home``'s studies folder."""
    dirs = [STUDIES_DIR] + ([user_studies_dir(home)] if home is not None else [])
    return sorted({p.stem for d in dirs for p in d.glob("*.yaml") if p.stem != "presets"})


def load_study(name: str, home: Path | None = None) -> tuple[str, StudySpec]:
    """A study by path to a YAML file, or by name: ``<home>/studies/<name>.yaml``, else a shipped one."""
    path = Path(name)
    if path.suffix in (".yaml", ".yml"):
        if not path.exists():
            raise ConfigError(f"{path}: study file not found")
    else:
        user = user_studies_dir(home) / f"{name}.yaml" if home is not None else None
        path = user if user is not None and user.exists() else STUDIES_DIR / f"{name}.yaml"
        if not path.exists() or name == "presets":
            raise ConfigError(f"unknown study {name!r}; known studies: {', '.join(study_names(home))}")
    try:
        spec = StudySpec.model_validate(read_yaml(path) or {})
    except ValidationError as e:
        raise ConfigError(one_line(e, str(path))) from None
    check_study(spec, str(path))
    return path.stem, spec


def row_adaptation(spec: StudySpec, row: RowSpec, preset: Preset):
    """The row's adaptation entry as it runs under ``preset`` (None: today's evaluation)."""
    if row.adapt is None and not spec.is_tta:
        if row.adapt_set or row.adapt_from != "entry" or row.select:
            raise ConfigError(f"row {row.name!r}: adapt_set/adapt_from/select need an adapt entry")
        return None
    from .tta.evaluate import row_entry

    from .pipeline import resolve_method

    try:
        recipe = resolve_method(row.method, row.recipe).recipe if row.recipe else None
        entry = row_entry(row.adapt, row.method, preset, row.adapt_set, row.adapt_from, recipe)
        if row.select:
            from .tta.select import candidates

            candidates(entry, row.select)
    except ConfigError as e:
        raise ConfigError(f"row {row.name!r}: {e}") from None
    if entry.evaluation_only and not spec.is_tta:
        raise ConfigError(f"row {row.name!r}: adaptation {entry.name!r} is evaluation-only (it reads the clean "
                          f"image); use it in a study with scenarios (a TTA study), e.g. `bench run tta`")
    return entry


def check_tta(spec: StudySpec, preset: Preset, where: str = "study") -> None:
    """Every row's adaptation resolves under ``preset`` (its TTA budgets included) and every scenario
    exists and is valid; one-line ConfigErrors, before any run."""
    from .data.scenarios import get_scenario
    from .tta.evaluate import check_budgets

    try:
        check_budgets(preset.tta)
        for row in spec.rows:
            row_adaptation(spec, row, preset.with_overrides(row.set))
        for name in spec.scenarios:
            get_scenario(name, spec.scenario_file)
    except ConfigError as e:
        raise ConfigError(f"{where}: {e}") from None


def check_study(spec: StudySpec, where: str) -> None:
    """Every row names a known method, valid recipe fields, valid preset overrides and a valid adaptation."""
    import methods

    from .pipeline import resolve_method

    for row in spec.rows:
        try:
            resolve_method(row.method, row.recipe)
        except KeyError as e:
            raise ConfigError(f"{where}: row {row.name!r}: {e.args[0]}") from None
        except TypeError:
            raise ConfigError(f"{where}: row {row.name!r}: unknown recipe field in {sorted(row.recipe)}; "
                              f"expected some of {sorted(methods.Recipe.__dataclass_fields__)}") from None
        data_set = [item for item in row.set if item.startswith("data.")]
        if data_set and not spec.is_tta:  # their val/test images would differ: no pairs
            raise ConfigError(f"{where}: row {row.name!r}: set: data.* cannot differ between rows of one study "
                              "(only in a TTA study, whose instances come from its scenarios)")
        if any(item.split("=", 1)[0].strip() in ("data.eval_seed", "data.source") for item in data_set):
            raise ConfigError(f"{where}: row {row.name!r}: set: data.eval_seed and data.source are the study's, "
                              "not a row's")
        Preset().with_overrides(row.set, f"{where}: row {row.name!r}: set")
    if spec.splits is not None and not spec.is_tta:
        raise ConfigError(f"{where}: splits: only a TTA study (one with scenarios) chooses its splits")
    names = [r.name for r in spec.rows]
    if len(set(names)) != len(names):
        raise ConfigError(f"{where}: row names must be unique, got {names}")
    if spec.reference_row == "noisy" and REFERENCE_ROW in names:
        raise ConfigError(f"{where}: row name {REFERENCE_ROW!r} is taken by the reference row; "
                          f"rename the row or set reference_row: none")
    check_tta(spec, Preset(), where)
