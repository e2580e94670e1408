"""The command line: method listing, and bad input as one line with exit code 2."""
import json
import subprocess
import sys

import pytest

from bench.cli import main


def run_cli(capsys, *args):
    with pytest.raises(SystemExit) as exc:
        main(list(args))
    out = capsys.readouterr()
    return exc.value.code, out.out, out.err


def test_methods_json_reports_the_paper_counts(capsys):
    main(["methods", "--json"])
    rows = {r["name"]: r for r in json.loads(capsys.readouterr().out)}
    assert rows["ours"]["params"]["restorer"] == 603_360
    assert rows["ours"]["params"]["mask"] == 56_449
    assert rows["ours"]["params"]["adapted"] == 37_728 + 21_024
    assert rows["chi"]["params"]["restorer"] == 620_928


@pytest.mark.parametrize("args,needle", [
    (["run", "nosuchstudy"], "unknown study 'nosuchstudy'"),
    (["run", "table2", "--preset", "huge"], "unknown preset 'huge'"),
    (["run", "table2", "--set", "finetune.epochz=3"], "unknown key 'finetune.epochz'"),
    (["run", "table2", "--set", "finetune.epochs=-1"], "finetune.epochs"),
    (["run", "table2", "--set", "finetune.epochs=abc"], "finetune.epochs"),
    (["run", "table2", "--set", "noequals"], "expected key=value"),
    (["run", "table2", "--seeds", "a,b"], "--seeds"),
    (["run", "table2", "--device", "tpu"], "--device 'tpu'"),
    (["run", "table2", "--nosuchflag"], "No such option"),
])
def test_bad_input_is_one_line_and_exit_2(capsys, tmp_path, args, needle):
    code, _, err = run_cli(capsys, *args, "--home", str(tmp_path))
    assert code == 2
    assert needle in err
    assert len(err.strip().splitlines()) == 1 and "Traceback" not in err


def test_bad_study_files(capsys, tmp_path):
    bad_yaml = tmp_path / "bad.yaml"
    bad_yaml.write_text("title: x\nrows: [\n")
    code, _, err = run_cli(capsys, "run", str(bad_yaml), "--home", str(tmp_path))
    assert code == 2 and "malformed YAML" in err and str(bad_yaml) in err
    unknown = tmp_path / "unknown.yaml"
    unknown.write_text("title: x\nrows:\n  - {name: a, method: nosuch}\n")
    code, _, err = run_cli(capsys, "run", str(unknown), "--home", str(tmp_path))
    assert code == 2 and "unknown method 'nosuch'" in err and "ours" in err
    extra = tmp_path / "extra.yaml"
    extra.write_text("title: x\nbogus: 1\nrows:\n  - {name: a, method: ours}\n")
    code, _, err = run_cli(capsys, "run", str(extra), "--home", str(tmp_path))
    assert code == 2 and "bogus" in err


def test_unreachable_storage_leaves_no_mlflow_run(capsys, tmp_path):
    code, _, err = run_cli(capsys, "run", "table2", "--preset", "smoke", "--home", str(tmp_path),
                           "--storage", "postgresql://user:secret@127.0.0.1:1/nodb")
    assert code == 2 and "--storage" in err and "secret" not in err
    assert not (tmp_path / "mlflow.db").exists()


def test_no_traceback_from_the_console_script(tmp_path):
    proc = subprocess.run([sys.executable, "-m", "bench", "run", "nosuchstudy", "--home", str(tmp_path)],
                          capture_output=True, text=True)
    assert proc.returncode == 2
    assert proc.stderr.strip().startswith("error: unknown study") and "Traceback" not in proc.stderr
