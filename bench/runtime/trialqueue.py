"""A study's queue of rows: claim the next one, spot trials whose process died, retry them.

Optuna's journal storage has no heartbeat, so a trial left RUNNING by a killed process looks just
like one still running. Here each claimed trial holds an exclusive ``flock`` on its own lock file
for as long as its process lives — the kernel drops it when the process dies, however it dies.
Queueing, claiming and the liveness check all happen under one study-wide lock, so two commands
started at once neither run a row twice nor take a just-claimed trial for a dead one. Trials
claimed on another machine (a shared RDB storage) are judged by Optuna's heartbeat instead.

Two things have no public Optuna API: writing a user attribute on a trial this process did not
ask for (``recover``), and the RDB heartbeat thread (``heartbeat``). They use Optuna internals,
checked against optuna 5.0 (the range pyproject.toml pins).
"""
from __future__ import annotations

import fcntl
import json
import os
import socket
import warnings
from contextlib import contextmanager, nullcontext
from datetime import datetime, timedelta
from pathlib import Path
from typing import IO, Callable, ContextManager, Iterator

import optuna

State = optuna.trial.TrialState
CLAIM_GRACE = timedelta(seconds=60)  # a trial claimed elsewhere gets this long to record its owner


def trial_params(t: optuna.trial.FrozenTrial) -> dict:
    """A trial's row parameters, also while it is still WAITING (they sit in its fixed params)."""
    return t.params or t.system_attrs.get("fixed_params", {})


def _key(params: dict) -> tuple:
    return tuple(sorted(params.items()))


def repair_journal(path: Path) -> str | None:
    """Cut a journal file back to its last complete record, as a crash mid-write leaves it torn
    (Optuna would otherwise append the next record to the partial line and fail on every read
    after). The dropped bytes are kept beside it; returns a one-line notice, or None if whole."""
    if not _torn_at(path):
        return None
    from optuna.storages.journal import JournalFileSymlinkLock
    from optuna.storages.journal._file import get_lock_file  # optuna 5.0, pinned: the lock append_logs holds

    with get_lock_file(JournalFileSymlinkLock(str(path))):
        cut = _torn_at(path)
        if cut is None:
            return None
        data = path.read_bytes()
        dropped = data[cut:]
        aside = path.with_name(f"{path.name}.dropped-{datetime.now():%Y%m%d-%H%M%S}")
        aside.write_bytes(dropped)
        with open(path, "r+b") as f:
            f.truncate(cut)
            f.flush()
            os.fsync(f.fileno())
    kept, lost = data[:cut].count(b"\n"), dropped.count(b"\n") + (not dropped.endswith(b"\n"))
    return (f"{path}: a crash left a record torn; kept the {kept} complete record(s) before it, dropped "
            f"{len(dropped)} bytes ({lost} line(s), saved as {aside.name}); a row whose record was dropped runs again")


def _torn_at(path: Path) -> int | None:
    """The byte offset after the last record before the first torn one, or None if every line is a record."""
    try:
        data = path.read_bytes()
    except FileNotFoundError:
        return None
    pos = 0
    for line in data.splitlines(keepends=True):
        if not line.endswith(b"\n"):
            return pos
        try:
            json.loads(line)
        except ValueError:
            return pos
        pos += len(line)
    return None


