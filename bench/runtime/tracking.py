"""MLflow tracking: one experiment per study, a parent run per row × seed, nested runs per stage.

The tracking URI comes from ``MLFLOW_TRACKING_URI``, else a local sqlite store under the bench
home (``.bench/`` by default), with artifacts beside it. A run that raises is ended FAILED by the
context manager, so a crash never leaves a run RUNNING.

Why one module of ~430 lines: the store's creation, the run lifecycle and the orphan sweep that
writes to it share one tracking URI, home lock and disk-error handling, and are read together.
"""
from __future__ import annotations

import functools
import json
import logging
import os
import re
import sys
import tempfile
import time
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Iterator

os.environ.setdefault("MLFLOW_DISABLE_TELEMETRY", "true")

import mlflow  # noqa: E402
from mlflow.tracking import MlflowClient  # noqa: E402

from bench.core.errors import BenchError  # noqa: E402
from bench.core.fingerprint import git_state, plugin_versions  # noqa: E402
from bench.core.home import Home, HomeLike  # noqa: E402
from bench.core.tempfiles import claim_folder, temp_path  # noqa: E402
from bench.runtime.tags import (  # noqa: E402
    CHECKPOINT,
    ERROR,
    GIT,
    GIT_COMMIT,
    GIT_DIRTY,
    OPTUNA_STORAGE,
    OPTUNA_TRIAL,
    PARENT,
    PLUGIN_PREFIX,
    PLUGINS,
    REFERENCE,
    STAGE_KEY,
)
from bench.runtime.urls import mask_secret  # noqa: E402  (light: the command line checks --storage with it)

# No "creating initial database tables" chatter on first use (set after mlflow configures its loggers).
logging.getLogger("mlflow").setLevel(logging.WARNING)
logging.getLogger("alembic").setLevel(logging.WARNING)


def tracking_uri(home: HomeLike) -> str:
    return os.environ.get("MLFLOW_TRACKING_URI") or Home.of(home).tracking_uri


def artifact_name(name: str) -> str:
    """A name safe as one artifact path component ('#' or '/' would break artifact URIs)."""
    return re.sub(r"[^\w.-]", "_", name)


_local_store = {"on": False}  # whether the active store is our default one under the bench home


def setup(home: HomeLike) -> str:
    """Point MLflow at the store for ``home``; returns its URI. The local store itself is made
    by ``local_store`` when first needed (bad input never creates one)."""
    writable_home(home)
    user_uri = os.environ.get("MLFLOW_TRACKING_URI")
    uri = tracking_uri(home)
    mlflow.set_tracking_uri(uri)
    if user_uri is None:  # set_tracking_uri exports the variable; keep the environment as it was
        os.environ.pop("MLFLOW_TRACKING_URI", None)
    _local_store["on"] = user_uri is None
    if uri.startswith(("http://", "https://")):
        _probe(uri)
    return uri


def disk_error(path: Path | str, e: BaseException) -> BenchError:
    """The one-line error for a write the disk refused (full, read-only, no permission)."""
    why = getattr(e, "strerror", None) or str(e).splitlines()[0][:160]
    home = Home("<home>")
    return BenchError(f"{path}: cannot be written ({why}); free space on that disk (stage checkpoints in "
                      f"{home.cache}, artifacts in {home.artifacts}) or point --home at a writable folder")


def writable_home(home: HomeLike) -> None:
    """The bench home exists and can be written, else one line that says so (not a traceback)."""
    why = claim_folder(Home.of(home).root)
    if why is not None:
        raise BenchError(f"{home}: the bench home cannot be written ({why}); "
                         f"point --home (or $BENCH_HOME) at a writable folder")


def local_store(home: HomeLike) -> None:
    """The local store under ``home``, whole (created in one piece, or re-created when an earlier
    first run was killed while creating it) and at home (its artifact locations follow a copied
    or moved home)."""
    home = Home.of(home)
    with _home_lock(home):
        _ensure_store(home)
        _follow_home(home)


@functools.lru_cache(maxsize=1)
def _schema_head() -> str | None:
    try:
        from mlflow.store.db.utils import (
            _get_latest_schema_revision,  # mlflow's, pinned range
        )

        return _get_latest_schema_revision()
    except Exception:
        return None


def _store_state(db: Path) -> str:
    """``complete``, ``used`` (has runs but not at MLflow's schema head: MLflow says what to do) or ``broken``."""
    import sqlite3

    try:
        con = sqlite3.connect(f"file:{db}?mode=ro", uri=True)
        try:
            tables = {r[0] for r in con.execute("select name from sqlite_master where type='table'")}
            version = (con.execute("select version_num from alembic_version").fetchone() or [None])[0] \
                if "alembic_version" in tables else None
            runs = con.execute("select count(*) from runs").fetchone()[0] if "runs" in tables else 0
        finally:
            con.close()
    except sqlite3.Error:
        return "broken"
    head = _schema_head()
    if version is not None and (head is None or version == head):
        return "complete"
    return "used" if runs else "broken"


