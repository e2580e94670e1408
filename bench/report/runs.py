"""Reading finished studies back from MLflow: which runs, their tidy per-image rows, their stages.

A study's experiment is named by ``bench.runtime.studyname.StudyName``. For each
row × seed the latest FINISHED parent run that carries a checkpoint tag is used (or exactly the
runs named with ``--run-id``). Everything a table needs comes from the runs' ``images.csv``
artifacts, melted to long form: one row per study × row × method × seed × split × image × metric;
the study's "Noisy input" rows come from its reference run (tag ``reference``) the same way.
"""
from __future__ import annotations

import json
import os
import re
import tempfile
from dataclasses import dataclass, field
from functools import cached_property
from pathlib import Path
from typing import Any

os.environ.setdefault("MLFLOW_DISABLE_TELEMETRY", "true")
os.environ.setdefault("MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR", "false")

import pandas as pd  # noqa: E402
from mlflow.entities import Run  # noqa: E402
from mlflow.tracking import MlflowClient  # noqa: E402

from bench.core.errors import BenchError  # noqa: E402
from bench.runtime import tags  # noqa: E402
from bench.runtime.studyname import StudyName  # noqa: E402

METRICS = ("psnr", "ssim", "ssim_gauss", "psnr_float")
DIAGNOSTICS = ("seconds", "peak_mib", "updates", "alignment", "alignment_pri", "lpri_pred", "lpri_actual")
"""A TTA row's cost, step-0 alignment and L_pri's change over the first update (``bench.adaptation.run``);
``melt`` keeps those a run's ``images.csv`` has, so older runs without the last three still read."""
STEP_METRIC = re.compile(r"^(loss|dgrey|psnr)@\d+$")  # a TTA row's per-step curves (bench.inference.scoring)
ID_COLUMNS = ("study", "row", "method", "seed", "split", "scenario", "metatest", "image")
TIDY_COLUMNS = (*ID_COLUMNS, "metric", "value", "run_id")
RECIPE_FIELDS = ("pretrain", "pretrain_aux", "grad_loss", "finetune", "inner_scope", "aux_loss", "metatest")


def _bool(text: Any) -> bool:
    return str(text).strip().lower() in ("true", "1", "yes")


@dataclass
class RowInfo:
    """What a row is: the study's row spec resolved against the method registry."""

    name: str
    method: str
    metatest: bool
    stage: str  # pretrain | finetune (the stage it is scored after)
    arch: str
    recipe: dict[str, Any]  # the full resolved recipe (methods.Recipe fields)
    params: dict[str, float] = field(default_factory=dict)  # total / adapted parameter counts
    set: tuple[str, ...] = ()  # the row's preset overrides (e.g. finetune.first_order=true)

    @property
    def adapts(self) -> bool:
        return self.recipe.get("finetune") == "mtl"

    @property
    def supervised(self) -> bool:
        return self.recipe.get("finetune") == "supervised" and self.stage == "finetune"

    def key(self) -> dict[str, Any]:
        """The attributes that tell two rows apart, with the ones that cannot matter set to None."""
        r = dict(self.recipe)
        k: dict[str, Any] = {"arch": self.arch, "stage": self.stage, "metatest": self.metatest and self.adapts,
                             **{f: r.get(f) for f in RECIPE_FIELDS if f != "metatest"}, "set": tuple(sorted(self.set))}
        if k["pretrain"] != "maxl" or k["pretrain_aux"] != "mrl":
            k["grad_loss"] = False  # L_G enters only MAXL's mask step: anything else trains without it
        if k["pretrain"] == "none":
            k["pretrain_aux"] = None
        if self.stage == "pretrain":
            k.update(finetune=None, inner_scope=None, aux_loss=None, metatest=False)
        elif k["finetune"] == "supervised":
            k.update(inner_scope=None, aux_loss=None, metatest=False)
        return k


