"""Studies: a YAML list of rows, run as an Optuna study (one enqueued trial per row × seed).

The Optuna study is persistent (a journal file under the bench home by default, or any storage
URL), so rerunning a finished command trains nothing: complete trials are read back and the same
table is printed. Each trial is one MLflow parent run; its stages are nested runs. The run's
per-image rows (``images.csv``) are the results; the Optuna trial keeps only the run's id. The
"Noisy input" reference is logged once per study, as rows of its own run.
"""
from __future__ import annotations

import json
import logging
import sys
import time
import warnings

import optuna

from bench.adaptation.evaluate import noisy_rows
from bench.core.config import Preset
from bench.core.device import parse_device
from bench.core.errors import BenchError, ConfigError, DivergenceError
from bench.core.home import Home, HomeLike
from bench.data import DataBundle, load_data
from bench.runtime import tags, tracking
from bench.runtime.studyname import StudyName
from bench.runtime.trialqueue import TrialQueue, repair_journal
from bench.runtime.workers import run_workers
from bench.studies.plan import RowPlan, check_study
from bench.studies.row import RowResult, run_row
from bench.studies.shared import network_free
from bench.studies.spec import REFERENCE_ROW, StudySpec
from bench.training.stages import FINETUNERS, StageCache, reference_split

State = optuna.trial.TrialState
POLL_SECONDS = 2.0  # how often a command with nothing left to claim checks on rows others run

optuna.logging.set_verbosity(logging.WARNING)


def open_storage(storage: str | None, home: HomeLike):
    """Optuna storage: a journal file under ``home`` by default (cut back to its last complete
    record if a crash tore it, with a one-line notice), else the given URL."""
    if storage is None:
        home = Home.of(home)
        journal = home.journal
        try:
            from optuna.storages.journal import JournalFileBackend

            home.root.mkdir(parents=True, exist_ok=True)
            notice = repair_journal(journal)
            if notice:
                print(f"note: {notice}", file=sys.stderr)
            return optuna.storages.JournalStorage(JournalFileBackend(str(journal)))
        except OSError as e:
            raise tracking.disk_error(journal, e) from None
        except Exception as e:
            raise BenchError(f"{journal}: the Optuna journal cannot be read ({str(e).splitlines()[0][:160]}); "
                             f"move it aside to start the studies of this home over") from None
    try:
        with warnings.catch_warnings():  # heartbeat_interval is "experimental"; its warning is not for users
            warnings.simplefilter("ignore")
            return optuna.storages.RDBStorage(storage, heartbeat_interval=60, grace_period=180)
    except Exception as e:
        raise BenchError(f"--storage {tracking.mask_secret(storage)}: cannot be opened "
                         f"({tracking.mask_secret(str(e).splitlines()[0][:160])})") from None


def log_row_result(run: tracking.Run, result: RowResult, keys: dict) -> None:
    """Metrics, per-image rows (the results every table is built from) and the checkpoint's whereabouts."""
    run.metrics(result.metrics)
    run.metrics({f"params/{k}": v for k, v in result.params.items()})
    run.table([{**keys, **r} for r in result.images], "images.csv")
    run.tags({tags.CHECKPOINT: result.checkpoint.resolve(), tags.CHECKPOINT_RUN: result.checkpoint_run})


def log_adaptation(run: tracking.Run, entry) -> None:
    """The adaptation a row ran, as run parameters (after its ``select:`` choice, if it has one)."""
    run.params({"adapt": entry.name, "adapt_steps": entry.steps, "adapt_lr": entry.lr,
                "adapt_optimizer": entry.optimizer, "adapt_moves": entry.moves, "adapt_loss": entry.loss})


