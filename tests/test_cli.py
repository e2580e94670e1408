"""The command line: method listing, and bad input as one line with exit code 2."""
import ast
import json
import re
import subprocess
import sys
from pathlib import Path

import pytest
from mlflow.tracking import MlflowClient

from bench.cli import main


def test_methods_json_reports_the_paper_counts(capsys):
    main(["methods", "--json"])
    rows = {r["name"]: r for r in json.loads(capsys.readouterr().out)}
    assert rows["ours"]["params"]["restorer"] == 603_360
    assert rows["ours"]["params"]["mask"] == 56_449
    assert rows["ours"]["params"]["adapted"] == 37_728 + 21_024
    assert rows["chi"]["params"]["restorer"] == 620_928


def _yaml(text):
    """A case whose study file is written into the test's temp dir."""
    def make(tmp):
        path = tmp / "study.yaml"
        path.write_text(text)
        return ["run", str(path)]
    return make


def _home_with_file_as_cache(tmp):
    (tmp / "cache").write_text("not a folder")  # as good as a full or read-only disk, even for root
    return ["run", "table2", "--preset", "smoke"]


def _taken_port(tmp):
    import socket

    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    sock.listen()
    _held.append(sock)  # held until the test session ends
    return ["ui", "--port", str(sock.getsockname()[1])]


_held: list = []


def _file_as_home(tmp):  # a home that cannot be created, even for root (chmod does not stop root)
    (tmp / "file").write_text("not a folder")
    return ["run", "table2", "--preset", "smoke", "--home", str(tmp / "file" / "home")]


def _not_an_image(tmp):
    (tmp / "notes.txt").write_text("hello")
    return ["denoise", str(tmp / "notes.txt")]


# The bad-input matrix: (arguments or a function of the temp dir returning them, text the one-line error must hold).
BAD_INPUT = [
    (["run", "nosuchstudy"], "unknown study 'nosuchstudy'"),
    (["run", "missing.yaml"], "missing.yaml: study file not found"),
    (["run", "table2", "--preset", "huge"], "unknown preset 'huge'"),
    (["run", "table2", "--set", "finetune.epochz=3"], "unknown key 'finetune.epochz'"),
    (["run", "table2", "--set", "finetune.epochs=-1"], "finetune.epochs"),
    (["run", "table2", "--set", "pretrain.epochs=0"], "pretrain.epochs"),
    (["run", "table2", "--set", "finetune.steps=0"], "finetune.steps"),  # K = 0
    (["run", "table2", "--set", "metatest.steps=-2"], "metatest.steps"),
    (["run", "table2", "--set", "finetune.epochs=abc"], "finetune.epochs"),
    (["run", "table2", "--set", "noequals"], "expected key=value"),
    (["run", "table2", "--seeds", "a,b"], "--seeds"),
    (["run", "table2", "--device", "tpu"], "--device 'tpu'"),
    (["run", "table2", "--workers", "0"], "--workers 0"),
    (["run", "table2", "--nosuchflag"], "No such option"),
    (["run", "table2", "--preset", "smoke", "--set", "finetune.patch=4096"], "finetune.patch=4096"),
    (["run", "table2", "--preset", "paper", "--data-root", "/nonexistent/data"], "/nonexistent/data"),
    (["run", "table2", "--storage", "sqlite:////nonexistent/dir/optuna.db"], "--storage sqlite:////nonexistent"),
    (["run", "table2", "--storage", "postgresql://user:secret@127.0.0.1:1/nodb"], "--storage postgresql://user:***@"),
    (_home_with_file_as_cache, "the checkpoint cache cannot be written"),
    (_yaml("title: x\nrows: [\n"), "malformed YAML"),
    (_yaml("title: x\nrows:\n  - {name: a, method: nosuch}\n"), "unknown method 'nosuch'"),
    (_yaml("title: x\nbogus: 1\nrows:\n  - {name: a, method: ours}\n"), "bogus"),
    (_yaml("title: x\nrows: just-a-string\n"), "rows"),
    (_yaml("title: x\nrows:\n  - {name: a, method: ours, metatest: maybe}\n"), "metatest"),
    (_yaml("title: x\nrows:\n  - {name: a, method: ours, set: [finetune.nope=1]}\n"), "finetune.nope"),
    (["ablate"], "give at least one of"),
    (["ablate", "--base", "nosuch", "--no-pretrain"], "unknown method 'nosuch'"),
    (["ablate", "--base", "ridnet", "--no-mask"], "not a meta-learned method"),
    (["tune", "nosuch"], "unknown method 'nosuch'"),
    (_not_an_image, "notes.txt: unsupported file type"),
    (["perf", "--threads", "0"], "--threads 0"),
    (["run", "table2", "--seeds", "0,0"], "seed 0 is given twice"),
    (["run", "table2", "--seeds", str(2**32)], "from 0 to 4294967295"),
    (["run", "table2", "--seeds", str(2**70)], "from 0 to 4294967295"),
    (["run", "table2", "--set", "finetune.lr=.inf"], "finetune.lr: Input should be a finite number"),
    (["run", "table2", "--set", "finetune.lr=-inf"], "finetune.lr: Input should be a finite number"),
    (["run", "table2", "--set", "pretrain.lambda_g=nan"], "pretrain.lambda_g: Input should be a finite number"),
    (["run", "table2", "--storage", "postgresql://user:secret@x@127.0.0.1:1/nodb"], "postgresql://user:***@127.0.0.1"),
    (["run", "table2", "--storage", "postgresql://127.0.0.1:1/nodb?user=u&password=secret"], "password=***"),
    (["run", "table2", "--storage", "mysql+pymysql://u@127.0.0.1:1/db?passwd=secret"], "passwd=***"),
    (_taken_port, "cannot listen on 127.0.0.1"),
    (_file_as_home, "the bench home cannot be written"),
]


