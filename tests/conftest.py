"""Shared fixtures: the command line as a function, an MLflow client on a bench home, and one
finished smoke study (table2) for the tests that only read one."""
import contextlib
import io
import os
from dataclasses import dataclass
from pathlib import Path

import pytest
import torch

os.environ.setdefault("MLFLOW_DISABLE_TELEMETRY", "true")
os.environ.setdefault("DO_NOT_TRACK", "1")
torch.set_num_threads(min(2, torch.get_num_threads()))


@pytest.fixture(autouse=True)
def _seed():
    torch.manual_seed(0)


@pytest.fixture
def run_cli(capsys):
    """``run_cli(*args) -> (exit code, stdout, stderr)`` of ``bench ARGS`` in this process."""
    from bench.cli import main

    def call(*args: str) -> tuple[int, str, str]:
        capsys.readouterr()
        try:
            main([str(a) for a in args])
            code = 0
        except SystemExit as e:
            code = e.code or 0
        out = capsys.readouterr()
        return code, out.out, out.err
    return call


@pytest.fixture
def mlflow_client():
    """``mlflow_client(home)``: a client on the local MLflow store of a bench home."""
    from mlflow.tracking import MlflowClient

    return lambda home: MlflowClient(tracking_uri=f"sqlite:///{Path(home) / 'mlflow.db'}")


@dataclass(frozen=True)
class SmokeHome:
    home: Path
    out: str  # what `bench run table2 --preset smoke` printed


@pytest.fixture(scope="session")
def smoke_home(tmp_path_factory) -> SmokeHome:
    """A bench home where `bench run table2 --preset smoke --quiet` has finished (read it, do not add to it)."""
    from bench.cli import main

    home = tmp_path_factory.mktemp("smoke-home")
    buf = io.StringIO()
    with pytest.MonkeyPatch.context() as mp, contextlib.redirect_stdout(buf):
        mp.delenv("MLFLOW_TRACKING_URI", raising=False)
        main(["run", "table2", "--preset", "smoke", "--home", str(home), "--quiet"])
    return SmokeHome(home, buf.getvalue())
