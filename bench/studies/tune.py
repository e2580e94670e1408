"""``bench tune METHOD``: an Optuna search over a recipe's hyper-parameters, scored on validation.

``--target psnr`` (default): each trial is one row trained with sampled ``finetune.*`` /
``metatest.*`` values (pre-training is shared through the stage cache), scored by validation PSNR
after meta-test, and pruned by a MedianPruner on the per-epoch validation PSNR. The best values are
written as a study YAML whose single row carries them as ``set:`` overrides.

``--target gain``: the trained network is fixed (its stages come from the cache, as ``bench run
table2`` trained them) and each trial is Alg. 3 with a sampled optimizer, lr and K, scored on the
validation instances of the TTA study's scenarios by float PSNR; trial 0 is K = 0 (no adaptation),
so the best value minus trial 0's is the validation gain. The winner is written as a TTA study
(rows ``none`` and the tuned Alg. 3) that ``bench run`` scores on test.
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import optuna
import yaml

from bench.core.config import Preset
from bench.core.errors import BenchError
from bench.core.home import Home, HomeLike
from bench.runtime import tracking
from bench.studies.plan import load_study, meta_learned_method, plan_row
from bench.studies.runner import StudyRunner, run_trial
from bench.studies.spec import RowSpec, StudySpec


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


GAIN_SPACE: dict[str, Param] = {
    "optimizer": Param("cat", choices=("sgd", "adam")),
    "lr": Param("float", 1e-6, 1e-2, log=True),
    "steps": Param("int", 0, 10),
}
"""Alg. 3's test-time values for ``--target gain`` (steps 0 = no adaptation, trial 0's reference)."""
TARGETS = ("psnr", "gain")
NO_ADAPTATION = {"optimizer": "sgd", "lr": 1e-5, "steps": 0}


class Tuner:
    """A study whose trials sample hyper-parameters for one method: each trial is the method's row
    with the sampled values as its ``set:`` overrides, run by the study runner's ``run_trial``."""

    def __init__(self, method: str, preset_name: str, preset: Preset, seed: int, home: HomeLike,
                 storage: str | None = None, device: str = "auto", quiet: bool = False,
                 space: dict[str, Param] | None = None, startup_trials: int = 2, warmup_epochs: int = 0,
                 target: str = "psnr", scenarios_from: str = "tta") -> None:
        meta_learned_method(method, f"bench tune: {method!r} is not meta-learned; the search space is MTL's and "
                                    "meta-test's")
        if target not in TARGETS:
            raise BenchError(f"bench tune --target {target!r}: expected one of {', '.join(TARGETS)}")
        self.method, self.seed, self.target = method, seed, target
        if target == "gain":  # the TTA study's scenarios, scored on their validation instances only
            _, tta = load_study(scenarios_from)
            self.space = space or GAIN_SPACE
            study = StudySpec(title=f"tune {method}: Alg. 3's gain on validation", reference_row="none",
                              rows=[RowSpec(name=f"{method} alg3", method=method, adapt="alg3")],
                              scenarios=tta.scenarios, scenario_file=tta.scenario_file)
            preset = preset.model_copy(update={"tta": preset.tta.model_copy(update={"splits": ("val",)})})
            name = f"tune-gain-{method}"
        else:
            self.space = space or SPACE
            study = StudySpec(title=f"tune {method}", reference_row="none", rows=[RowSpec(name=method, method=method)])
            name = f"tune-{method}"
        self.spec = study
        self.runner = StudyRunner(name, study, preset_name, preset, [seed], home, storage, device, quiet)
        self.pruner_args = (startup_trials, warmup_epochs)

    def study(self) -> optuna.Study:
        return self.runner.study(sampler=optuna.samplers.TPESampler(seed=self.seed),
                                 pruner=optuna.pruners.MedianPruner(n_startup_trials=self.pruner_args[0],
                                                                    n_warmup_steps=self.pruner_args[1]))

    def tune(self, trials: int, timeout: float | None = None, enqueue: list[dict] = ()) -> optuna.Study:
        study = self.study()
        self.runner.data  # validate the data before any trial
        tracking.experiment(self.runner.study_name, self.runner.home)
        if self.target == "gain" and not study.trials:
            study.enqueue_trial(NO_ADAPTATION)  # trial 0: the reference every gain is measured from
        for params in enqueue:
            study.enqueue_trial(params)
        study.optimize(self._objective, n_trials=trials, timeout=timeout, catch=())
        return study

    def _objective(self, trial: optuna.Trial) -> float:
        if self.target == "gain":
            values = {k: p.suggest(trial, k) for k, p in self.space.items()}
            row = RowSpec(name=f"{self.method} alg3", method=self.method, adapt="alg3", adapt_set=values)
            return self._run(trial, row)
        overrides = [f"{k}={p.suggest(trial, k)}" for k, p in self.space.items()]
        row = RowSpec(name=self.method, method=self.method, metatest=True, set=overrides)

        def report(epoch: int, val: dict[str, float]) -> None:
            trial.report(val["val_psnr"], epoch)
            if trial.should_prune():
                raise optuna.TrialPruned(f"val PSNR {val['val_psnr']:.2f} dB at epoch {epoch} below the median")

        return self._run(trial, row, on_validate=report)

    def _run(self, trial: optuna.Trial, row: RowSpec, on_validate=None) -> float:
        plan = plan_row(self.spec, row, self.runner.preset)
        return run_trial(self.runner, trial, plan, self.seed, self.runner.data_for(plan.preset),
                         run_name=f"trial {trial.number}", on_validate=on_validate)


def reference_value(study: optuna.Study) -> float | None:
    """``--target gain``: the validation float PSNR without adaptation (the finished K = 0 trial)."""
    done = [t for t in study.trials if t.state == optuna.trial.TrialState.COMPLETE and t.params.get("steps") == 0]
    return done[0].value if done else None


def write_best(study: optuna.Study, method: str, preset_name: str, out: Path, tuner: Tuner | None = None) -> Path:
    """The best trial as a study YAML: one row with ``set:`` = the tuned values (``--target psnr``),
    or a TTA study with ``none`` and the tuned Alg. 3 (``--target gain``)."""
    complete = [t for t in study.trials if t.state == optuna.trial.TrialState.COMPLETE]
    if not complete:
        raise BenchError(f"bench tune: no trial finished in study {study.study_name}; run more trials")
    best = max(complete, key=lambda t: t.value)
    if tuner is not None and tuner.target == "gain":
        ref = reference_value(study)
        gain = f", val gain {best.value - ref:+.4f} dB over no adaptation" if ref is not None else ""
        doc = {
            "title": f"{method}: Alg. 3 with optimizer, lr and K tuned on validation by `bench tune --target gain` "
                     f"(preset {preset_name}, seed {tuner.seed}, trial {best.number}{gain})",
            "reference_row": "none",
            "scenarios": list(tuner.spec.scenarios),
            **({"scenario_file": tuner.spec.scenario_file} if tuner.spec.scenario_file else {}),
            "rows": [{"name": "none", "method": method, "adapt": "none"},
                     {"name": "alg3 (tuned)", "method": method, "adapt": "alg3", "adapt_set": dict(best.params)}],
        }
    else:
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


def default_out(method: str, home: HomeLike, target: str = "psnr") -> Path:
    """``<home>/studies/tuned-METHOD.yaml`` (``tuned-gain-METHOD.yaml`` for ``--target gain``):
    ``bench run tuned-METHOD --home HOME`` finds it by name."""
    return Home.of(home).study_file(f"tuned-{'gain-' if target == 'gain' else ''}{method}")
