"""Loading a trained model: ``load_model`` from a checkpoint file, an MLflow run, or a study row.

The one way in for every reader of trained networks (``bench denoise``, the report's figures), so
each gets the same network, recipe and adaptation entry from the same file. A run's checkpoint
is found through its tags (``bench.runtime.tags``): the stage run that trained it holds it as an artifact
(downloaded, so another machine's store works too), else the local cache path the run recorded.
"""
from __future__ import annotations

import os
import tempfile
from dataclasses import dataclass
from pathlib import Path

from torch import nn

from bench.adaptation.registry import Adaptation, from_metatest, get, has_aux_head
from bench.core.config import MetaTestConfig
from bench.core.errors import BenchError, ConfigError
from bench.core.home import Home
from bench.runtime import tags
from bench.runtime.checkpoints import first_line, model_from_checkpoint
from bench.runtime.studyname import StudyName
from methods import Recipe


@dataclass
class TrainedModel:
    """A network in eval mode on the CPU, how it was trained, and how it was evaluated."""

    model: nn.Module
    recipe: Recipe
    entry: Adaptation  # what its study scored it with: the preset's meta-test (K = 0 for a row without it)
    arch: str
    source: str  # where it came from, for messages: "checkpoint …", "run … (row, seed …)"


def load_model(*, checkpoint: str | Path | None = None, run_id: str | None = None, study: str | None = None,
               row: str | None = None, preset: str | None = None, arch: str | None = None,
               home: str | Path | None = None, client=None) -> TrainedModel:
    """Exactly one source: ``checkpoint`` (a ``.pt`` file; ``arch`` for a bare state dict),
    ``run_id`` (a row run of ``bench run`` or one of its stage runs), or ``study`` + ``row`` (the
    finished run of that row with the best validation PSNR, over seeds and, unless ``preset``
    says which, presets). ``home``: the store ``bench run`` wrote (default: ``bench``'s home);
    ``client``: an MlflowClient already open on it. Bad input raises a one-line BenchError.
    """
    given = [flag for flag, v in (("--model", run_id), ("--checkpoint", checkpoint), ("--study", study))
             if v is not None]
    if len(given) != 1:
        raise BenchError("expected exactly one of --model RUN_ID, --checkpoint FILE or --study NAME --row ROW"
                         + (f"; got {' and '.join(given)}" if given else ""))
    if row is not None and study is None:
        raise BenchError("--row needs --study NAME")
    if arch is not None and checkpoint is None:
        raise BenchError("--arch applies to --checkpoint only (runs and studies record their architecture)")
    if checkpoint is not None:
        model, recipe, mt, name = model_from_checkpoint(checkpoint, arch)
        return TrainedModel(model, recipe, scored_with(model, recipe, mt), name, f"checkpoint {checkpoint}")
    name = _study_row(study, row) if study is not None else None
    if client is None:
        home = _home(home)
        client, where = _client(home)
        browse = f"`bench ui --home {home}`"
    else:
        where, browse = "the MLflow store", "`bench ui`"
    if run_id is None:
        run_id = _best_run(client, where, name, study, row, preset)
    return _from_run(client, where, browse, run_id)


def _home(home: str | Path | Home | None) -> Home:
    return Home.resolve(home)


def _client(home: Home):
    """An MLflow client on the store ``bench run`` wrote under ``home`` (or $MLFLOW_TRACKING_URI)."""
    from bench.runtime import tracking

    if not os.environ.get("MLFLOW_TRACKING_URI") and not home.tracking_db.exists():
        raise BenchError(f"no MLflow store at {home.tracking_db}; run `bench run` first or pass --home")
    tracking.setup(home)
    from mlflow.tracking import MlflowClient

    return MlflowClient(), tracking.mask_secret(tracking.tracking_uri(home))


