"""Studies: a YAML list of rows, run as an Optuna study (one enqueued trial per row × seed).

The Optuna study is persistent (a journal file under the bench home by default, or any storage
URL), so rerunning a finished command trains nothing: complete trials are read back and the same
table is printed. Each trial is one MLflow parent run; its stages are nested runs.
"""
from __future__ import annotations

import logging
import os
import time
import warnings
from pathlib import Path
from typing import Literal

import numpy as np
import optuna
import torch
from pydantic import BaseModel, ConfigDict, Field, ValidationError

import methods

from . import tracking
from .config import STUDIES_DIR, Preset, _one_line, read_yaml, stable_hash
from .data import DataBundle, load_data
from .errors import BenchError, ConfigError, DivergenceError
from .evaluate import noisy_rows
from .pipeline import FINETUNERS, StageCache, resolve_method, run_row
from .trialqueue import TrialQueue
from .workers import run_workers

State = optuna.trial.TrialState
POLL_SECONDS = 2.0  # how often a command with nothing left to claim checks on rows others run

optuna.logging.set_verbosity(logging.WARNING)


class RowSpec(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)
    name: str
    method: str
    metatest: bool | None = None  # default: the method's recipe (off for stage=pretrain)
    stage: Literal["pretrain", "finetune"] = "finetune"  # evaluate after this stage
    recipe: dict = Field(default_factory=dict)  # one-field overrides of the method's recipe
    set: list[str] = Field(default_factory=list)  # preset overrides for this row, e.g. finetune.first_order=true


class StudySpec(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)
    title: str
    description: str = ""
    reference_row: Literal["noisy", "none"] = "noisy"
    rows: list[RowSpec] = Field(min_length=1)
    paper: dict[str, dict[str, float]] = Field(default_factory=dict)  # row -> the paper's numbers


def study_names() -> list[str]:
    return sorted(p.stem for p in STUDIES_DIR.glob("*.yaml") if p.stem != "presets")


def load_study(name: str) -> tuple[str, StudySpec]:
    """A study by name (``studies/<name>.yaml``) or by path to a YAML file."""
    path = Path(name)
    if path.suffix in (".yaml", ".yml"):
        if not path.exists():
            raise ConfigError(f"{path}: study file not found")
    else:
        path = STUDIES_DIR / f"{name}.yaml"
        if not path.exists():
            raise ConfigError(f"unknown study {name!r}; known studies: {', '.join(study_names())}")
    try:
        spec = StudySpec.model_validate(read_yaml(path) or {})
    except ValidationError as e:
        raise ConfigError(_one_line(e, str(path))) from None
    check_study(spec, str(path))
    return path.stem, spec


def check_study(spec: StudySpec, where: str) -> None:
    """Every row names a known method, valid recipe fields and valid preset overrides."""
    for row in spec.rows:
        try:
            resolve_method(row.method, row.recipe)
        except KeyError as e:
            raise ConfigError(f"{where}: row {row.name!r}: {e.args[0]}") from None
        except TypeError:
            raise ConfigError(f"{where}: row {row.name!r}: unknown recipe field in {sorted(row.recipe)}; "
                              f"expected some of {sorted(methods.Recipe.__dataclass_fields__)}") from None
        if any(item.startswith("data.") for item in row.set):
            raise ConfigError(f"{where}: row {row.name!r}: set: data.* cannot differ between rows of one study")
        Preset().with_overrides(row.set, f"{where}: row {row.name!r}: set")
    names = [r.name for r in spec.rows]
    if len(set(names)) != len(names):
        raise ConfigError(f"{where}: row names must be unique, got {names}")


def open_storage(storage: str | None, home: Path):
    """Optuna storage: a journal file under ``home`` by default, else the given URL."""
    try:
        if storage is None:
            from optuna.storages.journal import JournalFileBackend

            home.mkdir(parents=True, exist_ok=True)
            return optuna.storages.JournalStorage(JournalFileBackend(str(home / "optuna.journal")))
        with warnings.catch_warnings():  # heartbeat_interval is "experimental"; its warning is not for users
            warnings.simplefilter("ignore")
            return optuna.storages.RDBStorage(storage, heartbeat_interval=60, grace_period=180)
    except Exception as e:
        raise BenchError(f"--storage {tracking.mask_secret(storage or str(home))}: cannot be opened "
                         f"({str(e).splitlines()[0][:160]})") from None


