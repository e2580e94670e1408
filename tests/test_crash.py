"""Crash safety: interrupted store creation, torn journal, full or read-only disk, orphan runs,
copied homes, and `bench run` killed (SIGKILL, SIGINT) at many points of its life."""
import errno
import os
import shutil
import signal
import sqlite3
import subprocess
import sys
import time
from pathlib import Path

import optuna
import pytest
from mlflow.tracking import MlflowClient

from bench.runtime import tags, tracking
from bench.studies.runner import open_storage

ONE_ROW = "title: one\nreference_row: none\nrows:\n  - {name: a, method: ours, stage: pretrain}\n"
# markup-like user strings: `bench run` must print them literally (and not crash after training)
TWO_ROWS = """title: "crash [link=file:///etc]t[/link] <script>x</script>"
rows:
  - {name: A, method: ours, metatest: false}
  - {name: "B [bold]x[/", method: ours, metatest: true}
"""
B = "B [bold]x[/"
# two fine-tuning epochs with a checkpoint after each: a kill can land mid-stage
SETS = ["--set", "finetune.epochs=2", "--set", "data.eval_crop=32"]
ENV = {**os.environ, "BENCH_CHECKPOINT_SECONDS": "0", "OMP_NUM_THREADS": "1", "PYTHONUNBUFFERED": "1"}
ENV.pop("MLFLOW_TRACKING_URI", None)


@pytest.fixture(autouse=True)
def _local_store(monkeypatch):
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)


def one_line(err: str) -> str:
    lines = err.strip().splitlines()
    assert len(lines) == 1 and "Traceback" not in err, err
    return lines[0]


def all_runs(home: Path):
    client = MlflowClient(f"sqlite:///{home / 'mlflow.db'}")
    return client.search_runs([e.experiment_id for e in client.search_experiments()], max_results=5000)


def temp_files(home: Path) -> list[Path]:
    return [p for p in home.rglob("*") if ".tmp" in p.name or p.name.startswith(".probe")]


def journal_trials(home: Path) -> list[optuna.trial.FrozenTrial]:
    from optuna.storages.journal import JournalFileBackend

    storage = optuna.storages.JournalStorage(JournalFileBackend(str(home / "optuna.journal")))
    return [t for s in storage.get_all_studies() for t in storage.get_all_trials(s._study_id)]


# -- 1. the MLflow store -------------------------------------------------------------------------

def test_a_half_created_store_is_made_again_with_a_notice(tmp_path, capsys):
    tracking.setup(tmp_path)
    tracking.local_store(tmp_path)
    db = tmp_path / "mlflow.db"
    con = sqlite3.connect(db)
    con.execute("drop table alembic_version")  # what a kill mid-migration leaves: tables, no finished schema
    con.execute("drop table webhooks")
    con.commit()
    con.close()
    capsys.readouterr()
    tracking.local_store(tmp_path)
    err = capsys.readouterr().err
    assert "half-created" in one_line(err) and "created it again" in err
    exp = tracking.experiment("after-recovery", tmp_path)  # usable: an experiment and a run
    with tracking.run("r", exp):
        pass
    assert (tmp_path / "mlflow.db.incomplete").exists()
    tracking.local_store(tmp_path)
    assert capsys.readouterr().err == ""  # a whole store is left alone


def test_a_store_with_runs_is_never_set_aside(tmp_path, capsys):
    tracking.setup(tmp_path)
    with tracking.run("r", tracking.experiment("kept", tmp_path)):
        pass
    con = sqlite3.connect(tmp_path / "mlflow.db")
    con.execute("update alembic_version set version_num = 'older'")  # another MLflow's schema: its own message
    con.commit()
    con.close()
    tracking.local_store(tmp_path)
    assert "half-created" not in capsys.readouterr().err and not (tmp_path / "mlflow.db.incomplete").exists()