class TrialQueue:
    """The queued, running and finished trials of one Optuna study, seen from this machine."""

    def __init__(self, study: optuna.Study, lock_dir: Path) -> None:
        self.study, self.lock_dir = study, lock_dir
        lock_dir.mkdir(parents=True, exist_ok=True)

    def _lock_path(self, number: int | None = None) -> Path:
        name = self.study.study_name + ("" if number is None else f"-trial{number}")
        return self.lock_dir / f"{name}.lock"

    @contextmanager
    def locked(self) -> Iterator[None]:
        """The study-wide lock: held while the queue is read and changed, never while training."""
        with open(self._lock_path(), "a") as fh:
            fcntl.flock(fh, fcntl.LOCK_EX)
            yield

    def _alive(self, t: optuna.trial.FrozenTrial) -> bool:
        owner = t.user_attrs.get("owner")
        if owner is None:  # claimed under the lock we hold, so its claimer died at once — or it is remote
            return t.datetime_start is not None and datetime.now() - t.datetime_start < CLAIM_GRACE
        if owner.get("host") != socket.gethostname():
            return True  # another machine's trial: Optuna's heartbeat (RDB storage) fails it when stale
        with open(self._lock_path(t.number), "a") as fh:
            try:
                fcntl.flock(fh, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                return True
            return False

    def recover(self) -> list[int]:
        """Fail the RUNNING trials whose process is gone, so that their rows are queued again."""
        with warnings.catch_warnings():  # "experimental since 2.9"
            warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
            optuna.storages.fail_stale_trials(self.study)  # RDB with heartbeat; a no-op for the journal
        dead = []
        for t in self.study.get_trials(deepcopy=False, states=(State.RUNNING,)):
            if not self._alive(t):
                self.study._storage.set_trial_user_attr(
                    t._trial_id, "error", f"its process ({t.user_attrs.get('owner', 'unknown')}) died; retried")
                try:
                    self.study.tell(t.number, state=State.FAIL)
                except (ValueError, RuntimeError):  # finished meanwhile by a remote owner
                    continue
                dead.append(t.number)
        return dead

    def missing(self, wanted: list[dict], settled: Callable[[optuna.trial.FrozenTrial], bool],
                current: Callable[[optuna.trial.FrozenTrial], bool] = lambda t: True) -> list[dict]:
        """Those of ``wanted`` with no trial waiting, running, ``settled`` or complete and ``current``
        (a complete trial the current code would not produce again is run anew)."""
        taken = {_key(trial_params(t)) for t in self.study.get_trials(deepcopy=False)
                 if t.state in (State.WAITING, State.RUNNING) or (t.state == State.COMPLETE and current(t))
                 or settled(t)}
        return [p for p in wanted if _key(p) not in taken]

    def enqueue(self, wanted: list[dict], settled: Callable[[optuna.trial.FrozenTrial], bool],
                current: Callable[[optuna.trial.FrozenTrial], bool] = lambda t: True) -> int:
        """Queue each of ``wanted`` that is ``missing``; returns how many were queued.

        A row that failed before (its process died, or was interrupted) is queued with the MLflow
        run of its last attempt, which the trial reopens and carries on in (``resume_run``); a row
        whose complete trial is not ``current`` gets a new run.
        """
        todo = self.missing(wanted, settled, current)
        trials = self.study.get_trials(deepcopy=False)
        for params in todo:
            earlier = [t for t in trials if _key(trial_params(t)) == _key(params) and "mlflow_run_id" in t.user_attrs]
            # resume an interrupted attempt; a complete but outdated trial's run stays as it is
            resume = earlier and earlier[-1].state != State.COMPLETE
            attrs = {"resume_run": earlier[-1].user_attrs["mlflow_run_id"]} if resume else {}
            self.study.enqueue_trial(params, user_attrs=attrs, skip_if_exists=False)
        return len(todo)

    def claim(self) -> tuple[optuna.Trial, IO] | None:
        """Take the oldest queued trial; returns it with its held lock file, or None if none waits.

        Call under ``locked()``. The caller keeps the file open until the trial is told its state.
        """
        if not self.study.get_trials(deepcopy=False, states=(State.WAITING,)):
            return None
        trial = self.study.ask()
        frozen = next(t for t in self.study.get_trials(deepcopy=False) if t.number == trial.number)
        if "fixed_params" not in frozen.system_attrs:
            # another machine took the last queued one meanwhile; ask() made a fresh, empty trial
            self.study.tell(trial, state=State.PRUNED)
            return None
        fh = open(self._lock_path(trial.number), "a")
        fcntl.flock(fh, fcntl.LOCK_EX | fcntl.LOCK_NB)  # a fresh trial number: nobody else holds it
        trial.set_user_attr("owner", {"host": socket.gethostname(), "pid": os.getpid()})
        return trial, fh

    def busy(self, wanted: list[dict]) -> bool:
        """Whether any of ``wanted`` is being run right now (by a live process)."""
        keys = {_key(p) for p in wanted}
        return any(_key(trial_params(t)) in keys
                   for t in self.study.get_trials(deepcopy=False, states=(State.RUNNING, State.WAITING)))

    def heartbeat(self, trial: optuna.Trial) -> ContextManager:
        """Optuna's heartbeat thread for ``trial`` where the storage has one (RDB), else nothing."""
        from optuna.storages._heartbeat import get_heartbeat_thread, is_heartbeat_enabled  # optuna 5.0, pinned

        storage = self.study._storage
        return get_heartbeat_thread(trial._trial_id, storage) if is_heartbeat_enabled(storage) else nullcontext()
