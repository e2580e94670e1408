"""Progress when output is not a terminal: plain lines on stderr (stage start/end, and about every
BENCH_PROGRESS_SECONDS inside a stage); nothing with --quiet; Rich bars on a terminal."""
import io
import os
import re
import subprocess
import sys

import pytest
from rich.console import Console

from bench.core.progress import duration, stage_progress

LINE = re.compile(r"^\[\d\d:\d\d:\d\d\] (?P<desc>.+): (?P<text>(?:start|epoch|step|done|stopped) .*)$")


def _lines(text: str) -> list[tuple[str, str]]:
    return [(m["desc"], m["text"]) for m in map(LINE.match, text.splitlines()) if m]


def test_lines_report_stage_epoch_step_loss_elapsed_and_time_left(monkeypatch):
    monkeypatch.setenv("BENCH_PROGRESS_SECONDS", "0")
    out = io.StringIO()
    with stage_progress(4, "Ours [seed 0]: finetune", epochs=2, stream=out) as advance:
        for epoch in (1, 2):
            for loss in (0.5, 0.25):
                advance(epoch=epoch, loss=loss)
    lines = _lines(out.getvalue())
    assert {d for d, _ in lines} == {"Ours [seed 0]: finetune"}
    texts = [t for _, t in lines]
    assert texts[0] == "start (4 steps)" and texts[-1].startswith("done in 0s (4/4 steps)")
    # no progress line on the last step: the "done" line says it
    assert texts[1:-1] == [f"epoch {e}/2, step {s}/4, loss {v}, elapsed 0s, left ~0s"
                           for e, s, v in ((1, 1, 0.5), (1, 2, 0.25), (2, 3, 0.5))]


def test_lines_come_about_every_interval_not_every_step(monkeypatch):
    monkeypatch.setenv("BENCH_PROGRESS_SECONDS", "3600")
    out = io.StringIO()
    with stage_progress(1000, "pretrain (maxl)", stream=out) as advance:
        for _ in range(1000):
            advance(loss=0.1)
    assert [t for _, t in _lines(out.getvalue())] == ["start (1000 steps)", "done in 0s (1000/1000 steps)"]


def test_a_stage_that_stops_says_where(monkeypatch):
    monkeypatch.setenv("BENCH_PROGRESS_SECONDS", "0")
    out = io.StringIO()
    with pytest.raises(KeyboardInterrupt):
        with stage_progress(10, "finetune", stream=out) as advance:
            advance(epoch=1, loss=1.0)
            raise KeyboardInterrupt
    assert _lines(out.getvalue())[-1][1] == "stopped after 1/10 steps, 0s (KeyboardInterrupt)"


def test_quiet_and_terminal_write_no_lines(monkeypatch):
    monkeypatch.setenv("BENCH_PROGRESS_SECONDS", "0")
    out = io.StringIO()
    with stage_progress(3, "finetune", quiet=True, stream=out) as advance:
        advance(epoch=1, loss=1.0)
    monkeypatch.setattr(Console, "is_terminal", property(lambda self: True))
    with stage_progress(3, "finetune", stream=out) as advance:  # a Rich bar instead
        advance(epoch=1, loss=1.0)
    assert out.getvalue() == ""


def test_duration():
    assert [duration(s) for s in (0.4, 59.6, 75, 3599, 3600 + 125)] == ["0s", "1m00s", "1m15s", "59m59s", "1h02m"]


def _bench(args: list[str], home) -> str:
    """`bench … > log 2>&1` with progress lines on every step; the log."""
    log = home.with_suffix(".log")
    env = {k: v for k, v in os.environ.items() if k != "MLFLOW_TRACKING_URI"}
    with open(log, "w") as f:
        res = subprocess.run([sys.executable, "-m", "bench", *args, "--home", str(home)], stdout=f,
                             stderr=subprocess.STDOUT, env={**env, "BENCH_PROGRESS_SECONDS": "0"}, timeout=1200)
    text = log.read_text()
    assert res.returncode == 0, text[-3000:]
    return text


@pytest.mark.slow
def test_quiet_silences_the_lines_of_a_run_to_a_log(tmp_path):
    spec = tmp_path / "tiny.yaml"
    spec.write_text("title: t\nrows:\n  - {name: Pre, method: ours, stage: pretrain}\n")
    loud = _bench(["run", str(spec), "--preset", "smoke"], tmp_path / "loud")
    assert [d for d, _ in _lines(loud)][:1] == ["Pre [seed 0]: pretrain (maxl)"]
    quiet = _bench(["run", str(spec), "--preset", "smoke", "--quiet"], tmp_path / "quiet")
    assert _lines(quiet) == [] and "study tiny-smoke-" in quiet


@pytest.mark.slow
def test_table2_to_a_log_file_leaves_stage_and_progress_lines(tmp_path):
    log = _bench(["run", "table2", "--preset", "smoke"], tmp_path / "home")
    lines = _lines(log)
    for stage in ("Ours without meta-test [seed 0]: pretrain (maxl)", "Ours without meta-test [seed 0]: finetune",
                  "RIDNet [seed 0]: finetune", "MIRNet [seed 0]: finetune"):
        texts = [t for d, t in lines if d == stage]
        assert texts[0].startswith("start (") and texts[-1].startswith("done in "), (stage, texts)
        assert any(re.fullmatch(r"epoch 1/1, step 1/\d+, loss [\d.e+-]+(, meta [\d.e+-]+)?, elapsed \d+s, left ~\d+s", t)
                   for t in texts), (stage, texts)
    assert "Table 2" in log and "4 finished trial(s)" in log
