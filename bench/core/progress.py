"""Progress of a training stage: Rich bars on a terminal, plain lines on stderr otherwise.

A run whose output goes to a log file (`bench run table2 > log 2>&1`) would otherwise stay silent
for its whole length; there each stage writes one line when it starts and ends and one about every
``BENCH_PROGRESS_SECONDS`` (default 30) while it runs: stage, epoch, step/total, loss, elapsed,
estimated time left.
"""
from __future__ import annotations

import os
import sys
import time
from contextlib import contextmanager
from typing import Callable, Iterator, TextIO

from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn, TimeRemainingColumn

Advance = Callable[..., None]


def interval() -> float:
    """Seconds between two progress lines inside a stage (``BENCH_PROGRESS_SECONDS``, default 30)."""
    return float(os.environ.get("BENCH_PROGRESS_SECONDS", "30"))


def duration(seconds: float) -> str:
    """``75.2`` -> ``"1m15s"``; short enough for a log line."""
    s = int(round(seconds))
    h, rest = divmod(s, 3600)
    return f"{h}h{rest // 60:02d}m" if h else (f"{s // 60}m{s % 60:02d}s" if s >= 60 else f"{s}s")


@contextmanager
def stage_progress(total: int, desc: str, quiet: bool = False, epochs: int | None = None,
                   stream: TextIO | None = None) -> Iterator[Advance]:
    """Report a stage of ``total`` steps; yields ``advance(epoch=…, **fields)``, called once a step.

    Silent with ``quiet``; a Rich bar when stdout is a terminal; else lines on ``stream`` (stderr)."""
    if quiet:
        yield lambda **_: None
    elif Console().is_terminal:
        with _bar(total, desc) as advance:
            yield advance
    else:
        with LineProgress(total, desc, epochs, stream or sys.stderr) as line:
            yield line.advance


@contextmanager
def _bar(total: int, desc: str) -> Iterator[Advance]:
    cols = [TextColumn("{task.description}", markup=False), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn(),
            TimeRemainingColumn(), TextColumn("{task.fields[info]}")]
    with Progress(*cols, transient=True) as bar:
        task = bar.add_task(desc, total=total, info="")

        def advance(**info: float) -> None:
            text = " ".join(f"{k} {v:.4g}" for k, v in info.items())
            bar.update(task, advance=1, **({"info": text} if info else {}))

        yield advance


class LineProgress:
    """Plain progress lines for logs: start, about every ``interval()`` seconds, end."""

    def __init__(self, total: int, desc: str, epochs: int | None, stream: TextIO) -> None:
        self.total, self.desc, self.epochs, self.stream = total, desc, epochs, stream
        self.step, self.fields = 0, {}
        self.every = interval()

    def __enter__(self) -> LineProgress:
        self.start = self.last = time.monotonic()
        self._write(f"start ({self.total} steps)")
        return self

    def advance(self, **fields: float) -> None:
        self.step += 1
        self.fields.update(fields)
        now = time.monotonic()
        if now - self.last >= self.every and self.step < self.total:
            self.last = now
            self._write(self._status(now))

    def __exit__(self, kind, exc, tb) -> None:
        elapsed = duration(time.monotonic() - self.start)
        if kind is None:
            self._write(f"done in {elapsed} ({self.step}/{self.total} steps)")
        else:
            self._write(f"stopped after {self.step}/{self.total} steps, {elapsed} ({kind.__name__})")

    def _status(self, now: float) -> str:
        parts = []
        if "epoch" in self.fields:
            parts.append(f"epoch {int(self.fields['epoch'])}" + (f"/{self.epochs}" if self.epochs else ""))
        parts.append(f"step {self.step}/{self.total}")
        parts += [f"{k} {v:.4g}" for k, v in self.fields.items() if k != "epoch"]
        elapsed = now - self.start
        left = elapsed / self.step * (self.total - self.step)
        parts += [f"elapsed {duration(elapsed)}", f"left ~{duration(left)}"]
        return ", ".join(parts)

    def _write(self, text: str) -> None:
        print(f"[{time.strftime('%H:%M:%S')}] {self.desc}: {text}", file=self.stream, flush=True)


__all__ = ["stage_progress", "LineProgress", "interval", "duration"]