def log_row_result(run: tracking.Run, trial: optuna.Trial, result, keys: dict) -> None:
    """Metrics, per-image rows and the checkpoint's whereabouts, on the MLflow run and the trial."""
    run.metrics(result.metrics)
    run.metrics({f"params/{k}": v for k, v in result.params.items()})
    run.table([{**keys, **r} for r in result.images], "images.csv")
    ckpt = torch.load(result.checkpoint, map_location="cpu", weights_only=False)
    run.tags({"checkpoint": result.checkpoint.resolve(), "checkpoint_run": ckpt["run_id"]})
    trial.set_user_attr("metrics", result.metrics)
    trial.set_user_attr("checkpoint", str(result.checkpoint.resolve()))
    trial.set_user_attr("params", result.params)
    trial.set_user_attr("mlflow_run_id", run.id)


class StudyRunner:
    """Runs the rows × seeds of one study under one preset and returns the tidy results."""

    def __init__(self, name: str, spec: StudySpec, preset_name: str, preset: Preset, seeds: list[int],
                 home: Path, storage: str | None = None, device: str = "auto", quiet: bool = False) -> None:
        self.name, self.spec, self.preset, self.seeds = name, spec, preset, seeds
        self.home, self.quiet = home, quiet
        self.device = torch.device("cuda" if device == "auto" and torch.cuda.is_available() else
                                   ("cpu" if device == "auto" else device))
        self.study_name = f"{name}-{preset_name}-{preset.digest()[:8]}"
        self.storage_url = storage
        self.storage_label = tracking.mask_secret(storage) if storage else f"journal:{home / 'optuna.journal'}"
        tracking.setup(home)  # first: an unreachable tracking server must not leave a new study behind
        self.storage = open_storage(storage, home)
        self._data: DataBundle | None = None

    def __getstate__(self) -> dict:  # for worker processes: reopen the storage there
        return {**self.__dict__, "storage": None}

    def __setstate__(self, state: dict) -> None:
        self.__dict__.update(state)
        self.storage = open_storage(self.storage_url, self.home)

    @property
    def data(self) -> DataBundle:
        if self._data is None:
            self._data = load_data(self.preset.data)
        return self._data

    def _study(self) -> optuna.Study:
        return optuna.create_study(study_name=self.study_name, storage=self.storage,
                                   direction="maximize", load_if_exists=True)

    def wanted(self) -> list[dict]:
        return [{"row": r.name, "seed": s} for r in self.spec.rows for s in self.seeds]

    def run(self, workers: int = 1) -> list[optuna.trial.FrozenTrial]:
        """Run the missing row × seed trials, in ``workers`` processes, and wait for those that
        another command runs on the same storage; returns the complete trials."""
        self._check_patches()  # loads (and validates) the data before any study, run or trial is created
        StageCache(self.home / "cache")  # writable
        queue = TrialQueue(self._study(), self.home / "locks")
        if queue.missing(self.wanted(), _settled) or queue.busy(self.wanted()):
            tracking.experiment(self.study_name, self.home)
            run_workers(self._work, workers)
        return [t for t in self._study().get_trials(deepcopy=False) if t.state == State.COMPLETE]

    def _check_patches(self) -> None:
        """Every training patch fits the images of the source it is cut from (fail before any run)."""
        for row in self.spec.rows:
            recipe, cfg = resolve_method(row.method, row.recipe).recipe, self.preset.with_overrides(row.set)
            used = ([("pretrain", self.data.pretrain)] if recipe.pretrain != "none" else []) + \
                   ([] if row.stage == "pretrain" else [(FINETUNERS[recipe.finetune][1], self.data.train)])
            for section, source in used:
                patch = getattr(cfg, section).patch
                small = min(source.pairs, key=lambda p: min(p.clean.shape[:2]))
                if min(small.clean.shape[:2]) < patch:
                    raise ConfigError(f"{section}.patch={patch} (row {row.name!r}): larger than training image "
                                      f"{small.name} ({small.clean.shape[0]}×{small.clean.shape[1]}); "
                                      f"expected at most {min(small.clean.shape[:2])}")

    def _work(self) -> None:
        """Claim and run queued trials until every row is done; also retries rows whose process
        died, and waits for rows that another live process is running."""
        tracking.setup(self.home)
        queue = TrialQueue(self._study(), self.home / "locks")
        while True:
            with queue.locked():
                queue.recover()
                queue.enqueue(self.wanted(), _settled)
                claimed = queue.claim()
            if claimed is None:
                if not queue.busy(self.wanted()):
                    return
                time.sleep(POLL_SECONDS)
                continue
            trial, lock = claimed
            with lock:
                self._run_trial(queue, trial)

    def _run_trial(self, queue: TrialQueue, trial: optuna.Trial) -> None:
        study = queue.study
        try:
            with queue.heartbeat(trial):
                value = self._objective(trial)
        except DivergenceError:  # FAIL with the reason; the other rows go on
            study.tell(trial, state=State.FAIL)
            return
        except BaseException:  # interrupted or broken: FAIL now, retried (and resumed) on the next run
            study.tell(trial, state=State.FAIL)
            raise
        study.tell(trial, value)

    def _objective(self, trial: optuna.Trial) -> float:
        rows = {r.name: r for r in self.spec.rows}
        row = rows[trial.suggest_categorical("row", tuple(rows))]
        seed = trial.suggest_int("seed", 0, 2**31 - 1)
        spec = resolve_method(row.method, row.recipe)
        default = spec.recipe.metatest and row.stage == "finetune"
        metatest = default if row.metatest is None else row.metatest
        exp_id = tracking.experiment(self.study_name, self.home)
        resume = trial.user_attrs.get("resume_run")
        if resume is not None and not tracking.exists(resume):
            resume = None
        with tracking.run(f"{row.name} [seed {seed}]", exp_id, run_id=resume,
                          tags={"row": row.name, "seed": seed, "study": self.study_name,
                                "optuna_trial": trial.number, "optuna_storage": self.storage_label}) as run:
            trial.set_user_attr("mlflow_run_id", run.id)  # a retry after a kill reopens this run
            run.params({"row": row.name, "method": spec.name, "seed": seed, "metatest": metatest,
                        "row_set": ";".join(row.set), "device": str(self.device), "recipe": spec.recipe.__dict__})
            run.dict({"study": self.spec.model_dump(), "preset": self.preset.model_dump(mode="json")}, "config.json")
            try:
                result = run_row(spec, metatest, self.preset.with_overrides(row.set), self.data, seed, self.device,
                                 StageCache(self.home / "cache"), exp_id, self.quiet, until=row.stage)
            except DivergenceError as e:
                trial.set_user_attr("error", str(e))
                trial.set_user_attr("diverged", True)  # deterministic: a rerun would diverge again
                raise
            log_row_result(run, trial, result, {"study": self.study_name, "row": row.name, "method": spec.name,
                                                "seed": seed})
        return result.metrics["val/psnr"]

    def table(self, trials: list[optuna.trial.FrozenTrial]) -> list[dict]:
        """One record per row: mean and std over seeds of each metric, params, number of seeds."""
        out = []
        if self.spec.reference_row == "noisy":
            rec = {"row": "Noisy input", "n": 1}
            val = self.data.val if any(r.stage == "finetune" for r in self.spec.rows) else self.data.val_synthetic
            for split, pairs in (("val", val), ("test", self.data.test)):
                rows = noisy_rows(pairs)
                for m in ("psnr", "ssim"):
                    rec[f"{split}/{m}"] = (float(np.mean([r[m] for r in rows])), 0.0)
            out.append(rec)
        for row in self.spec.rows:
            ts = [t for t in trials if t.params.get("row") == row.name and t.params.get("seed") in self.seeds]
            if not ts:
                failed = [t for t in self._study().get_trials(deepcopy=False, states=(optuna.trial.TrialState.FAIL,))
                          if t.params.get("row") == row.name]
                if failed:
                    out.append({"row": row.name, "n": 0, "failed": failed[-1].user_attrs.get("error", "failed")})
                continue
            rec = {"row": row.name, "n": len(ts), "params": ts[0].user_attrs["params"]}
            for key in ("val/psnr", "val/ssim", "test/psnr", "test/ssim"):
                vals = [t.user_attrs["metrics"][key] for t in ts]
                rec[key] = (float(np.mean(vals)), float(np.std(vals, ddof=1)) if len(vals) > 1 else 0.0)
            if row.name in self.spec.paper:
                rec["paper"] = self.spec.paper[row.name]
            out.append(rec)
        return out


def _settled(t: optuna.trial.FrozenTrial) -> bool:
    """A failed trial that is not retried: its row diverged, and would again."""
    return t.state == State.FAIL and bool(t.user_attrs.get("diverged"))


def default_home() -> Path:
    return Path(os.environ.get("BENCH_HOME", ".bench"))


__all__ = ["StudyRunner", "load_study", "study_names", "default_home", "stable_hash"]