def run_trial(runner: "StudyRunner", trial: optuna.Trial, plan: RowPlan, seed: int, data: DataBundle,
              run_name: str | None = None, on_validate=None) -> float:
    """One planned row × seed as one MLflow parent run (reopened when the trial resumes an
    interrupted one): train or reuse its stages, evaluate, log the rows; returns the trial's value
    (``RowPlan.objective_key``)."""
    row = plan.row
    exp_id = tracking.experiment(runner.study_name, runner.home)
    resume = trial.user_attrs.get("resume_run")
    if resume is not None and not tracking.exists(resume):
        resume = None
    with tracking.run(run_name or f"{row.name} [seed {seed}]", exp_id, run_id=resume,
                      tags={tags.ROW: row.name, tags.SEED: seed, tags.STUDY: runner.study_name,
                            tags.OPTUNA_TRIAL: trial.number, tags.OPTUNA_STORAGE: runner.storage_label}) as run:
        trial.set_user_attr("mlflow_run_id", run.id)  # all Optuna keeps; a retry after a kill reopens this run
        trial.set_user_attr("stage_keys", {s.name: s.key for s in plan.stages(data.key, seed)})  # see stale_trials
        run.params({**plan.params, "seed": seed, "device": str(runner.device)})
        if plan.select:
            run.params({"adapt_select": json.dumps(plan.select)})
        else:
            log_adaptation(run, plan.entry)
        run.dict({"study": runner.spec.model_dump(), "preset": runner.preset.model_dump(mode="json")}, "config.json")
        try:
            result = run_row(plan, data, seed, runner.device, StageCache(runner.home.cache),
                             exp_id, runner.quiet, on_validate=on_validate,
                             targets=runner.targets if plan.tta else None,
                             val_targets=runner.validation if plan.tta else None)
        except DivergenceError as e:
            trial.set_user_attr("error", str(e))
            trial.set_user_attr("diverged", True)  # deterministic: a rerun would diverge again
            raise
        keys = {"study": runner.study_name, "row": row.name, "method": plan.method.name, "seed": seed}
        if result.selection:  # the values chosen on validation, and every candidate's validation gain
            log_adaptation(run, result.adaptation)
            chosen = next(r for r in result.selection if r.get("chosen"))
            run.params({"adapt_choice": json.dumps({**{k: chosen[k] for k in plan.select},
                                                    **({"edge": chosen["edge"]} if chosen.get("edge") else {})})})
            run.table([{**keys, **r} for r in result.selection], "selection.csv")
        log_row_result(run, result, keys)
    return result.objective


