"""The command line's conventions: -h/--help/--version, flags shown as flags, the listing commands,
errors that list what is allowed, cheap checks answered before any heavy library loads, and the home
and data root printed absolute."""
import json
import re
import subprocess
import sys
from pathlib import Path

import pytest

from bench.cli import app, data_app
from bench.core.config import preset_names

HEAVY = ("torch", "mlflow", "optuna", "pandas", "sqlalchemy")

# `bench ARGS` in a fresh interpreter; then which heavy libraries had been imported, as the last stdout line.
WRAPPER = """
import json, sys
from bench.cli import main
code = 0
try:
    main(sys.argv[1:])
except SystemExit as e:
    code = e.code or 0
sys.stdout.flush()
print("\\nLOADED=" + json.dumps(sorted(m for m in %r if m in sys.modules)))
sys.exit(code)
""" % (HEAVY,)


def bench_fresh(*args, cwd=None):
    """(exit code, stdout without the marker, stderr, heavy modules loaded) of ``bench ARGS`` in a new process."""
    proc = subprocess.run([sys.executable, "-c", WRAPPER, *map(str, args)], capture_output=True, text=True,
                          cwd=cwd, timeout=120)
    out, _, marker = proc.stdout.rpartition("\nLOADED=")
    return proc.returncode, out, proc.stderr, json.loads(marker)


def flat(text: str) -> str:
    """Help text with rich's box drawing and line wrapping taken out."""
    return re.sub(r"[│╭╮╰╯─\s]+", " ", text)


# -- help and version ------------------------------------------------------------------------------

def _commands():
    yield ()
    for c in app.registered_commands:
        yield (c.name or c.callback.__name__,)
    yield ("data",)
    for c in data_app.registered_commands:
        yield ("data", c.name or c.callback.__name__)


@pytest.mark.parametrize("cmd", list(_commands()), ids=lambda c: " ".join(c) or "bench")
def test_every_command_takes_dash_h_and_shows_flags_as_flags(run_cli, cmd):
    code, out, err = run_cli(*cmd, "-h")
    assert code == 0 and "Usage: bench" in out and not err
    assert run_cli(*cmd, "--help")[1] == out
    assert "<bool>" not in out  # a flag takes no value
    if "--json" in out:
        assert re.search(r"--json\s+Machine-readable", out), out


def test_bare_bench_shows_the_help_and_exits_0(run_cli):
    for cmd in ((), ("data",)):
        code, out, err = run_cli(*cmd)
        assert code == 0 and "Usage: bench" in out and "Commands" in out and not err


def test_version_prints_the_distribution_and_its_version():
    from bench.cli.app import bench_version

    code, out, err, loaded = bench_fresh("--version")
    assert code == 0 and out.strip() == f"ttaid-bench {bench_version()}" and not err and not loaded


def test_version_falls_back_to_pyproject(monkeypatch):
    from importlib import metadata

    from bench.cli.app import bench_version

    def missing(name):
        raise metadata.PackageNotFoundError(name)

    text = (Path(__file__).resolve().parent.parent / "pyproject.toml").read_text()
    monkeypatch.setattr(metadata, "version", missing)
    assert f'\nversion = "{bench_version()}"\n' in text


def test_a_flag_given_a_value_is_a_usage_error(run_cli):
    code, _, err = run_cli("methods", "--json", "yes")
    assert code == 2 and "unexpected extra argument" in err and len(err.strip().splitlines()) == 1


def test_preset_help_lists_every_preset_of_presets_yaml(run_cli):
    names = preset_names()
    assert "paper-official" in names
    for cmd in (("run",), ("ablate",), ("tune",), ("data", "check"), ("data", "preview"), ("report",)):
        text = flat(run_cli(*cmd, "--help")[1])
        assert " | ".join(names).replace(" ", "") in text.replace(" ", ""), (cmd, text)


# -- bench studies, bench presets ------------------------------------------------------------------