def _ensure_store(home: Home) -> None:
    """Create the home's store (``tracking_db``) in a temp file and rename it into place once its schema is whole:
    a kill while MLflow creates the schema (seconds) never leaves a half-made store. A store
    half-made by an older version (no runs, schema unfinished) is set aside and made again."""
    from mlflow.store.tracking.sqlalchemy_store import SqlAlchemyStore

    db = home.tracking_db
    if db.exists():
        if _store_state(db) != "broken":
            return
        aside = home.tracking_db_aside
        os.replace(db, aside)
        print(f"note: {db}: an interrupted first run left the MLflow store half-created (no runs in it); "
              f"created it again (the old file is {aside.name})", file=sys.stderr)
    tmp = temp_path(db)
    try:
        store = SqlAlchemyStore(f"sqlite:///{tmp.resolve()}", home.artifacts_uri)
        store.engine.dispose()
        os.replace(tmp, db)
    except OSError as e:
        raise disk_error(db, e) from None
    except Exception as e:
        if "disk" in str(e) or "readonly" in str(e) or "unable to open" in str(e):
            raise disk_error(db, e) from None
        raise
    finally:
        tmp.unlink(missing_ok=True)


def follow_home(home: HomeLike) -> None:
    """For readers of an existing local store (``bench report``): a copied home reads and logs in its own folders."""
    home = Home.of(home)
    try:
        with _home_lock(home):
            _follow_home(home)
    except (OSError, BenchError):  # a read-only home: nothing to redirect, reading still works
        pass


def _follow_home(home: Home) -> None:
    """A copied or moved home: point its experiments' and runs' artifact locations (and checkpoint
    tags) at this home, so that it never writes into, or reads from, the original's folders."""
    import sqlite3

    here = home.artifacts_uri
    tail = "/" + home.artifacts.name  # an artifact location is <home's URI>/mlartifacts
    con = sqlite3.connect(home.tracking_db)
    try:
        olds = {r[0][:-len(tail)] for r in con.execute(
            "select artifact_location from experiments where artifact_location like ?", (f"file://%{tail}",))}
        olds.discard(here[:-len(tail)])
        if not olds:
            return
        new_home = here[:-len(tail)]
        with con:
            for old in olds:
                old_path, new_path = old[len("file://"):], str(home.root.resolve())
                for table, col, extra, (a, b) in (("experiments", "artifact_location", "", (old, new_home)),
                                                  ("runs", "artifact_uri", "", (old, new_home)),
                                                  ("tags", "value", f" and key = '{CHECKPOINT}'", (old_path, new_path))):
                    con.execute(f"update {table} set {col} = ? || substr({col}, ?) "
                                f"where substr({col}, 1, ?) = ?{extra}", (b, len(a) + 1, len(a) + 1, a + "/"))
    except sqlite3.Error as e:
        raise disk_error(home.tracking_db, e) from None
    finally:
        con.close()


@contextmanager
def _home_lock(home: Home) -> Iterator[None]:
    import fcntl

    home.root.mkdir(parents=True, exist_ok=True)
    with open(home.tracking_lock, "a") as fh:
        fcntl.flock(fh, fcntl.LOCK_EX)
        yield


def _probe(uri: str, timeout: float = 5.0) -> None:
    """Fail in seconds on a tracking server that cannot be reached (MLflow itself retries for minutes)."""
    import urllib.error
    import urllib.request

    try:
        urllib.request.urlopen(uri.rstrip("/") + "/health", timeout=timeout).close()
    except urllib.error.HTTPError:
        pass  # it answered: reachable (a proxy may not know /health)
    except (urllib.error.URLError, OSError, ValueError) as e:
        reason = getattr(e, "reason", e)
        raise BenchError(f"MLflow tracking server {mask_secret(uri)} cannot be reached ({reason}); "
                         f"start it or unset MLFLOW_TRACKING_URI to use the local store") from None


def experiment(name: str, home: HomeLike) -> str:
    """Get or create the experiment; local stores keep artifacts under ``home.artifacts``.

    Two commands starting at once on one home would both create the sqlite store (its schema
    migration is not safe to run twice at once) and the experiment: a file lock serialises that.
    """
    home = Home.of(home)
    try:
        if _local_store["on"]:
            local_store(home)
        with _home_lock(home):
            exp = mlflow.get_experiment_by_name(name)
            if exp is not None:
                return exp.experiment_id
            location = home.artifacts_uri if _local_store["on"] else None
            return mlflow.create_experiment(name, artifact_location=location)
    except BenchError:
        raise
    except Exception as e:  # unreachable server, unwritable store …
        raise BenchError(f"MLflow tracking store {mask_secret(mlflow.get_tracking_uri())} cannot be used: "
                         f"{str(e).splitlines()[0][:200]}") from None