@dataclass
class RowRun:
    """One finished parent run (a row × seed)."""

    run: Run

    @property
    def id(self) -> str:
        return self.run.info.run_id

    @property
    def row(self) -> str:
        return self.run.data.tags[tags.ROW]

    @property
    def seed(self) -> int:
        return int(self.run.data.tags.get(tags.SEED, self.run.data.params.get("seed", 0)))

    @property
    def method(self) -> str:
        return self.run.data.params.get("method", "")

    @property
    def metatest(self) -> bool:
        return _bool(self.run.data.params.get("metatest", "False"))

    @property
    def checkpoint(self) -> Path:
        return Path(self.run.data.tags.get(tags.CHECKPOINT, ""))

    @property
    def trained_in(self) -> str:
        """The run that trained the last stage (its masks and checkpoint artifacts live there)."""
        return self.run.data.tags.get(tags.CHECKPOINT_RUN, "")

    @property
    def recipe(self) -> dict[str, Any]:
        p = self.run.data.params
        out: dict[str, Any] = {}
        for f in RECIPE_FIELDS:
            if f"recipe.{f}" in p:
                v = p[f"recipe.{f}"]
                out[f] = _bool(v) if f in ("grad_loss", "metatest") else v
        return out


class StudyRuns:
    """The selected runs of one study experiment, with lazily downloaded artifacts."""

    def __init__(self, client: MlflowClient, experiment_id: str, experiment_name: str, runs: list[RowRun],
                 config: dict | None = None) -> None:
        """``config``: the study spec and preset, when the caller has them (else read from the latest run)."""
        self.client, self.experiment_id, self.experiment_name = client, experiment_id, experiment_name
        self.runs = sorted(runs, key=lambda r: (r.row, r.seed))
        name = StudyName.parse(experiment_name)
        self.study, self.preset_name = (name.study, name.preset) if name else (experiment_name, "?")
        self._tmp = tempfile.TemporaryDirectory(prefix="bench-report-")
        if config is not None:
            self.__dict__["config"] = config  # the cached_property's slot

    # -- artifacts ---------------------------------------------------------------------------
    def download(self, run_id: str, path: str) -> Path:
        dst = Path(self._tmp.name) / run_id
        dst.mkdir(parents=True, exist_ok=True)
        try:
            return Path(self.client.download_artifacts(run_id, path, str(dst)))
        except Exception as e:
            local = self._local_artifact(run_id, path)  # e.g. a name with '#', which a URI cannot carry
            if local is not None:
                return local
            raise BenchError(f"run {run_id}: artifact {path!r} cannot be read "
                             f"({str(e).splitlines()[0][:160]})") from None

    def _local_artifact(self, run_id: str, path: str) -> Path | None:
        from urllib.parse import unquote, urlparse

        try:
            uri = self.client.get_run(run_id).info.artifact_uri
        except Exception:
            return None
        parsed = urlparse(uri)
        if parsed.scheme not in ("", "file"):
            return None
        p = Path(unquote(parsed.path)) / path
        return p if p.is_file() else None

    def list_artifacts(self, run_id: str, path: str | None = None) -> list[str]:
        try:
            return [a.path for a in self.client.list_artifacts(run_id, path)]
        except Exception:
            return []

    @cached_property
    def config(self) -> dict:
        """The frozen study spec and preset logged with the runs (``config.json``, latest run's)."""
        latest = max(self.runs, key=lambda r: r.run.info.start_time or 0)
        return json.loads(self.download(latest.id, "config.json").read_text())

    @property
    def spec(self) -> dict:
        return self.config.get("study", {})

    @property
    def title(self) -> str:
        return self.spec.get("title", self.study)

    @property
    def paper(self) -> dict[str, dict[str, float]]:
        return self.spec.get("paper", {}) or {}

    @property
    def data_source(self) -> str:
        return self.config.get("preset", {}).get("data", {}).get("source", "embedded")

    @cached_property
    def preset(self):
        from bench.core.config import Preset

        return Preset.model_validate(self.config["preset"])

    def row_preset(self, row: str):
        """The preset a row ran under: the study's, with the row's own ``set:`` overrides."""
        info = self.rows.get(row)
        return self.preset.with_overrides(list(info.set)) if info is not None and info.set else self.preset

    @property
    def is_ablation(self) -> bool:
        """A ``bench ablate`` study: its first row is the base, every other row one ablation of it."""
        return self.study.startswith("ablate-")

    @cached_property
    def rows(self) -> dict[str, RowInfo]:
        """Row name → RowInfo, in the study's order (rows without finished runs left out)."""
        from bench.studies.plan import resolve_method

        present = {r.row: r for r in self.runs}
        specs = [s for s in self.spec.get("rows", []) if s["name"] in present]
        specs += [{"name": n} for n in present if n not in {s["name"] for s in specs}]
        out = {}
        for s in specs:
            run = present[s["name"]]
            try:
                spec = resolve_method(s.get("method", run.method), s.get("recipe") or {})
                recipe, arch = dict(spec.recipe.__dict__), spec.arch
            except (KeyError, TypeError):
                recipe, arch = run.recipe, run.method
            recipe.update({k: v for k, v in run.recipe.items() if k in recipe})
            m = run.run.data.metrics
            params = {k: m[f"params/{k}"] for k in ("total", "adapted") if f"params/{k}" in m}
            row_set = tuple(s.get("set") or [x for x in run.run.data.params.get("row_set", "").split(";") if x])
            out[s["name"]] = RowInfo(s["name"], run.method, run.metatest, s.get("stage", "finetune"), arch,
                                     recipe, params, row_set)
        return out

    @cached_property
    def tidy(self) -> pd.DataFrame:
        """Long-form per-image rows of every selected run (columns ``TIDY_COLUMNS``)."""
        return self._rows([r.id for r in self.runs])

    @cached_property
    def reference_tidy(self) -> pd.DataFrame:
        """The "Noisy input" rows of the study's latest reference run (none if it has none)."""
        if self.spec.get("reference_row", "noisy") != "noisy":
            return self._rows([])
        from bench.training.stages import reference_split

        val_name = reference_split([r.get("stage", "finetune") for r in self.spec.get("rows", [])])
        found = self.client.search_runs(
            [self.experiment_id], f"tags.{tags.REFERENCE} = '{val_name}' and attributes.status = 'FINISHED'",
            max_results=1, order_by=["attributes.start_time DESC"])
        return self._rows([r.info.run_id for r in found])

    @property
    def reference_row(self) -> str | None:
        """The reference row's name, when the study has reference rows."""
        names = self.reference_tidy["row"].unique()
        return str(names[0]) if len(names) else None

    def _rows(self, run_ids: list[str]) -> pd.DataFrame:
        frames = []
        for rid in run_ids:
            wide = pd.read_csv(self.download(rid, "images.csv"))
            wide["run_id"] = rid
            frames.append(wide)
        if not frames:
            return pd.DataFrame(columns=list(TIDY_COLUMNS))
        return melt(pd.concat(frames, ignore_index=True))

    def nested(self, parent_id: str) -> list[Run]:
        return self.client.search_runs([self.experiment_id], f"tags.{tags.PARENT} = '{parent_id}'")

    def history(self, run_id: str, key: str) -> list[tuple[int, float]]:
        return sorted((m.step, m.value) for m in self.client.get_metric_history(run_id, key))

    def close(self) -> None:
        self._tmp.cleanup()


