"""Rows that read nothing of the trained network, scored once per study instead of once per seed.

An adaptation entry that ``requires`` nothing of the model (zs-n2n's fresh network, NLM, BM3D)
gives the same per-instance results whichever training seed's network the row is paired with. The
first trial of such a row stores its results — the choice on its ``select:`` grid, every
candidate's validation curves, the per-instance rows — in the stage cache, keyed by the entry, the
grid, the code of its moves and loss, and the pixels of every instance; the other seeds' trials
read them. The gains still pair with each seed's own ``none`` row, and each seed's validation
records are recomputed against its own network, so only the time is shared. The stochastic part
(zs-n2n's initialisation) is seeded with ``SEED`` whatever the trial's seed, so every trial that
computes the results computes the same ones.
"""
from __future__ import annotations

import fcntl
import hashlib
import json
import os
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Callable, Iterator, Sequence

import numpy as np
import torch
from torch import nn

from bench.adaptation.evaluate import Progress, Target, evaluate
from bench.adaptation.registry import Adaptation
from bench.adaptation.select import adaptations_needed, candidate_curves, candidates, no_adaptation, pick, run_label
from bench.core.fingerprint import module_digest
from bench.core.tempfiles import temp_path
from bench.data.base import ImagePair
from bench.runtime import tracking

SEED = 0
"""The seed a shared row's stochastic parts use (zs-n2n's per-image network), for every trial."""

VERSION = 1
"""Bump when what a stored result holds changes."""


def network_free(entry: Adaptation) -> bool:
    """Whether ``entry``'s results do not depend on the model it is given (``requires`` nothing)."""
    return entry.requires == "nothing"


def _pixels(h: Any, pairs: Sequence[ImagePair]) -> None:
    for p in pairs:
        h.update(p.name.encode())
        for a in (p.noisy, p.clean):
            h.update(str(a.shape).encode())
            h.update(np.ascontiguousarray(a).tobytes())


def result_key(entry: Adaptation, grid: dict[str, Sequence] | None, select_pairs: Sequence[ImagePair],
               targets: Sequence[Target]) -> str:
    """What decides a shared row's results: the entry and its grid, the code of its moves and loss
    (and the plugin distribution's version), the validation and evaluation instances' pixels."""
    code = {m: module_digest(m) for m in sorted({type(entry.mover).__module__, type(entry.objective).__module__,
                                                  "bench.adaptation.run", "bench.adaptation.select",
                                                  "bench.adaptation.evaluate", "bench.adaptation.classical",
                                                  "bench.adaptation.zsn2n"})}
    h = hashlib.sha256(json.dumps({"v": VERSION, "entry": entry.describe(), "grid": grid or {}, "code": code,
                                   "seed": SEED}, sort_keys=True, default=str).encode())
    h.update(b"select")
    _pixels(h, select_pairs)
    for t in targets:
        h.update(f"target {t.split}/{t.scenario}".encode())
        _pixels(h, t.pairs)
    return h.hexdigest()[:16]


class SharedResults:
    """``root/row-<key>.json``: a shared row's results, written atomically, one writer at a time."""

    def __init__(self, root: Path) -> None:
        self.root = Path(root)

    def path(self, key: str) -> Path:
        return self.root / f"row-{key}.json"

    @contextmanager
    def lock(self, key: str) -> Iterator[None]:
        """Held while a shared row is looked up or computed: another seed's trial waits, then reads it."""
        self.root.mkdir(parents=True, exist_ok=True)
        with open(self.root / f"row-{key}.lock", "w") as fh:
            fcntl.flock(fh, fcntl.LOCK_EX)
            try:
                yield
            finally:
                fcntl.flock(fh, fcntl.LOCK_UN)

    def load(self, key: str) -> dict | None:
        """The stored results, or None (not computed yet, or unreadable: computed again)."""
        try:
            return json.loads(self.path(key).read_text())
        except (OSError, ValueError):
            return None

    def save(self, key: str, result: dict) -> None:
        path = self.path(key)
        tmp = temp_path(path)
        with tracking.disk_errors(where=path):
            try:
                tmp.write_text(json.dumps(result, default=float))
                os.replace(tmp, path)
            finally:
                tmp.unlink(missing_ok=True)


def score_shared(store: SharedResults, model: nn.Module, entry: Adaptation, targets: Sequence[Target],
                 device: torch.device, *, grid: dict[str, Sequence] | None = None,
                 select_pairs: Sequence[ImagePair] = (), progress: Progress | None = None
                 ) -> tuple[Adaptation, list[dict], list[dict]]:
    """``bench.adaptation.evaluate.score`` for a network-free ``entry``, computed by the first trial
    and read by the others (see the module docstring); the validation records are this ``model``'s."""
    key = result_key(entry, grid, select_pairs, targets)
    with store.lock(key):
        saved = store.load(key)
        if saved is None:
            computed = _compute(model, entry, targets, device, grid, select_pairs, progress)
            store.save(key, computed)
            saved = store.load(key) or computed  # what every other trial reads, to the last digit
    if not grid:
        return entry, saved["rows"], []
    curves = {k: np.array(v, dtype=float) for k, v in saved["curves"].items()}
    with _progress(progress, len(select_pairs), "none on val (the shared row's validation gains)") as tick:
        base = no_adaptation(model, select_pairs, device, tick)
    chosen, records = pick(entry, grid, base, curves, chosen=saved["chosen"])
    return chosen, saved["rows"], records


def _compute(model: nn.Module, entry: Adaptation, targets: Sequence[Target], device: torch.device,
             grid: dict[str, Sequence] | None, select_pairs: Sequence[ImagePair], progress: Progress | None) -> dict:
    out: dict[str, Any] = {"version": VERSION}
    if grid:
        runs = adaptations_needed(entry, grid, len(select_pairs)) - len(select_pairs)
        with _progress(progress, runs, f"select {entry.name} on val (shared by every seed)") as tick:
            curves = candidate_curves(model, entry, grid, select_pairs, device, SEED, tick)
        options = candidates(entry, grid)
        # the base (no adaptation) is the same for every candidate, so the best mean gain is the best mean PSNR
        means = [float(curves[run_label(c)][:, c.updates_behind_prediction].mean()) for c in options]
        out["chosen"] = max(range(len(options)), key=lambda i: (means[i], -i))
        out["curves"] = {k: v.tolist() for k, v in curves.items()}
        entry = options[out["chosen"]]
    with _progress(progress, sum(len(t.pairs) for t in targets), f"adapt ({entry.name}, shared by every seed)") as tick:
        out["rows"] = evaluate(model, entry, targets, device, SEED, progress=tick)
    return out


@contextmanager
def _progress(progress: Progress | None, total: int, what: str) -> Iterator[Callable[[], None]]:
    if progress is None:
        yield lambda: None
        return
    with progress(total, what) as tick:
        yield tick


__all__ = ["SEED", "SharedResults", "network_free", "result_key", "score_shared"]