def _flat(d: dict, prefix: str = "") -> dict[str, Any]:
    out: dict[str, Any] = {}
    for k, v in d.items():
        if isinstance(v, dict):
            out.update(_flat(v, f"{prefix}{k}."))
        else:
            out[f"{prefix}{k}"] = v if not isinstance(v, (list, tuple)) else ",".join(map(str, v))
    return out


class Run:
    """A thin handle on an active MLflow run."""

    def __init__(self, run: mlflow.ActiveRun) -> None:
        self.id = run.info.run_id

    def params(self, params: dict) -> None:
        mlflow.log_params({k: str(v)[:500] for k, v in _flat(params).items()}, run_id=self.id)

    def metrics(self, metrics: dict[str, float], step: int | None = None) -> None:
        MlflowClient().log_batch(self.id, metrics=[
            mlflow.entities.Metric(k, float(v), int(time.time() * 1000), step or 0)
            for k, v in metrics.items()])

    def tags(self, tags: dict[str, Any]) -> None:
        client = MlflowClient()
        for k, v in tags.items():
            client.set_tag(self.id, k, str(v))

    def artifact(self, path: Path, folder: str | None = None) -> None:
        with disk_errors(self):
            mlflow.log_artifact(str(path), artifact_path=folder, run_id=self.id)

    def text(self, text: str, name: str) -> None:
        with disk_errors(self):
            mlflow.log_text(text, name, run_id=self.id)

    def image(self, array, name: str) -> None:
        """An (H,W) or (H,W,3) float image in [0,1] as a PNG artifact."""
        import numpy as np

        with disk_errors(self):
            MlflowClient().log_image(self.id, np.clip(np.asarray(array) * 255 + 0.5, 0, 255).astype("uint8"),
                                     artifact_file=name)

    def table(self, rows: list[dict], name: str) -> None:
        import pandas as pd

        with disk_errors(self), tempfile.TemporaryDirectory() as tmp:
            path = Path(tmp) / name
            pd.DataFrame(rows).to_csv(path, index=False)
            self.artifact(path)

    def dict(self, data: dict, name: str) -> None:
        self.text(json.dumps(data, indent=2, default=str), name)


_DISK_FULL = ("disk is full", "readonly database", "read-only file system", "no space left")


@contextmanager
def disk_errors(run: Run | None = None, where: Path | str | None = None) -> Iterator[None]:
    """Turn a write the disk refused (``OSError``, sqlite's "database or disk is full", torch's
    "file write failed") into ``disk_error`` naming ``where`` or the run's artifact folder."""
    try:
        yield
    except BenchError:
        raise
    except Exception as e:
        if not isinstance(e, OSError) and not any(s in str(e).lower() for s in _DISK_FULL + ("write failed",)):
            raise
        if where is None and run is not None:
            try:
                where = mlflow.get_run(run.id).info.artifact_uri.removeprefix("file://")
            except Exception:
                where = f"run {run.id}"
        raise disk_error(where or "the bench home", e) from None


def code_tags() -> dict[str, str]:
    """The tags every run carries: the project's git commit and dirty flag (or why there are none)
    and each plugin distribution's version."""
    state = git_state()
    out = ({GIT_COMMIT: state["commit"], GIT_DIRTY: state["dirty"]} if "commit" in state else {GIT: state["git"]})
    plugins = plugin_versions()
    out[PLUGINS] = ", ".join(f"{k} {v}" for k, v in plugins.items()) or "none"
    out.update({f"{PLUGIN_PREFIX}{k}": v for k, v in plugins.items()})
    return out


