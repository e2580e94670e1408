"""The study file's schema and where study files are found (shipped, or under the bench home).

Pure schema: what a row means (its method, preset, adaptation, stages) is resolved in one place,
``bench.studies.plan``. Imports no torch, MLflow, Optuna or pandas, so that a study that does not
exist or does not validate is reported before any heavy library loads.
"""
from __future__ import annotations

import json
from collections.abc import Container, Iterable
from pathlib import Path
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from bench.core.config import PRESETS_FILE, SCENARIOS_FILE, STUDIES_DIR, one_line, read_yaml
from bench.core.errors import ConfigError
from bench.core.home import Home, HomeLike


class RowSpec(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)
    name: str
    method: str
    metatest: bool | None = None  # default: the method's recipe (off for stage=pretrain)
    stage: Literal["pretrain", "finetune"] = "finetune"  # evaluate after this stage
    recipe: dict = Field(default_factory=dict)  # one-field overrides of the method's recipe
    set: list[str] = Field(default_factory=list)  # preset overrides for this row, e.g. finetune.first_order=true
    # The test-time adaptation the row is scored with (a ``bench adaptations`` entry). None: the
    # preset's meta-test entry when ``metatest`` (see bench.studies.plan), else ``none``.
    adapt: str | None = None
    adapt_set: dict = Field(default_factory=dict)  # the entry's steps/lr/optimizer/... for this row
    adapt_from: Literal["entry", "metatest"] = "entry"  # metatest: K, lr, optimizer from the preset's metatest
    # Candidate values chosen on validation before the row runs on test (``bench.adaptation.select``), e.g.
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
    # A TTA study: every row is scored on each scenario's instances (studies/scenarios.yaml, or
    # ``scenario_file`` merged over it) instead of the preset's val/test images.
    scenarios: list[str] = Field(default_factory=list)
    scenario_file: str | None = None
    # Which splits a TTA study scores (default: the preset's ``tta.splits``); [val] for a study that
    # chooses values, so that its command cannot report test numbers by mistake.
    splits: list[Literal["val", "test"]] | None = None

    @property
    def is_tta(self) -> bool:
        return bool(self.scenarios)

    def chosen_rows(self, names: list[str]) -> list[str]:
        """The rows ``names`` (``--rows``) asks for, in the study's order, with the reference rows
        their gains need in a TTA study (``reference_rows`` of each chosen row's method); a name the
        study does not have is a one-line error listing those it has."""
        have = [r.name for r in self.rows]
        for name in names:
            if name not in have:
                raise ConfigError(f"--rows {','.join(names)}: the study has no row {name!r}; "
                                  f"its rows: {', '.join(have)}")
        methods = {r.method for r in self.rows if r.name in names}
        refs = reference_rows((r.name, r.method, r.adapt) for r in self.rows) if self.is_tta else {}
        return [n for n in have if n in names or n in {refs[m] for m in methods if m in refs}]

    @property
    def reads_tta(self) -> bool:
        """Whether the preset's ``tta`` section (sizes, budgets) decides any of this study's numbers."""
        return self.is_tta or any(r.adapt is not None for r in self.rows)


def reference_rows(rows: Iterable[tuple[str, str, str | None]],
                   present: Container[str] | None = None) -> dict[str, str]:
    """Method → its reference row in a TTA study, from (name, method, adapt) rows: the first row of
    that method without adaptation (``adapt`` unset or ``none``) among ``present`` (default: all).
    A later such row of the same method, e.g. one trained with other ``set:`` values, is a row of the
    table compared to it."""
    out: dict[str, str] = {}
    for name, method, adapt in rows:
        if (adapt or "none") == "none" and (present is None or name in present):
            out.setdefault(method, name)
    return out


REFERENCE_ROW = "Noisy input"
NOT_STUDIES = (PRESETS_FILE.stem, SCENARIOS_FILE.stem)  # the other files in the studies folder


def study_names(home: HomeLike | None = None) -> list[str]:
    """The shipped studies, and those under ``home``'s studies folder (a user's own and ``bench
    tune``'s studies live under the bench home, never in the package)."""
    dirs = [STUDIES_DIR] + ([Home.of(home).studies] if home is not None else [])
    return sorted({p.stem for d in dirs for p in d.glob("*.yaml") if p.stem not in NOT_STUDIES})


def find_study(name: str, home: HomeLike | None = None) -> Path:
    """A study file by path to a YAML file, or by name: ``<home>/studies/<name>.yaml``, else a shipped one."""
    path = Path(name)
    if path.suffix in (".yaml", ".yml"):
        if not path.exists():
            raise ConfigError(f"{path}: study file not found")
        return path
    user = Home.of(home).study_file(name) if home is not None else None
    path = user if user is not None and user.exists() else STUDIES_DIR / f"{name}.yaml"
    if not path.exists() or name in NOT_STUDIES:
        raise ConfigError(f"unknown study {name!r}; known studies: {', '.join(study_names(home))}")
    return path


def read_study(path: Path) -> StudySpec:
    """A study file's content, checked against the schema (one-line ConfigError naming the file);
    what its rows mean is checked by ``bench.studies.plan.check_study``."""
    try:
        return StudySpec.model_validate(read_yaml(path) or {})
    except ValidationError as e:
        raise ConfigError(one_line(e, str(path))) from None