def melt(wide: pd.DataFrame) -> pd.DataFrame:
    """``images.csv`` (one column per metric) → one row per image × metric (``TIDY_COLUMNS``)."""
    wide = wide.copy()
    wide["scenario"] = wide["scenario"].fillna("") if "scenario" in wide else ""  # "": not a TTA study's row
    ids = [c for c in (*ID_COLUMNS, "run_id") if c in wide.columns]
    metrics = [m for m in METRICS if m in wide.columns]
    metrics += [c for c in wide.columns if c in DIAGNOSTICS or STEP_METRIC.match(str(c))]
    long = wide.melt(id_vars=ids, value_vars=metrics, var_name="metric", value_name="value")
    long = long[long["value"].notna() | long["metric"].isin(METRICS)]  # a step column only some rows have
    if "metatest" in long:
        long["metatest"] = long["metatest"].map(_bool)
    long["seed"] = long["seed"].astype(int)
    return long[[c for c in TIDY_COLUMNS if c in long.columns]]


# -- finding studies ---------------------------------------------------------------------------

def experiments(client: MlflowClient) -> list:
    try:
        return client.search_experiments(max_results=10_000)
    except Exception as e:
        raise BenchError(f"MLflow tracking store cannot be read: {str(e).splitlines()[0][:200]}") from None


