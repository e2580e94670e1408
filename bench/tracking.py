"""MLflow tracking: one experiment per study, a parent run per row × seed, nested runs per stage.

The tracking URI comes from ``MLFLOW_TRACKING_URI``, else a local sqlite store under the bench
home (``.bench/`` by default), with artifacts beside it. A run that raises is ended FAILED by the
context manager, so a crash never leaves a run RUNNING.
"""
from __future__ import annotations

import json
import logging
import os
import re
import tempfile
import time
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Iterator

os.environ.setdefault("MLFLOW_DISABLE_TELEMETRY", "true")

import mlflow  # noqa: E402
from mlflow.tracking import MlflowClient  # noqa: E402

from .tags import ERROR, PARENT, STAGE_KEY  # noqa: E402
from .errors import BenchError  # noqa: E402

# No "creating initial database tables" chatter on first use (set after mlflow configures its loggers).
logging.getLogger("mlflow").setLevel(logging.WARNING)
logging.getLogger("alembic").setLevel(logging.WARNING)


def tracking_uri(home: Path) -> str:
    return os.environ.get("MLFLOW_TRACKING_URI") or f"sqlite:///{(home / 'mlflow.db').resolve()}"


def artifact_name(name: str) -> str:
    """A name safe as one artifact path component ('#' or '/' would break artifact URIs)."""
    return re.sub(r"[^\w.-]", "_", name)


def mask_secret(url: str) -> str:
    """A URL with its password replaced by ***, safe to log or print."""
    return re.sub(r"(//[^:/@]+:)[^@]*@", r"\1***@", url)


_local_store = {"on": False}  # whether the active store is our default one under the bench home


def setup(home: Path) -> str:
    """Point MLflow at the store for ``home``; returns its URI."""
    home.mkdir(parents=True, exist_ok=True)
    user_uri = os.environ.get("MLFLOW_TRACKING_URI")
    uri = tracking_uri(home)
    mlflow.set_tracking_uri(uri)
    if user_uri is None:  # set_tracking_uri exports the variable; keep the environment as it was
        os.environ.pop("MLFLOW_TRACKING_URI", None)
    _local_store["on"] = user_uri is None
    if uri.startswith(("http://", "https://")):
        _probe(uri)
    return uri


@contextmanager
def _home_lock(home: Path) -> Iterator[None]:
    import fcntl

    home.mkdir(parents=True, exist_ok=True)
    with open(home / ".mlflow.lock", "a") as fh:
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


def experiment(name: str, home: Path) -> str:
    """Get or create the experiment; local stores keep artifacts under ``home/mlartifacts``.

    Two commands starting at once on one home would both create the sqlite store (its schema
    migration is not safe to run twice at once) and the experiment: a file lock serialises that.
    """
    try:
        with _home_lock(home):
            exp = mlflow.get_experiment_by_name(name)
            if exp is not None:
                return exp.experiment_id
            location = (home / "mlartifacts").resolve().as_uri() if _local_store["on"] else None
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
        mlflow.log_artifact(str(path), artifact_path=folder, run_id=self.id)

    def text(self, text: str, name: str) -> None:
        mlflow.log_text(text, name, run_id=self.id)

    def image(self, array, name: str) -> None:
        """An (H,W) or (H,W,3) float image in [0,1] as a PNG artifact."""
        import numpy as np

        MlflowClient().log_image(self.id, np.clip(np.asarray(array) * 255 + 0.5, 0, 255).astype("uint8"),
                                 artifact_file=name)

    def table(self, rows: list[dict], name: str) -> None:
        import pandas as pd

        with tempfile.TemporaryDirectory() as tmp:
            path = Path(tmp) / name
            pd.DataFrame(rows).to_csv(path, index=False)
            self.artifact(path)

    def dict(self, data: dict, name: str) -> None:
        mlflow.log_text(json.dumps(data, indent=2, default=str), name, run_id=self.id)


@contextmanager
def run(name: str, experiment_id: str | None = None, nested: bool = False,
        tags: dict[str, Any] | None = None, run_id: str | None = None) -> Iterator[Run]:
    """An MLflow run that ends FINISHED, KILLED (pruned or interrupted) or FAILED, never RUNNING.

    With ``run_id`` an existing run is reopened (a trial or stage resumed after a kill) instead of
    a new one started, so an interrupted row keeps one run.
    """
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
        if not killed:
            MlflowClient().set_tag(active.info.run_id, ERROR, f"{type(e).__name__}: {e}"[:500])
        mlflow.end_run("KILLED" if killed else "FAILED")
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


def end_orphan(run_id: str) -> None:
    """End a run that a killed process left RUNNING as KILLED (it will not be resumed)."""
    client = MlflowClient()
    client.set_tag(run_id, ERROR, "the process running it died; superseded by a later run")
    client.set_terminated(run_id, "KILLED")