@contextmanager
def run(name: str, experiment_id: str | None = None, nested: bool = False,
        tags: dict[str, Any] | None = None, run_id: str | None = None) -> Iterator[Run]:
    """An MLflow run that ends FINISHED, KILLED (pruned or interrupted) or FAILED, never RUNNING.

    With ``run_id`` an existing run is reopened (a trial or stage resumed after a kill) instead of
    a new one started, so an interrupted row keeps one run. Every run gets ``code_tags()``.
    """
    tags = {**code_tags(), **(tags or {})}
    if run_id is not None:
        active = mlflow.start_run(run_id=run_id, nested=nested)
        if ERROR in active.data.tags:  # the reason it stopped last time no longer holds
            MlflowClient().delete_tag(run_id, ERROR)
        Run(active).tags(tags or {})
    else:
        active = mlflow.start_run(run_name=name, experiment_id=experiment_id, nested=nested,
                                  tags={k: str(v) for k, v in (tags or {}).items()})
    try:
        yield Run(active)
    except BaseException as e:
        killed = type(e).__name__ == "TrialPruned" or isinstance(e, KeyboardInterrupt)
        # A Ctrl-C can land inside one of MLflow's own sqlite transactions, which then still holds the
        # store's lock: ending the run fails ("database is locked") and MLflow logs that with a
        # traceback. The next command on this home ends such a run (orphan sweep), so say nothing here.
        mlflow_log = logging.getLogger("mlflow")
        level = mlflow_log.level
        mlflow_log.setLevel(logging.CRITICAL)
        try:
            if not killed:
                MlflowClient().set_tag(active.info.run_id, ERROR, f"{type(e).__name__}: {e}"[:500])
            mlflow.end_run("KILLED" if killed else "FAILED")
        except Exception:  # the store cannot be written either (full disk, locked): the next start ends the run
            pass
        # After a Ctrl-C the process is on its way out (exit 130), and MLflow's exit hook may retry the
        # end of a run left open and log the same traceback: MLflow then stays quiet to the end.
        if not isinstance(e, KeyboardInterrupt):
            mlflow_log.setLevel(level)
        raise
    mlflow.end_run("FINISHED")


def exists(run_id: str) -> bool:
    try:
        MlflowClient().get_run(run_id)
        return True
    except Exception:
        return False


def child_runs(parent_id: str, experiment_id: str, stage_key: str) -> list[mlflow.entities.Run]:
    """The nested runs of ``parent_id`` that trained or loaded the stage ``stage_key``, oldest first."""
    runs = MlflowClient().search_runs(
        [experiment_id], f"tags.{PARENT} = '{parent_id}' and tags.{STAGE_KEY} = '{stage_key}'",
        order_by=["attributes.start_time ASC"])
    return list(runs)


def find_runs(experiment_id: str, tag_values: dict[str, str]) -> list[mlflow.entities.Run]:
    """The FINISHED runs of an experiment that carry these tag values, newest first."""
    query = " and ".join(f"tags.{k} = '{v}'" for k, v in tag_values.items())
    return list(MlflowClient().search_runs([experiment_id], f"{query} and attributes.status = 'FINISHED'",
                                           order_by=["attributes.start_time DESC"]))


def trial_tags(run_id: str) -> dict[str, str]:
    """The Optuna trial and storage tags of a run (a row's parent run), as they are now."""
    tags = MlflowClient().get_run(run_id).data.tags
    return {k: tags[k] for k in (OPTUNA_TRIAL, OPTUNA_STORAGE) if k in tags}


def end_orphan(run_id: str) -> None:
    """End a run that a killed process left RUNNING as KILLED (it will not be resumed)."""
    client = MlflowClient()
    client.set_tag(run_id, ERROR, "the process running it died; superseded by a later run")
    client.set_terminated(run_id, "KILLED")


def end_orphans(experiment_id: str, live_trials: set[int], storage_label: str) -> list[str]:
    """End as KILLED every run of the experiment that a dead process left RUNNING; returns their ids.

    A run belongs to the Optuna trial its own tags name, else its parent's; it is live while that
    trial is RUNNING in ``storage_label``'s study (``live_trials``: the trials a live process holds).
    A RUNNING "Noisy input" reference run is always dead (call this under the queue lock, which
    logging the reference holds). Runs of other storages and `bench report` runs are left alone.
    """
    client = MlflowClient()
    running = client.search_runs([experiment_id], "attributes.status = 'RUNNING'", max_results=5000)
    by_id = {r.info.run_id: r for r in running}
    ended = []
    for r in running:
        owner = r.data.tags
        if OPTUNA_TRIAL not in owner and PARENT in owner:
            parent = by_id.get(owner[PARENT])
            if parent is None:
                try:
                    parent = client.get_run(owner[PARENT])
                except Exception:
                    parent = None
            owner = parent.data.tags if parent is not None else {}
        if OPTUNA_TRIAL in owner:
            theirs = str(owner.get(OPTUNA_STORAGE, ""))
            same = theirs == storage_label or (  # the home's own journal, reached by another path (a copy)
                _local_store["on"] and theirs.startswith("journal:") and storage_label.startswith("journal:"))
            dead = same and int(owner[OPTUNA_TRIAL]) not in live_trials
        else:
            dead = REFERENCE in owner
        if dead:
            end_orphan(r.info.run_id)
            ended.append(r.info.run_id)
    return ended