class StudyRunner:
    """Runs the rows × seeds of one study under one preset; the results are the MLflow runs' rows."""

    def __init__(self, name: str, spec: StudySpec, preset_name: str, preset: Preset, seeds: list[int],
                 home: HomeLike, storage: str | None = None, device: str = "auto", quiet: bool = False,
                 rows: list[str] | None = None) -> None:
        # every row resolved before anything is created; one-line errors
        plans = check_study(spec, f"study {name!r} under preset {preset_name!r}", preset)
        self.plans: dict[str, RowPlan] = {p.name: p for p in plans}
        self.name, self.spec, self.preset, self.seeds = name, spec, preset, seeds
        self.home, self.quiet = Home.of(home), quiet
        self.rows = rows  # the rows this command runs (``StudySpec.chosen_rows``); None: all
        self.device = parse_device(device)
        self.study_name = StudyName.of(name, preset_name, preset.digest(tta=spec.reads_tta)).format()
        self.storage_url = storage
        self.storage_label = tracking.mask_secret(storage) if storage else self.home.journal_label
        tracking.setup(self.home)  # first: an unreachable tracking server must not leave a new study behind
        self.storage = open_storage(storage, self.home)
        self._data: dict = {}  # DataConfig -> DataBundle
        self._targets: list | None = None
        self._validation: list | None = None

    def __getstate__(self) -> dict:  # for worker processes: reopen the storage there
        return {**self.__dict__, "storage": None}

    def __setstate__(self, state: dict) -> None:
        self.__dict__.update(state)
        self.storage = open_storage(self.storage_url, self.home)

    @property
    def data(self) -> DataBundle:
        return self.data_for(self.preset)

    def data_for(self, preset: Preset) -> DataBundle:
        """The training data of a row, loaded once per data config: the study's, or (a TTA study's
        row with ``data.*`` in its ``set:``, e.g. ``data.grey_images=false``) its own; the
        evaluation instances are the study's either way."""
        if preset.data not in self._data:
            self._data[preset.data] = load_data(preset.data)
        return self._data[preset.data]

    def _scenario_targets(self, splits: tuple[str, ...]) -> list:
        """Each scenario × split of ``splits``: its instances, sized by the preset's ``tta``."""
        from bench.adaptation.evaluate import scenario_targets

        tta = self.preset.tta.model_copy(update={"splits": splits})
        return scenario_targets(self.spec.scenarios, tta, self.preset.data.eval_seed, self.spec.scenario_file,
                                self.preset.data.root)

    @property
    def targets(self) -> list:
        """A TTA study's evaluation: the splits the study names, else the preset's ``tta.splits``."""
        if self._targets is None:
            self._targets = self._scenario_targets(tuple(self.spec.splits or self.preset.tta.splits))
        return self._targets

    @property
    def validation(self) -> list:
        """Every scenario's validation instances, whichever splits the table reports: where a TTA
        row's ``select:`` grid is scored and a domain-scope entry is fitted."""
        if self._validation is None:
            self._validation = self._scenario_targets(("val",))
        return self._validation

    def study(self, sampler=None, pruner=None) -> optuna.Study:
        return optuna.create_study(study_name=self.study_name, storage=self.storage, direction="maximize",
                                   load_if_exists=True, sampler=sampler, pruner=pruner)

    def wanted(self) -> list[dict]:
        """Every row × seed (of ``self.rows`` if given), in the order they are queued: rows that
        reuse the stages an earlier row trains (same method, recipe and ``set:``, e.g. "Ours with
        meta-test") go after every row that trains its own, so that parallel workers start training
        instead of waiting on a stage lock. The rows that reuse stages are queued seed by seed: a
        seed's stages are ready in the order the seeds train, so a worker done with one seed's rows
        moves on to the next seed instead of waiting for a seed still training. A row scored once for
        every seed (``bench.studies.shared``) goes last on its other seeds: by then its results are
        stored, and no worker waits while another computes them. The table's order is the study
        file's either way."""
        seen: set = set()
        first, later = [], []
        for r in self.spec.rows:
            if self.rows is not None and r.name not in self.rows:
                continue
            (later if r.training in seen else first).append(r)
            seen.add(r.training)
        shared = {r.name for r in self.spec.rows if network_free(self.plans[r.name].entry)}
        queued = ([{"row": r.name, "seed": s} for r in first for s in self.seeds]
                  + [{"row": r.name, "seed": s} for s in self.seeds for r in later])
        repeats = [q for q in queued if q["row"] in shared and q["seed"] != self.seeds[0]]
        return [q for q in queued if q not in repeats] + repeats

    def run(self, workers: int = 1) -> list[optuna.trial.FrozenTrial]:
        """Run the missing row × seed trials, in ``workers`` processes, and wait for those that
        another command runs on the same storage; returns the complete trials of this command's seeds."""
        self._check_patches()  # loads (and validates) the data before any study, run or trial is created
        StageCache(self.home.cache)  # writable
        queue = TrialQueue(self.study(), self.home.locks)
        with queue.locked():  # a dead process's trials and runs, also when nothing is left to run
            queue.recover()
            self._end_orphans(queue)
        for line in self.stale_trials():
            print(f"note: {line}", file=sys.stderr)
        if queue.missing(self.wanted(), _settled, self.current) or queue.busy(self.wanted()):
            run_workers(self._work, workers)
        with queue.locked():  # two commands at once log the reference once
            self.log_reference()
        # one trial per row × seed: the newest that the current code would produce (a row rerun after a
        # code change has an outdated trial beside it), else the newest
        chosen = [max(ts, key=lambda t: (self.current(t), t.number)) for ts in self.complete_by_row().values()]
        return sorted(chosen, key=lambda t: t.number)

    def complete_by_row(self) -> dict[tuple, list[optuna.trial.FrozenTrial]]:
        """This command's seeds' complete trials, per (row, seed), oldest first."""
        out: dict[tuple, list[optuna.trial.FrozenTrial]] = {}
        for t in self.study().get_trials(deepcopy=False, states=(State.COMPLETE,)):
            if t.params.get("seed") in self.seeds:
                out.setdefault((t.params.get("row"), t.params.get("seed")), []).append(t)
        return out

    def changed_stages(self, t: optuna.trial.FrozenTrial) -> list[str]:
        """The stages of a complete trial that the current code keys differently ("name old → new");
        empty for a trial that recorded no keys (nothing to compare) or a row this study no longer has."""
        row, seed, then = t.params.get("row"), t.params.get("seed"), t.user_attrs.get("stage_keys")
        if row not in self.plans or not then:
            return []
        plan = self.plans[row]
        now = {s.name: s.key for s in plan.stages(self.data_for(plan.preset).key, seed)}
        return [f"{k} {then.get(k, '-')[:8]} → {v[:8]}" for k, v in now.items() if then.get(k) != v]

    def current(self, t: optuna.trial.FrozenTrial) -> bool:
        """Whether a complete trial is what the current code would produce (its stages' keys hold)."""
        return not self.changed_stages(t)

    def stale_trials(self) -> list[str]:
        """The rows of this command (its seeds, its ``rows``) none of whose complete trials the current
        code would produce (code changed since they ran): they run again, and the table shows the new run."""
        stale = [ts[-1] for (row, _), ts in self.complete_by_row().items()
                 if (self.rows is None or row in self.rows) and not any(map(self.current, ts))]
        return [f"row {t.params.get('row')!r} seed {t.params.get('seed')} ran with stages the current code keys "
                f"differently ({'; '.join(self.changed_stages(t))}): it runs again" for t in stale]

    def log_reference(self) -> str | None:
        """The "Noisy input" rows, logged once per study as a run of their own; returns its id."""
        if self.spec.reference_row != "noisy" or self.spec.is_tta:  # a TTA study's reference: its none rows
            return None
        exp_id = tracking.experiment(self.study_name, self.home)
        val_name = reference_split([r.stage for r in self.spec.rows])
        found = tracking.find_runs(exp_id, {tags.REFERENCE: val_name})
        if found:
            return found[0].info.run_id
        keys = {"study": self.study_name, "row": REFERENCE_ROW, "method": "noisy", "seed": 0, "metatest": False}
        with tracking.run(REFERENCE_ROW, exp_id, tags={tags.REFERENCE: val_name, tags.STUDY: self.study_name}) as run:
            val = getattr(self.data, val_name)
            run.table([{**keys, "split": split, **r} for split, pairs in (("val", val), ("test", self.data.test))
                       for r in noisy_rows(pairs)], "images.csv")
            return run.id

    def failed(self, complete: list[optuna.trial.FrozenTrial]) -> dict[str, str]:
        """Row → why it failed, for the rows of this command's seeds with no complete trial."""
        done = {t.params.get("row") for t in complete}
        out = {}
        for t in self.study().get_trials(deepcopy=False, states=(State.FAIL,)):
            row = t.params.get("row")
            if row not in done and t.params.get("seed") in self.seeds:
                out[row] = t.user_attrs.get("error", "failed")
        return out

    def _check_patches(self) -> None:
        """Every training patch fits the images of the source it is cut from (fail before any run)."""
        for row in self.spec.rows:
            plan = self.plans[row.name]
            recipe, cfg = plan.method.recipe, plan.preset
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
        queue = TrialQueue(self.study(), self.home.locks)
        while True:
            with queue.locked():
                queue.recover()
                self._end_orphans(queue)
                queue.enqueue(self.wanted(), _settled, self.current)
                claimed = queue.claim()
            if claimed is None:
                if not queue.busy(self.wanted()):
                    return
                time.sleep(POLL_SECONDS)
                continue
            trial, lock = claimed
            with lock:
                self._run_trial(queue, trial)

    def _end_orphans(self, queue: TrialQueue) -> None:
        """End the MLflow runs of this study that a dead process left RUNNING (call after ``recover``,
        under the queue lock: every trial still RUNNING then has a live process)."""
        live = {t.number for t in queue.study.get_trials(deepcopy=False, states=(State.RUNNING,))}
        tracking.end_orphans(tracking.experiment(self.study_name, self.home), live, self.storage_label)

    def _run_trial(self, queue: TrialQueue, trial: optuna.Trial) -> None:
        study = queue.study
        try:
            with queue.heartbeat(trial):
                plan = self.plans[trial.suggest_categorical("row", tuple(self.plans))]
                value = run_trial(self, trial, plan, trial.suggest_int("seed", 0, 2**32 - 1), self.data_for(plan.preset))
        except DivergenceError:  # FAIL with the reason; the other rows go on
            study.tell(trial, state=State.FAIL)
            return
        except BaseException:  # interrupted or broken: FAIL now, retried (and resumed) on the next run
            study.tell(trial, state=State.FAIL)
            raise
        study.tell(trial, value)


def _settled(t: optuna.trial.FrozenTrial) -> bool:
    """A failed trial that is not retried: its row diverged, and would again."""
    return t.state == State.FAIL and bool(t.user_attrs.get("diverged"))


__all__ = ["StudyRunner", "run_trial", "open_storage"]
