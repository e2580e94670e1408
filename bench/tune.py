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
from .config import STUDIES_DIR, Preset
from .errors import BenchError, ConfigError
from .pipeline import StageCache, resolve_method, run_row
from .studies import StudyRunner, StudySpec, RowSpec, log_row_result


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


class Tuner(StudyRunner):
    """A study whose trials sample hyper-parameters for one method instead of enumerating rows."""

    def __init__(self, method: str, preset_name: str, preset: Preset, seed: int, home: Path,
                 storage: str | None = None, device: str = "auto", quiet: bool = False,
                 space: dict[str, Param] | None = None, startup_trials: int = 2, warmup_epochs: int = 0) -> None:
        try:
            self.method = resolve_method(method)
        except KeyError as e:
            raise ConfigError(str(e.args[0])) from None
        if self.method.recipe.finetune != "mtl":
            raise ConfigError(f"bench tune: {method!r} is not meta-learned; the search space is MTL's and meta-test's")
        spec = StudySpec(title=f"tune {method}", rows=[RowSpec(name=method, method=method)])
        super().__init__(f"tune-{method}", spec, preset_name, preset, [seed], home, storage, device, quiet)
        self.seed, self.space = seed, space or SPACE
        self.pruner_args = (startup_trials, warmup_epochs)

    def _study(self) -> optuna.Study:
        return optuna.create_study(
            study_name=self.study_name, storage=self.storage, direction="maximize", load_if_exists=True,
            sampler=optuna.samplers.TPESampler(seed=self.seed),
            pruner=optuna.pruners.MedianPruner(n_startup_trials=self.pruner_args[0],
                                               n_warmup_steps=self.pruner_args[1]))

    def tune(self, trials: int, timeout: float | None = None, enqueue: list[dict] = ()) -> optuna.Study:
        study = self._study()
        self.data  # validate the data before any trial
        tracking.experiment(self.study_name, self.home)
        for params in enqueue:
            study.enqueue_trial(params)
        study.optimize(self._objective, n_trials=trials, timeout=timeout, catch=())
        return study

    def _objective(self, trial: optuna.Trial) -> float:
        overrides = [f"{k}={p.suggest(trial, k)}" for k, p in self.space.items()]
        preset = self.preset.with_overrides(overrides)
        exp_id = tracking.experiment(self.study_name, self.home)

        def report(epoch: int, val: dict[str, float]) -> None:
            trial.report(val["val_psnr"], epoch)
            if trial.should_prune():
                raise optuna.TrialPruned(f"val PSNR {val['val_psnr']:.2f} dB at epoch {epoch} below the median")

        with tracking.run(f"trial {trial.number}", exp_id, tags={"study": self.study_name, "row": self.method.name,
                                                                  "optuna_trial": trial.number}) as run:
            run.params({"method": self.method.name, "seed": self.seed, **dict(o.split("=", 1) for o in overrides)})
            result = run_row(self.method, True, preset, self.data, self.seed, self.device,
                             StageCache(self.home / "cache"), exp_id, self.quiet, on_validate=report)
            log_row_result(run, trial, result, {"study": self.study_name, "row": self.method.name,
                                                "method": self.method.name, "seed": self.seed})
        return result.metrics["val/psnr"]


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


def default_out(method: str) -> Path:
    return STUDIES_DIR / f"tuned-{method}.yaml"
