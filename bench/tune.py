"""``bench tune METHOD``: an Optuna search over a recipe's hyper-parameters.

Each trial is one row trained with sampled ``finetune.*`` / ``metatest.*`` values (pre-training is
shared through the stage cache), scored by validation PSNR after meta-test, and pruned by a
MedianPruner on the per-epoch validation PSNR. The best values are written as a study YAML whose
single row carries them as ``set:`` overrides, so ``bench run that.yaml`` reproduces the winner.
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import optuna
import yaml

from . import tracking
from .config import Preset
from .errors import BenchError
from .pipeline import meta_learned_method
from .studies import StudyRunner, run_trial
from .studyspec import RowSpec, StudySpec, user_studies_dir


@dataclass(frozen=True)
class Param:
    kind: str  # float | int | cat
    low: Any = None
    high: Any = None
    log: bool = False
    choices: tuple = ()

    def suggest(self, trial: optuna.Trial, name: str) -> Any:
        if self.kind == "float":
            return trial.suggest_float(name, self.low, self.high, log=self.log)
        if self.kind == "int":
            return trial.suggest_int(name, self.low, self.high)
        return trial.suggest_categorical(name, self.choices)


SPACE: dict[str, Param] = {
    "finetune.lr": Param("float", 1e-5, 1e-3, log=True),
    "finetune.inner_lr": Param("float", 1e-5, 1e-3, log=True),
    "finetune.steps": Param("int", 1, 5),
    "finetune.lambda_in": Param("float", 1.0, 20.0, log=True),
    "finetune.lambda_out": Param("float", 1.0, 20.0, log=True),
    "metatest.lr": Param("float", 1e-6, 1e-3, log=True),
    "metatest.steps": Param("int", 0, 10),
    "metatest.optimizer": Param("cat", choices=("sgd", "adam")),
}


class Tuner:
    """A study whose trials sample hyper-parameters for one method: each trial is the method's row
    with the sampled values as its ``set:`` overrides, run by the study runner's ``run_trial``."""

    def __init__(self, method: str, preset_name: str, preset: Preset, seed: int, home: Path,
                 storage: str | None = None, device: str = "auto", quiet: bool = False,
                 space: dict[str, Param] | None = None, startup_trials: int = 2, warmup_epochs: int = 0) -> None:
        meta_learned_method(method, f"bench tune: {method!r} is not meta-learned; the search space is MTL's and "
                                    "meta-test's")
        self.method, self.seed, self.space = method, seed, space or SPACE
        study = StudySpec(title=f"tune {method}", reference_row="none", rows=[RowSpec(name=method, method=method)])
        self.runner = StudyRunner(f"tune-{method}", study, preset_name, preset, [seed], home, storage, device, quiet)
        self.pruner_args = (startup_trials, warmup_epochs)

    def study(self) -> optuna.Study:
        return self.runner.study(sampler=optuna.samplers.TPESampler(seed=self.seed),
                                 pruner=optuna.pruners.MedianPruner(n_startup_trials=self.pruner_args[0],
                                                                    n_warmup_steps=self.pruner_args[1]))

    def tune(self, trials: int, timeout: float | None = None, enqueue: list[dict] = ()) -> optuna.Study:
        study = self.study()
        self.runner.data  # validate the data before any trial
        tracking.experiment(self.runner.study_name, self.runner.home)
        for params in enqueue:
            study.enqueue_trial(params)
        study.optimize(self._objective, n_trials=trials, timeout=timeout, catch=())
        return study

    def _objective(self, trial: optuna.Trial) -> float:
        overrides = [f"{k}={p.suggest(trial, k)}" for k, p in self.space.items()]
        row = RowSpec(name=self.method, method=self.method, metatest=True, set=overrides)

        def report(epoch: int, val: dict[str, float]) -> None:
            trial.report(val["val_psnr"], epoch)
            if trial.should_prune():
                raise optuna.TrialPruned(f"val PSNR {val['val_psnr']:.2f} dB at epoch {epoch} below the median")

        return run_trial(self.runner, trial, row, self.seed, run_name=f"trial {trial.number}", on_validate=report)


def write_best(study: optuna.Study, method: str, preset_name: str, out: Path) -> Path:
    """The best trial as a study YAML with one row (``set:`` = the tuned values)."""
    complete = [t for t in study.trials if t.state == optuna.trial.TrialState.COMPLETE]
    if not complete:
        raise BenchError(f"bench tune: no trial finished in study {study.study_name}; run more trials")
    best = max(complete, key=lambda t: t.value)
    doc = {
        "title": f"{method} with hyper-parameters tuned by `bench tune` (preset {preset_name}, "
                 f"trial {best.number}, val PSNR {best.value:.3f} dB)",
        "rows": [{"name": f"{method} (tuned)", "method": method,
                  "set": [f"{k}={v}" for k, v in best.params.items()]}],
    }
    try:
        out.parent.mkdir(parents=True, exist_ok=True)
        tmp = out.with_suffix(".tmp")
        tmp.write_text(yaml.safe_dump(doc, sort_keys=False))
        tmp.replace(out)
    except OSError as e:
        raise BenchError(f"--out {out}: cannot write ({e.strerror})") from None
    return out


def default_out(method: str, home: Path) -> Path:
    """``<home>/studies/tuned-METHOD.yaml``: ``bench run tuned-METHOD --home HOME`` finds it by name."""
    return user_studies_dir(home) / f"tuned-{method}.yaml"
