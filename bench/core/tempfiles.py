"""Temp files written beside their target (``<name>.tmp<pid>``, then renamed): a process killed
between the write and the rename leaves one behind, which the next start removes."""
from __future__ import annotations

import os
import re
from pathlib import Path

_TEMP = re.compile(r"\.tmp(\d+)(-journal|-wal|-shm)?$")  # sqlite keeps its journal beside a db


def temp_path(path: Path) -> Path:
    """Where to write ``path`` before renaming it into place: beside it, named after this process."""
    return path.with_name(f"{path.name}.tmp{os.getpid()}")


def pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # someone else's live process
        return True
    return True


def remove_stale(folder: Path) -> list[Path]:
    """Delete the temp files in ``folder`` whose writing process is gone; returns them."""
    removed = []
    try:
        entries = list(folder.iterdir())
    except OSError:
        return removed
    for p in entries:
        m = _TEMP.search(p.name)
        if m and not pid_alive(int(m.group(1))):
            try:
                p.unlink()
                removed.append(p)
            except OSError:
                pass
    return removed


def claim_folder(folder: Path) -> str | None:
    """Make ``folder``, prove it can be written (a probe file), and remove stale temp files in it;
    returns None, or why it cannot be written (the callers turn that into their one-line error)."""
    try:
        folder.mkdir(parents=True, exist_ok=True)
        probe = temp_path(folder / ".probe")
        probe.write_bytes(b"")
        probe.unlink()
    except OSError as e:
        return str(e.strerror or e)
    remove_stale(folder)
    return None