def test_a_kill_while_the_store_is_created_leaves_no_store_and_no_temp_file(tmp_path):
    code = f"from pathlib import Path; from bench import tracking; tracking.local_store(Path({str(tmp_path)!r}))"
    proc = subprocess.Popen([sys.executable, "-c", code], env=ENV)
    deadline = time.monotonic() + 120
    while not list(tmp_path.glob("mlflow.db.tmp*")) and proc.poll() is None:
        assert time.monotonic() < deadline
        time.sleep(0.005)
    proc.kill()
    proc.wait()
    assert not (tmp_path / "mlflow.db").exists() or proc.returncode == 0  # only a whole store is ever in place
    tracking.setup(tmp_path)  # the next start removes the dead process's temp file and creates the store
    tracking.local_store(tmp_path)
    assert not list(tmp_path.glob("mlflow.db.tmp*"))
    with tracking.run("r", tracking.experiment("x", tmp_path)):
        pass


# -- 2. the Optuna journal ------------------------------------------------------------------------

def _journal_with_trials(home: Path, n: int) -> Path:
    storage = open_storage(None, home)
    study = optuna.create_study(study_name="s", storage=storage)
    for i in range(n):
        study.enqueue_trial({"x": i})
        t = study.ask()
        study.tell(t, float(t.suggest_int("x", 0, 10)))
    return home / "optuna.journal"


def test_a_torn_journal_record_is_cut_back_with_one_line(tmp_path, capsys):
    journal = _journal_with_trials(tmp_path, 3)
    whole = journal.read_bytes()
    journal.write_bytes(whole[:-7])  # the last record cut mid-write
    capsys.readouterr()
    storage = open_storage(None, tmp_path)
    note = one_line(capsys.readouterr().err)
    assert note.startswith("note: ") and "torn" in note and "dropped" in note
    assert journal.read_bytes().endswith(b"\n") and whole.startswith(journal.read_bytes())
    (aside,) = tmp_path.glob("optuna.journal.dropped-*")
    assert aside.read_bytes() == whole[len(journal.read_bytes()):-7]
    study = optuna.load_study(study_name="s", storage=storage)
    study.enqueue_trial({"x": 9})  # the next record starts on a line of its own
    t = study.ask()
    study.tell(t, 9.0)
    trials = optuna.load_study(study_name="s", storage=open_storage(None, tmp_path)).get_trials()
    assert [t.value for t in trials if t.state.name == "COMPLETE"][-1] == 9.0
    assert capsys.readouterr().err == ""  # whole again: no notice


def test_a_record_glued_to_a_torn_line_is_dropped_with_what_follows(tmp_path, capsys):
    journal = _journal_with_trials(tmp_path, 2)
    lines = journal.read_bytes().splitlines(keepends=True)
    journal.write_bytes(b"".join(lines[:-2]) + lines[-2][:10] + lines[-1])  # Optuna's next append, glued to the torn line
    open_storage(None, tmp_path)
    assert "1 line(s)" in one_line(capsys.readouterr().err)  # the partial record and the one glued to it
    assert journal.read_bytes() == b"".join(lines[:-2])


# -- 6/7: user strings are inert; secrets never shown ------------------------------------------------

@pytest.mark.parametrize("url,shown", [
    ("postgresql://user:secret@db.example:5432/bench", "postgresql://user:***@db.example:5432/bench"),
    ("postgresql://user:secret@x@db.example/bench", "postgresql://user:***@db.example/bench"),  # unencoded '@'
    ("postgresql+psycopg2://u@corp:secret@h/db", "postgresql+psycopg2://u@corp:***@h/db"),
    ("postgresql://:secret@h/db", "postgresql://:***@h/db"),
    ("postgresql://h/db?user=u&password=secret&sslmode=require", "postgresql://h/db?user=u&password=***&sslmode=require"),
    ("mysql+pymysql://h/db?passwd=secret", "mysql+pymysql://h/db?passwd=***"),
    ("mysql+mysqldb://h/db?PWD=secret;x=1", "mysql+mysqldb://h/db?PWD=***;x=1"),
    ("postgresql://u:secret@/db?host=/run/postgresql", "postgresql://u:***@/db?host=/run/postgresql"),
    ("sqlite:////tmp/optuna.db", "sqlite:////tmp/optuna.db"),
])
def test_mask_secret_masks_every_password_form(url, shown):
    assert tracking.mask_secret(url) == shown