@pytest.mark.parametrize("args,needle", BAD_INPUT, ids=lambda v: v if isinstance(v, str) else None)
def test_bad_input_is_one_line_and_exit_2(run_cli, tmp_path, args, needle):
    args = args(tmp_path) if callable(args) else args
    home = [] if args[0] in ("denoise", "perf") or "--home" in args else ["--home", str(tmp_path)]
    code, _, err = run_cli(*args, *home)
    assert code == 2, err
    assert needle in err, err
    assert len(err.strip().splitlines()) == 1 and "Traceback" not in err
    assert "secret" not in err
    db = tmp_path / "mlflow.db"
    if db.exists():  # nothing left RUNNING (nor, for these, any run at all)
        assert not MlflowClient(f"sqlite:///{db}").search_runs(
            [e.experiment_id for e in MlflowClient(f"sqlite:///{db}").search_experiments()])


def test_unreachable_tracking_server_fails_in_seconds(run_cli, tmp_path, monkeypatch):
    monkeypatch.setenv("MLFLOW_TRACKING_URI", "http://127.0.0.1:1")
    code, _, err = run_cli("run", "table2", "--preset", "smoke", "--home", str(tmp_path))
    assert code == 2 and "MLflow tracking server http://127.0.0.1:1 cannot be reached" in err
    assert not (tmp_path / "optuna.journal").exists()


def test_no_traceback_from_the_console_script(tmp_path):
    proc = subprocess.run([sys.executable, "-m", "bench", "run", "nosuchstudy", "--home", str(tmp_path)],
                          capture_output=True, text=True)
    assert proc.returncode == 2
    assert proc.stderr.strip().startswith("error: unknown study") and "Traceback" not in proc.stderr


def test_corrupted_stage_checkpoint_is_one_line_and_leaves_nothing_running(run_cli, tmp_path):
    rows = "rows:\n  - {name: a, method: ours, stage: pretrain}\n"
    (tmp_path / "first.yaml").write_text("title: first\n" + rows)
    (tmp_path / "second.yaml").write_text("title: second\n" + rows)  # same row: reuses the stage checkpoint
    assert run_cli("run", tmp_path / "first.yaml", "--preset", "smoke", "--quiet", "--home", tmp_path)[0] == 0
    (ckpt,) = (tmp_path / "cache").glob("pretrain-*.pt")
    ckpt.write_bytes(ckpt.read_bytes()[:100])  # a copy cut short
    code, _, err = run_cli("run", str(tmp_path / "second.yaml"), "--preset", "smoke", "--quiet",
                           "--home", str(tmp_path))
    assert code == 2 and f"{ckpt}: cannot load checkpoint" in err and "delete it" in err
    assert len(err.strip().splitlines()) == 1
    client = MlflowClient(f"sqlite:///{tmp_path / 'mlflow.db'}")
    runs = client.search_runs([e.experiment_id for e in client.search_experiments()])
    assert runs and not [r for r in runs if r.info.status == "RUNNING"]