def test_studies_lists_shipped_and_home_studies_with_where_they_live(tmp_path):
    (tmp_path / "h" / "studies").mkdir(parents=True)
    (tmp_path / "h" / "studies" / "mine.yaml").write_text("title: Mine\ndescription: d\nrows:\n"
                                                         "  - {name: a, method: ours}\n")
    (tmp_path / "h" / "studies" / "table2.yaml").write_text("title: My table 2\nrows:\n  - {name: a, method: ours}\n")
    (tmp_path / "h" / "studies" / "broken.yaml").write_text("title: [\n")
    code, out, err, loaded = bench_fresh("studies", "--json", "--home", "h", cwd=tmp_path)
    assert code == 0 and not err and not loaded
    data = json.loads(out)
    assert data["home"] == str((tmp_path / "h").resolve())  # relative --home, printed absolute
    studies = {s["name"]: s for s in data["studies"]}
    assert {"table1", "table3", "tta", "mine", "table2", "broken"} <= set(studies)
    assert studies["table1"]["where"] == "shipped" and studies["table1"]["title"].startswith("Table 1")
    mine = str((tmp_path / "h/studies/mine.yaml").resolve())
    assert studies["mine"] == {"name": "mine", "where": "home", "path": mine, "title": "Mine", "description": "d",
                               "rows": 1, "kind": "table"}
    assert studies["table2"]["where"] == "home" and studies["table2"]["shadows"].endswith("studies/table2.yaml")
    assert "malformed YAML" in studies["broken"]["error"]
    assert not {"presets", "scenarios"} & set(studies)
    code, out, err, loaded = bench_fresh("studies", "--home", "h", cwd=tmp_path)
    assert code == 0 and not loaded and "Table 1" in out and "over the shipped one" in out
    assert str((tmp_path / "h").resolve()) in out


def test_presets_lists_every_preset_with_its_description(run_cli):
    code, out, err, loaded = bench_fresh("presets", "--json")
    assert code == 0 and not err and not loaded
    data = json.loads(out)
    assert [p["name"] for p in data["presets"]] == preset_names()
    assert Path(data["file"]).is_absolute() and data["file"].endswith("presets.yaml")
    assert all(p["description"] and p["data"] in ("embedded", "paper") for p in data["presets"])
    code, out, _ = run_cli("presets")
    assert code == 0 and all(n in out for n in preset_names())


# -- errors list what is allowed, before any heavy library loads ------------------------------------

CHEAP = [
    (["run", "table2", "--preset", "fast"], ["unknown preset 'fast'", "paper-official"]),
    (["run", "table2", "--seeds", "0,0"], ["seed 0 is given twice"]),
    (["run", "table2", "--seeds", "x"], ["--seeds 'x'"]),
    (["run", "table2", "--set", "finetune.epochz=3"], ["unknown key 'finetune.epochz'", "epochs"]),
    (["run", "table2", "--set", "finetune.epochs=abc"], ["finetune.epochs"]),
    (["run", "table2", "--workers", "0"], ["--workers 0"]),
    (["run", "table2", "--device", "tpu"], ["--device 'tpu'", "cuda:N"]),
    (["run", "table2", "--storage", "mysql://u:secret@db/optuna"], ["mysql://u:***@db", "'mysql'", "sqlite://"]),
    (["run", "table2", "--storage", "oracle://u@db/x"], ["unknown scheme 'oracle'", "sqlite, postgresql"]),
    (["run", "table2", "--storage", "optuna.db"], ["expected a database URL"]),
    (["run", "nosuchstudy"], ["unknown study 'nosuchstudy'", "table2"]),
    (["run", "tta", "--rows", "alg3,nope"], ["the study has no row 'nope'", "alg3-tuned"]),
    (["run", "tta", "--rows", ","], ["--rows ','", "comma-separated row names"]),
    (["ablate", "--no-mask", "--preset", "fast"], ["unknown preset 'fast'"]),
    (["ablate", "--no-mask", "--seeds", "0,0"], ["seed 0 is given twice"]),
    (["ablate"], ["give at least one of"]),
    (["tune", "--preset", "fast"], ["unknown preset 'fast'"]),
    (["tune", "--storage", "mysql+pymysql://u@db/x?passwd=secret"], ["passwd=***", "pymysql"]),
    (["data", "check", "--preset", "fast"], ["unknown preset 'fast'"]),
    (["denoise", "photo.png", "--adapt", "nope"], ["unknown adaptation 'nope'", "alg3", "lan-offset"]),
    (["denoise", "photo.png", "--adapt", "oracle"], ["evaluation-only"]),
]


def test_the_light_adaptation_names_are_the_registry():
    from bench.adaptation import names, registry

    assert names.BUILT_IN == tuple(registry.REGISTRY)
    assert names.EVALUATION_ONLY == tuple(n for n, e in registry.REGISTRY.items() if e.evaluation_only)


@pytest.mark.parametrize("args,needles", CHEAP, ids=lambda v: " ".join(v) if isinstance(v, list) else None)
def test_cheap_checks_answer_before_heavy_imports(tmp_path, args, needles):
    home = [] if args[0] == "data" else ["--home", tmp_path / "home"]
    code, out, err, loaded = bench_fresh(*args, *home)
    assert code == 2, err
    assert err.startswith("error: ") and len(err.strip().splitlines()) == 1 and "Traceback" not in err
    for n in needles:
        assert n in err, err
    assert "secret" not in err
    assert not loaded, f"{loaded} imported before the error"
    assert not (tmp_path / "home").exists()  # nothing written