def test_a_storage_password_never_reaches_the_error(tmp_path):
    from bench.core.config import load_preset
    from bench.studies.runner import StudyRunner
    from bench.studies.plan import load_study

    name, spec = load_study("table2")
    for url in ("postgresql://u:secret@x@127.0.0.1:1/db", "postgresql://127.0.0.1:1/db?password=secret"):
        with pytest.raises(Exception) as e:
            StudyRunner(name, spec, "smoke", load_preset("smoke"), [0], tmp_path, url, "cpu", True)
        assert "secret" not in str(e.value) and "***" in str(e.value)


HOSTILE = ["[bold]x[/", "[link=file:///etc]y[/link]", "<script>alert(1)</script>", "two\nlines | pipe",
           "\\input{/etc/passwd} $x$ 100%"]


def test_user_strings_print_literally_in_every_medium():
    import io
    import re

    from rich.console import Console

    from bench.report.console import study_table as console_table
    from bench.report.tables import Cell, TableDoc, to_html, to_latex, to_markdown

    records = [{"row": n, "n": 1} for n in HOSTILE[:-1]] + [{"row": HOSTILE[-1], "failed": "[red]boom[/"}]
    buf = io.StringIO()
    Console(file=buf, width=200, force_terminal=True).print(console_table("[title]<b>", records, "embedded"))
    text = buf.getvalue()
    assert "\x1b]8;" not in text  # no terminal hyperlink
    plain = re.sub(r"\x1b\[[0-9;]*m", "", text)
    for needle in ("[bold]x[/", "[link=file:///etc]y[/link]", "[title]<b>", "failed: [red]boom[/"):
        assert needle in plain

    doc = TableDoc("t", "T <script>", ["Row", "v"], [[Cell(n), Cell("1")] for n in HOSTILE], "lr")
    md = to_markdown(doc)
    table_lines = [ln for ln in md.splitlines() if ln.startswith("|")]
    assert len(table_lines) == 2 + len(HOSTILE) and all(ln.count(" | ") == 1 for ln in table_lines[2:])
    assert "<script>" not in md and "&lt;script&gt;" in md and "two lines \\| pipe" in md
    html = to_html(doc)
    assert "<script>" not in html and "&lt;script&gt;alert(1)&lt;/script&gt;" in html
    tex = to_latex(doc)
    assert "\\input{" not in tex and "\\textbackslash{}input\\{/etc/passwd\\}" in tex and "100\\%" in tex


# -- 3. full disk, read-only home --------------------------------------------------------------------

def _study(tmp_path: Path) -> Path:
    path = tmp_path / "one.yaml"
    path.write_text(ONE_ROW)
    return path


def _no_running_runs(home: Path) -> list:
    runs = all_runs(home)
    assert not [r for r in runs if r.info.status == "RUNNING"]
    return runs


def test_torch_save_on_a_full_disk_is_one_line_and_the_rerun_recovers(run_cli, tmp_path, monkeypatch):
    import torch

    home, study = tmp_path / "home", _study(tmp_path)
    real_save = torch.save

    def full(obj, f, *a, **kw):  # writes part of the file, then the disk is full (as torch reports it)
        Path(f).write_bytes(b"partial")
        raise RuntimeError("[enforce fail at inline_container.cc:626] . PytorchStreamWriter failed writing file "
                           "data/0: file write failed")
    monkeypatch.setattr(torch, "save", full)
    code, _, err = run_cli("run", study, "--preset", "smoke", "--quiet", "--home", home)
    line = one_line(err)
    assert code == 2 and "cannot be written" in line and "free space" in line and str(home / "cache") in line
    runs = _no_running_runs(home)
    assert {r.info.status for r in runs} == {"FAILED"}  # the parent and its stage run, with the reason
    assert not temp_files(home)
    monkeypatch.setattr(torch, "save", real_save)
    code, out, err = run_cli("run", study, "--preset", "smoke", "--quiet", "--home", home)
    assert code == 0 and " a " in out, err