def test_ablate_has_one_flag_per_ablation_and_shares_the_study_options(run_cli):
    from bench.studies.ablate import ABLATIONS

    _, ablate_help, _ = run_cli("ablate", "--help")
    _, run_help, _ = run_cli("run", "--help")
    for a in ABLATIONS.values():
        assert f"--{a.flag}" in ablate_help
    for opt in ("--preset", "--set", "--seeds", "--device", "--storage", "--data-root", "--home", "--workers",
                "--quiet"):
        assert opt in ablate_help and opt in run_help
    storage = [re.sub(r"[│\s]+", " ", text.split("--storage", 1)[1].split("--data-root", 1)[0])
               for text in (ablate_help, run_help)]
    assert storage[0] == storage[1] and "journal file" in storage[0]  # one definition, one help text


def test_studies_ship_in_the_package_and_user_studies_live_in_the_home(tmp_path):
    from bench.core.config import STUDIES_DIR
    from bench.studies.plan import load_study
    from bench.studies.spec import study_names
    from bench.studies.tune import default_out

    # a checkout reads the top-level studies/ folder (a wheel holds it as bench/studyfiles: test_packaging.py)
    assert STUDIES_DIR == Path(__file__).resolve().parent.parent / "studies"
    assert {"table1", "table2", "table3"} <= set(study_names())
    assert not {"presets", "scenarios"} & set(study_names())  # in that folder, but not studies
    (tmp_path / "studies").mkdir()
    (tmp_path / "studies" / "mine.yaml").write_text("title: mine\nrows:\n  - {name: a, method: ours}\n")
    assert "mine" in study_names(tmp_path) and load_study("mine", tmp_path)[1].title == "mine"
    assert default_out("ours", tmp_path) == tmp_path / "studies" / "tuned-ours.yaml"


# private names imported from another project module; Optuna internals are pinned in pyproject.toml


def _private_imports(path: Path, root: Path) -> list[str]:
    """``from x import _y`` and ``x._y`` (x an imported project module) in one file."""
    tree = ast.parse(path.read_text())
    modules, found = set(), []
    for node in ast.walk(tree):
        if isinstance(node, ast.ImportFrom):
            project = node.level > 0 or (node.module or "").split(".")[0] in ("bench", "methods")
            for a in node.names:
                if project and a.name.startswith("_") and not a.name.startswith("__"):
                    found.append(f"{path.relative_to(root)}:{node.lineno}: from {'.' * node.level}{node.module or ''} "
                                 f"import {a.name}")
                elif project:
                    modules.add(a.asname or a.name)
        elif isinstance(node, ast.Import):
            modules |= {(a.asname or a.name).split(".")[0] for a in node.names
                        if a.name.split(".")[0] in ("bench", "methods")}
    for node in ast.walk(tree):
        if (isinstance(node, ast.Attribute) and isinstance(node.value, ast.Name) and node.value.id in modules
                and node.attr.startswith("_") and not node.attr.startswith("__")):
            found.append(f"{path.relative_to(root)}:{node.lineno}: {node.value.id}.{node.attr}")
    return found


def _offenders() -> list[str]:
    root = Path(__file__).resolve().parent.parent
    return [f for d in ("bench", "methods") for p in sorted((root / d).rglob("*.py")) for f in _private_imports(p, root)]


def test_the_private_import_check_finds_one():
    src = "from .adapt import _forward\nfrom . import adapt\nadapt._inner_steps()\nfrom .x import y\ny._z\n"
    root = Path(__file__).resolve().parent
    tmp = root / "_probe_private.py"
    tmp.write_text(src)
    try:
        found = _private_imports(tmp, root)
    finally:
        tmp.unlink()
    assert sorted(f.split(": ", 1)[1] for f in found) == ["adapt._inner_steps", "from .adapt import _forward", "y._z"]


def test_no_module_imports_a_private_name_from_another():
    offenders = _offenders()
    assert not offenders, "\n".join(offenders)