@pytest.mark.parametrize("cmd", [["--help"], ["run", "-h"], ["studies"], ["presets"]])
def test_help_and_listings_stay_light(cmd):
    code, _, _, loaded = bench_fresh(*cmd)
    assert code == 0 and not loaded


@pytest.mark.parametrize("base,needle", [("ridnet", "'ridnet': not a meta-learned method"),
                                         ("nosuch", "unknown method 'nosuch'")])
def test_ablate_and_tune_name_the_meta_learned_methods(run_cli, tmp_path, base, needle):
    import methods

    from bench.studies.plan import meta_learned_method

    def meta(n):
        try:
            meta_learned_method(n, "")
            return True
        except Exception:
            return False

    bases = [n for n in methods.names() if meta(n)]
    assert "ours" in bases and "ridnet" not in bases
    for args in (["ablate", "--base", base, "--no-mask"], ["tune", base]):
        code, _, err = run_cli(*args, "--home", tmp_path)
        assert code == 2 and needle in err and err.strip().endswith(", ".join(bases)), err


def test_storage_schemes_follow_the_installed_drivers(monkeypatch):
    from bench.core.errors import BenchError
    from bench.runtime import urls

    urls.check_storage(None)
    urls.check_storage("sqlite:///x.db")
    assert "sqlite://" in urls.usable_schemes()
    monkeypatch.setattr(urls, "_installed", lambda module: module == "sqlite3")
    with pytest.raises(BenchError, match=r"scheme 'postgresql' needs the .* usable here: sqlite://$"):
        urls.check_storage("postgresql://u:pw@h/db")
    monkeypatch.setattr(urls, "_installed", lambda module: module in ("sqlite3", "pymysql"))
    urls.check_storage("mysql+pymysql://u@h/db")
    assert urls.usable_schemes() == ["sqlite://", "mysql+pymysql://"]
    with pytest.raises(BenchError, match="unknown driver 'nope' for postgresql; expected one of: psycopg"):
        urls.check_storage("postgresql+nope://h/db")


def test_tracking_masks_secrets_with_the_light_function():
    from bench.runtime import tracking, urls

    assert tracking.mask_secret is urls.mask_secret


# -- the home and the data root, printed absolute --------------------------------------------------

def test_where_line_prints_the_home_and_data_root_absolute(tmp_path, monkeypatch):
    from bench.cli.study import data_root_of, where_line
    from bench.core.config import load_preset
    from bench.core.home import Home

    monkeypatch.chdir(tmp_path)
    assert where_line(Home.resolve(Path("rel"))) == f"home {tmp_path.resolve() / 'rel'}"
    assert data_root_of(load_preset("smoke")) is None
    cfg = load_preset("paper", ["data.root=data"])
    assert where_line(Home.of("h"), data_root_of(cfg)) == \
        f"home {tmp_path.resolve() / 'h'}; data root {tmp_path.resolve() / 'data'}"


@pytest.mark.slow
def test_run_prints_its_home_absolute(run_cli, tmp_path, monkeypatch):
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    monkeypatch.chdir(tmp_path)
    Path("one.yaml").write_text("title: one\nrows:\n  - {name: a, method: ours, stage: pretrain}\n")
    code, out, _ = run_cli("run", "one.yaml", "--preset", "smoke", "--quiet", "--home", "rel")
    assert code == 0 and f"home {tmp_path.resolve() / 'rel'}; `bench ui`" in flat(out), out


def test_ui_says_which_store_it_serves(run_cli, tmp_path, monkeypatch):
    from tools import free_port

    import bench.cli.tools as tools

    class Server:  # stands in for the MLflow server process
        pid, stderr = 0, iter(())

        def __init__(self, cmd, **_):
            Server.cmd = cmd

        def wait(self, timeout=None):
            return 0

    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    monkeypatch.setattr(tools.subprocess, "Popen", Server)
    monkeypatch.setattr(tools.signal, "signal", lambda *a: None)
    monkeypatch.chdir(tmp_path)
    code, out, _ = run_cli("ui", "--home", "rel", "--port", str(free_port()))
    assert code == 0 and f"MLflow UI for home {tmp_path.resolve() / 'rel'} (store sqlite:///" in flat(out), out
    store = Server.cmd[Server.cmd.index("--backend-store-uri") + 1]
    assert store == f"sqlite:///{tmp_path.resolve() / 'rel/mlflow.db'}"