def test_enospc_from_artifact_logging_is_one_line(run_cli, tmp_path, monkeypatch):
    import mlflow

    def full(*a, **kw):
        raise OSError(errno.ENOSPC, "No space left on device")
    monkeypatch.setattr(mlflow, "log_artifact", full)
    home = tmp_path / "home"
    code, _, err = run_cli("run", _study(tmp_path), "--preset", "smoke", "--quiet", "--home", home)
    line = one_line(err)
    assert code == 2 and "No space left on device" in line and "mlartifacts" in line and "free space" in line
    _no_running_runs(home)
    assert not temp_files(home)


def test_stale_temp_files_of_dead_processes_are_removed_at_the_next_start(tmp_path):
    home = tmp_path / "home"
    (home / "cache").mkdir(parents=True)
    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    dead.wait()
    stale = [home / "cache" / f"pretrain-0123.pt.tmp{dead.pid}", home / f"mlflow.db.tmp{dead.pid}"]
    live = home / "cache" / f"finetune-0123.pt.tmp{os.getpid()}"  # a live writer's file is left alone
    for p in (*stale, live):
        p.write_bytes(b"x")
    from bench.training.stages import StageCache

    tracking.setup(home)  # what every `bench run` start does
    StageCache(home / "cache")
    assert not any(p.exists() for p in stale) and live.exists()


def _unwritable(tmp_path: Path, what: str) -> Path:
    """A home that cannot be written (``home``) or created (``parent``): chmod, or for root (whom
    chmod does not stop) a file where a folder is expected."""
    base = tmp_path / "ro"
    if os.geteuid() == 0:
        base.write_text("a file, not a folder")
        return base if what == "home" else base / "home"
    base.mkdir()
    os.chmod(base, 0o500)
    return base if what == "home" else base / "home"


@pytest.mark.parametrize("what", ["home", "parent"])
def test_a_read_only_home_or_parent_is_one_line(run_cli, tmp_path, what):
    home = _unwritable(tmp_path, what)
    try:
        code, _, err = run_cli("run", "table2", "--preset", "smoke", "--home", home)
    finally:
        os.chmod(tmp_path / "ro", 0o700) if (tmp_path / "ro").is_dir() else None
    line = one_line(err)
    assert code == 2 and f"{home}: the bench home cannot be written" in line and "--storage" not in line


# -- 4/8/9: whole studies in real processes ---------------------------------------------------------

def _ctrl_c_as_on_a_terminal() -> None:
    """A command started in the background of a non-interactive shell (``pytest … &``, some CI
    runners) inherits SIGINT ignored; the child gets it back so that Ctrl-C is tested as a user sends it."""
    signal.signal(signal.SIGINT, signal.SIG_DFL)


def bench(home: Path, study: Path, *extra: str) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, "-m", "bench", "run", str(study), "--preset", "smoke", "--quiet",
                             "--home", str(home), *SETS, *extra], env=ENV, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True, preexec_fn=_ctrl_c_as_on_a_terminal)


def table(out: str) -> list[str]:
    """The printed table without the timing line and the stage-cache lines (reused or trained
    depends on where the run was interrupted)."""
    return [ln for ln in out.splitlines() if "finished trial(s)" not in ln and not ln.startswith("cache: ")]


def finish(proc: subprocess.Popen) -> str:
    out, err = proc.communicate(timeout=900)
    assert proc.returncode == 0, err[-3000:]
    assert "Traceback" not in err, err[-3000:]
    return out


@pytest.fixture(scope="module")
def two_rows(tmp_path_factory):
    """The crash study, and one uninterrupted run of it (its home and its table)."""
    base = tmp_path_factory.mktemp("crash")
    study = base / "crash.yaml"
    study.write_text(TWO_ROWS)
    home = base / "reference"
    expected = table(finish(bench(home, study)))
    assert any(ln.startswith(f"│ {B} ") for ln in expected) and "crash [link=file:///etc]t[/link]" in expected[0]
    return study, home, expected