def study_names_in_store(client: MlflowClient) -> list[str]:
    return sorted({n.study for e in experiments(client) if (n := StudyName.parse(e.name))})


def finished_runs(client: MlflowClient, experiment_id: str) -> list[RowRun]:
    """The latest FINISHED, complete parent run of each row × seed."""
    runs = client.search_runs([experiment_id], f"tags.{tags.ROW} != ''", max_results=50_000,
                              order_by=["attributes.start_time DESC"])
    latest: dict[tuple[str, str], RowRun] = {}
    for run in runs:
        t = run.data.tags
        if run.info.status != "FINISHED" or tags.PARENT in t or not t.get(tags.ROW) or tags.CHECKPOINT not in t:
            continue
        latest.setdefault((t[tags.ROW], t.get(tags.SEED, "")), RowRun(run))
    return list(latest.values())


def find_study(client: MlflowClient, study: str, preset: str | None) -> StudyRuns | None:
    """The most recent experiment of ``study`` (under ``preset`` if given) that has finished runs."""
    candidates = []
    for e in experiments(client):
        name = StudyName.parse(e.name)
        if name and name.study == study and (preset is None or name.preset == preset):
            candidates.append(e)
    for e in sorted(candidates, key=lambda e: (e.creation_time or 0, e.last_update_time or 0), reverse=True):
        runs = finished_runs(client, e.experiment_id)
        if runs:
            return StudyRuns(client, e.experiment_id, e.name, runs)
    return None


def studies_from_run_ids(client: MlflowClient, run_ids: list[str]) -> list[StudyRuns]:
    """The given parent runs, grouped by their study experiment."""
    by_exp: dict[str, list[RowRun]] = {}
    for rid in run_ids:
        try:
            run = client.get_run(rid)
        except Exception:
            raise BenchError(f"--run-id {rid}: no such run in the tracking store") from None
        if not run.data.tags.get(tags.ROW) or tags.CHECKPOINT not in run.data.tags:
            raise BenchError(f"--run-id {rid}: not a finished row run of a study (no row/checkpoint tag)")
        if run.info.status != "FINISHED":
            raise BenchError(f"--run-id {rid}: run is {run.info.status}, not FINISHED")
        by_exp.setdefault(run.info.experiment_id, []).append(RowRun(run))
    out = []
    for exp_id, runs in by_exp.items():
        name = client.get_experiment(exp_id).name
        seen: dict[tuple[str, int], RowRun] = {}
        for r in runs:
            if (r.row, r.seed) in seen:
                raise BenchError(f"--run-id {r.id}: row {r.row!r} seed {r.seed} is already given by run "
                                 f"{seen[(r.row, r.seed)].id}")
            seen[(r.row, r.seed)] = r
        out.append(StudyRuns(client, exp_id, name, runs))
    return out


def open_study(client: MlflowClient, experiment_name: str, run_ids: list[str], config: dict) -> StudyRuns:
    """The given finished row runs of one study (``bench run``'s just-finished trials), as ``StudyRuns``."""
    exp = client.get_experiment_by_name(experiment_name)
    runs = [RowRun(client.get_run(rid)) for rid in run_ids]
    return StudyRuns(client, exp.experiment_id if exp else "", experiment_name, runs, config)
