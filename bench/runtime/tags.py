"""The MLflow tag keys the harness writes and reads: one list, so writers and readers agree."""
from __future__ import annotations

ROW = "row"  # a parent run's study row
SEED = "seed"
STUDY = "study"  # the experiment name, a ``StudyName``
OPTUNA_TRIAL = "optuna_trial"
OPTUNA_STORAGE = "optuna_storage"  # the storage URL, password masked
ERROR = "error"  # why a run ended FAILED or KILLED
STAGE = "stage"  # a nested stage run: pretrain | finetune | …
STAGE_KEY = "stage_key"  # the hash that names a stage's cached checkpoint
REUSED = "reused"  # "true" when a stage run loaded the cache instead of training
TRAINED_IN_RUN = "trained_in_run"  # the stage run that trained a reused checkpoint
RESUMED_FROM_EPOCH = "resumed_from_epoch"
CODE = "code"  # a stage run: the fingerprint of the code its key hashes (docs/caching.md)
CACHED_CODE = "cached_code"  # a reused stage: the code fingerprint and git commit it was trained with
RETRAINED_BECAUSE = "retrained_because"  # a stage trained again although another code's version was cached
PINNED_FROM = "pinned_from"  # a stage reused across a code change BENCH_REUSE_STALE allowed: the old key
GIT_COMMIT = "git_commit"  # every run: the project's commit
GIT_DIRTY = "git_dirty"  # every run: "true" when the work tree had uncommitted changes
GIT = "git"  # every run, instead of the two above where git or the repository is missing: why
PLUGINS = "plugins"  # every run: the plugin distributions installed, "name version, …" or "none"
PLUGIN_PREFIX = "plugin."  # every run: one tag per plugin distribution, plugin.<name> = version
CHECKPOINT = "checkpoint"  # a row run's checkpoint file
CHECKPOINT_RUN = "checkpoint_run"  # the stage run that logged that checkpoint
REPORT = "bench_report"  # runs written by `bench report`
PARENT = "mlflow.parentRunId"  # MLflow's own
REFERENCE = "reference"  # a study's "Noisy input" rows run; the value names its validation split (val | val_synthetic)