def check_home(home: Path, expected: list[str], out: str) -> None:
    """Same table, nothing RUNNING, every row × seed complete once, no temp file, every row run
    with a child run per stage."""
    assert table(out) == expected
    runs = _no_running_runs(home)
    trials = journal_trials(home)
    assert not [t for t in trials if t.state.name in ("RUNNING", "WAITING")]
    done = sorted(t.params["row"] for t in trials if t.state.name == "COMPLETE")
    assert done == ["A", B], done  # no duplicate
    assert not temp_files(home) and not list(home.rglob("*.partial.pt"))
    parents = {r.info.run_id: r for r in runs if r.data.tags.get(tags.ROW) and tags.PARENT not in r.data.tags}
    assert sorted(r.data.tags[tags.ROW] for r in parents.values() if r.info.status == "FINISHED") == ["A", B]
    for pid, parent in parents.items():
        if parent.info.status != "FINISHED":
            continue
        stages = [r for r in runs if r.data.tags.get(tags.PARENT) == pid and r.info.status == "FINISHED"]
        assert "finetune" in {r.data.tags.get(tags.STAGE) for r in stages}, parent.data.tags[tags.ROW]
        for r in stages:  # a reused stage names the run that trained it
            if r.data.tags.get(tags.REUSED) == "true":
                assert r.data.tags.get(tags.TRAINED_IN_RUN)


@pytest.mark.slow
def test_orphan_runs_of_dead_processes_are_ended_by_the_next_command(tmp_path, two_rows):
    study, ref, expected = two_rows
    home = tmp_path / "home"
    shutil.copytree(ref, home)
    client = MlflowClient(f"sqlite:///{home / 'mlflow.db'}")
    exp = next(e for e in client.search_experiments() if e.name.startswith("crash-"))
    label = next(r for r in all_runs(home) if tags.OPTUNA_STORAGE in r.data.tags).data.tags[tags.OPTUNA_STORAGE]
    parent = client.create_run(exp.experiment_id, tags={tags.ROW: "A", tags.OPTUNA_TRIAL: "57",
                                                        tags.OPTUNA_STORAGE: label})
    stage = client.create_run(exp.experiment_id, tags={tags.PARENT: parent.info.run_id, tags.STAGE: "pretrain"})
    reference = client.create_run(exp.experiment_id, tags={tags.REFERENCE: "val"})
    other = client.create_run(exp.experiment_id, tags={tags.REPORT: "true"})  # not a trial's: left alone
    out = finish(bench(home, study))  # nothing to train: the orphans are ended anyway
    for run in (parent, stage, reference):
        r = client.get_run(run.info.run_id)
        assert r.info.status == "KILLED" and "died" in r.data.tags[tags.ERROR]
    assert client.get_run(other.info.run_id).info.status == "RUNNING"
    client.set_terminated(other.info.run_id)
    check_home(home, expected, out)


@pytest.mark.slow
def test_a_copied_home_never_writes_into_the_original(tmp_path, two_rows):
    study, ref, _ = two_rows
    original, copy = tmp_path / "original", tmp_path / "copy"
    shutil.copytree(ref, original)
    before = {p: (p.stat().st_mtime_ns, p.read_bytes()) for p in original.rglob("*") if p.is_file()}
    shutil.copytree(original, copy)
    out = finish(bench(copy, study, "--seeds", "1"))
    assert " A " in out
    after = {p: (p.stat().st_mtime_ns, p.read_bytes()) for p in original.rglob("*") if p.is_file()}
    assert after == before
    client = MlflowClient(f"sqlite:///{copy / 'mlflow.db'}")
    for r in all_runs(copy):
        assert r.info.artifact_uri.startswith(copy.resolve().as_uri()), r.info.artifact_uri
        assert str(original) not in r.data.tags.get(tags.CHECKPOINT, "")
    assert client.list_artifacts(next(r for r in all_runs(copy) if r.data.tags.get(tags.SEED) == "1"
                                      and tags.PARENT not in r.data.tags).info.run_id)


def _kill_points():
    """(name, signal, when): when is a file under the home to wait for, or seconds after the start."""
    K, I = signal.SIGKILL, signal.SIGINT
    return [
        # Ctrl-C in a fresh home's first moment: as soon as the command has made its first file there
        # (a fixed 1 s could land inside the interpreter's own start-up on a loaded machine, before any
        # of bench's code runs, where no program can turn Ctrl-C into exit code 130).
        ("fresh-0.3s", K, 0.3), ("fresh-home-int", I, "*"),
        ("store-being-created", K, "mlflow.db.tmp*"), ("store-created-int", I, "mlflow.db"),
        ("journal-started", K, "optuna.journal"),
        ("pretrain-checkpoint-int", I, "cache/pretrain-*.pt"), ("pretrain-checkpoint", K, "cache/pretrain-*.pt"),
        ("finetune-partial", K, "cache/finetune-*.partial.pt"), ("finetune-partial-int", I, "cache/finetune-*.partial.pt"),
        ("finetune-done", K, "cache/finetune-*[0-9a-f].pt"), ("first-row-logged-int", I, "mlartifacts/*/artifacts/images.csv"),
        ("first-row-logged", K, "mlartifacts/*/artifacts/images.csv"),
    ]


