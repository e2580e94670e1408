"""The bench home: the folder a user's runs live in, and the one place that knows its layout.

``Home.resolve(opt)`` picks the folder (``--home``, else ``$BENCH_HOME``, else ``./.bench``, kept
as given: relative stays relative, as in every message and in the journal label MLflow runs carry);
the properties name what lives in it. The names are the on-disk format: homes made by earlier
versions must keep working, so they never change. A ``Home`` is a plain value: building one touches
no disk, and it pickles (worker processes get it with their ``StudyRunner``).

    mlflow.db, mlartifacts/   the local MLflow store and its artifacts (``.mlflow.lock`` guards both)
    optuna.journal            the Optuna studies (one journal for every study of the home)
    cache/                    stage checkpoints (``bench.training.stages.StageCache``) and the results
                              of rows scored once per study (``bench.studies.shared``)
    locks/                    who runs which trial (``bench.runtime.trialqueue``)
    studies/                  the user's own and ``bench tune``'s study files, found by name
"""
from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import Union

ENV = "BENCH_HOME"
DEFAULT = ".bench"


@dataclass(frozen=True)
class Home:
    root: Path

    def __post_init__(self) -> None:
        object.__setattr__(self, "root", Path(self.root))

    @classmethod
    def resolve(cls, path: HomeLike | None = None) -> Home:
        """The home a command uses: ``path`` (its ``--home``), else ``$BENCH_HOME``, else ``./.bench``."""
        return cls.of(os.environ.get(ENV, DEFAULT) if path is None else path)

    @classmethod
    def of(cls, path: HomeLike) -> Home:
        """``path`` as a Home (a Home is returned as it is)."""
        return path if isinstance(path, Home) else cls(Path(path))

    def __str__(self) -> str:  # messages name the folder, as given
        return str(self.root)

    def __fspath__(self) -> str:
        return str(self.root)

    # Optuna
    @property
    def journal(self) -> Path:
        return self.root / "optuna.journal"

    @property
    def journal_label(self) -> str:
        """How MLflow runs name the home's journal (tag ``optuna_storage``)."""
        return f"journal:{self.journal}"

    # MLflow's local store
    @property
    def tracking_db(self) -> Path:
        return self.root / "mlflow.db"

    @property
    def tracking_db_aside(self) -> Path:
        """Where a store an interrupted first run left half-made is set aside."""
        return self.root / "mlflow.db.incomplete"

    @property
    def tracking_uri(self) -> str:
        return f"sqlite:///{self.tracking_db.resolve()}"

    @property
    def artifacts(self) -> Path:
        return self.root / "mlartifacts"

    @property
    def artifacts_uri(self) -> str:
        return self.artifacts.resolve().as_uri()

    @property
    def tracking_lock(self) -> Path:
        return self.root / ".mlflow.lock"

    # Runs
    @property
    def cache(self) -> Path:
        return self.root / "cache"

    @property
    def locks(self) -> Path:
        return self.root / "locks"

    # Study files
    @property
    def studies(self) -> Path:
        return self.root / "studies"

    def study_file(self, name: str) -> Path:
        """The user study ``name`` (``bench run NAME`` looks here before the shipped studies)."""
        return self.studies / f"{name}.yaml"


HomeLike = Union[Home, str, os.PathLike]