def _from_run(client, where: str, browse: str, run_id: str) -> TrainedModel:
    """A row run's (or stage run's) model. A row evaluated without meta-test gets K = 0, so the
    row's own numbers are reproduced."""
    from mlflow.exceptions import MlflowException

    try:
        run = client.get_run(run_id)
    except MlflowException:
        raise BenchError(f"--model {run_id!r}: no such MLflow run in {where}; {browse} lists them") from None
    with tempfile.TemporaryDirectory() as tmp:
        path = _checkpoint_of(client, run, Path(tmp))
        if path is None:
            raise BenchError(f"--model {run_id!r}: the run holds no model checkpoint; expected a row run of "
                             "`bench run` or one of its stage runs")
        model, recipe, mt, name = model_from_checkpoint(path)
    params, run_tags = run.data.params, run.data.tags
    if params.get("metatest") == "False":
        mt = mt.model_copy(update={"steps": 0})
    label = run_tags.get(tags.ROW) or run.info.run_name or run_id
    seed = f", seed {run_tags[tags.SEED]}" if tags.SEED in run_tags else ""
    return TrainedModel(model, recipe, scored_with(model, recipe, mt), name, f"run {run_id} ({label}{seed})")


def scored_with(model: nn.Module, recipe: Recipe, mt: MetaTestConfig) -> Adaptation:
    """The entry a checkpoint's study scored it with: its preset's meta-test following its recipe,
    or ``none`` for a network without an auxiliary head."""
    if not has_aux_head(model):
        return get("none")
    return from_metatest(mt, recipe)


def _checkpoint_of(client, run, dst: Path) -> Path | None:
    """The stage checkpoint behind a row run or a stage run (following reuse), downloaded to ``dst``;
    else the local file the run recorded, if it is on this machine."""
    os.environ.setdefault("MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR", "false")  # keep stderr for errors
    run_tags = run.data.tags
    candidates = (run_tags.get(tags.CHECKPOINT_RUN), run_tags.get(tags.TRAINED_IN_RUN), run.info.run_id)
    for rid in dict.fromkeys(r for r in candidates if r):
        try:
            files = [f.path for f in client.list_artifacts(rid, "checkpoints") if f.path.endswith(".pt")]
        except Exception:  # a run of another kind, or an artifact store that lists nothing
            continue
        if files:
            try:
                return Path(client.download_artifacts(rid, files[0], str(dst)))
            except Exception as e:
                raise BenchError(f"run {rid}: cannot download {files[0]} ({first_line(e)})") from None
    local = run_tags.get(tags.CHECKPOINT)
    return Path(local) if local and Path(local).is_file() else None


def _study_row(study: str, row: str | None) -> str:
    """The study's name (``study`` may be a file), once ``row`` is known to be one of its rows."""
    from bench.studies.plan import load_study

    name, spec = load_study(study)
    rows = [r.name for r in spec.rows]
    if row is None:
        raise BenchError(f"--study {name}: expected --row, one of: {', '.join(map(repr, rows))}")
    if row not in rows:
        raise ConfigError(f"--row {row!r}: not a row of study {name}; expected one of: {', '.join(map(repr, rows))}")
    return name


def _best_run(client, where: str, name: str, study: str, row: str, preset: str | None) -> str:
    """The id of the finished run of ``row`` with the best validation PSNR."""
    def of_this_study(tag: str) -> bool:
        parsed = StudyName.parse(tag)
        return parsed is not None and parsed.study == name and (preset is None or parsed.preset == preset)

    exps = [e.experiment_id for e in client.search_experiments() if of_this_study(e.name)]
    runs = client.search_runs(exps, "attributes.status = 'FINISHED'") if exps else []
    runs = [r for r in runs if r.data.tags.get(tags.ROW) == row and of_this_study(r.data.tags.get(tags.STUDY, ""))
            and "val/psnr" in r.data.metrics]
    if not runs:
        how = f" --preset {preset}" if preset else ""
        raise BenchError(f"--study {name} --row {row!r}: no finished run in {where}; run `bench run {study}{how}` first")
    return max(runs, key=lambda r: r.data.metrics["val/psnr"]).info.run_id