EXTRA_KILLS = {"fresh-0.3s", "store-created-int", "pretrain-checkpoint-int", "finetune-partial", "first-row-logged-int"}


@pytest.mark.slow
@pytest.mark.crash
@pytest.mark.parametrize("name,sig,when", [
    # the default run keeps one signal per kill point; the twin with the other signal runs with -m crash
    pytest.param(*k, id=k[0], marks=[pytest.mark.huge] if k[0] in EXTRA_KILLS else []) for k in _kill_points()])
def test_a_kill_at_any_point_then_a_rerun_gives_the_uninterrupted_table(tmp_path, two_rows, name, sig, when):
    study, _, expected = two_rows
    home = tmp_path / "home"
    proc = bench(home, study)
    deadline = time.monotonic() + 600
    start = time.monotonic()
    while True:
        ready = (time.monotonic() - start >= when) if isinstance(when, float) else bool(list(home.glob(when)))
        if ready or proc.poll() is not None:
            break
        assert time.monotonic() < deadline
        time.sleep(0.002)
    assert proc.poll() is None, f"finished before the kill point {when}"
    proc.send_signal(sig)
    _, err = proc.communicate(timeout=300)
    if sig == signal.SIGINT:  # Ctrl-C: quiet, exit code 130
        assert proc.returncode == 130 and "Traceback" not in err, err[-2000:]
        assert len(err.strip().splitlines()) <= 1, err[-2000:]
    else:
        assert proc.returncode == -signal.SIGKILL
    check_home(home, expected, finish(bench(home, study)))


@pytest.mark.slow
def test_bench_report_prints_and_writes_markup_like_names_literally(run_cli, tmp_path, two_rows):
    _, ref, _ = two_rows
    home = tmp_path / "home"
    shutil.copytree(ref, home)
    code, out, err = run_cli("report", "crash", "--no-figures", "--no-log", "--markdown", "--html",
                             "--out", tmp_path / "out", "--home", home)
    assert code == 0, err
    assert B in out and "crash [link=file:///etc]t[/link]" in out
    md = (tmp_path / "out" / "crash.md").read_text()
    assert "<script>" not in md and "B \\[bold\\]x\\[/" in md
    assert "<script>x" not in (tmp_path / "out" / "report.html").read_text()


def _children(pid: int) -> list[int]:
    """The ``--workers`` processes of ``pid`` (multiprocessing's spawned children)."""
    out = []
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
            cmd = (stat.parent / "cmdline").read_bytes()
        except OSError:
            continue
        if int(fields[1]) == pid and b"spawn_main" in cmd:
            out.append(int(stat.parent.name))
    return out


def _running(pid: int) -> bool:
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0] != "Z"
    except OSError:
        return False


@pytest.mark.slow
@pytest.mark.crash
@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="reads /proc")
def test_workers_die_with_their_parent_and_the_rerun_finishes(tmp_path, two_rows):
    study, _, expected = two_rows
    home = tmp_path / "home"
    proc = bench(home, study, "--workers", "2")
    deadline = time.monotonic() + 600
    while len(_children(proc.pid)) < 2:
        assert proc.poll() is None and time.monotonic() < deadline
        time.sleep(0.05)
    workers = _children(proc.pid)
    time.sleep(3)  # they are claiming and training
    proc.kill()
    proc.wait()
    deadline = time.monotonic() + 30
    while any(_running(w) for w in workers):
        assert time.monotonic() < deadline, "workers outlived their parent"
        time.sleep(0.1)
    check_home(home, expected, finish(bench(home, study)))
