"""What a trainer needs from its caller: a device, a seeded RNG, a metric sink, progress, and
somewhere to leave in-stage checkpoints so that a killed stage carries on where it stopped."""
from __future__ import annotations

import os
import time
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Callable, Iterator

import numpy as np
import torch

from bench.core.progress import Advance, stage_progress


@dataclass
class TrainContext:
    device: torch.device
    rng: np.random.Generator
    log: Callable[[dict[str, float], int], None] = lambda metrics, step: None
    image: Callable[[np.ndarray, str], None] = lambda array, name: None  # e.g. masks for Figs. 5/6
    on_validate: Callable[[int, dict[str, float]], None] = lambda epoch, metrics: None  # e.g. Optuna pruning
    quiet: bool = False
    label: str = ""  # which row the stage trains, for the progress display
    history: list[dict] = field(default_factory=list)
    save_state: Callable[[dict], None] | None = None  # writes an in-stage checkpoint (atomically)
    resume: dict | None = None  # the interrupted stage's last in-stage checkpoint, if any
    _last_save: float = field(default_factory=time.monotonic)

    def checkpoint(self, epoch: int, model: torch.nn.Module, stateful: list, last: bool = False, **extra) -> None:
        """Epoch ``epoch`` is done: save all a rerun needs to go on from epoch ``epoch + 1`` —
        weights, the ``stateful`` objects' ``state_dict()`` (optimizers, LR schedulers, the patch
        sampler's walk), both RNG streams, history and the trainer's ``extra`` — at most
        every ``BENCH_CHECKPOINT_SECONDS`` (default 30) so that small stages do not spend their
        time writing. The stage's final epoch is saved as the stage checkpoint instead."""
        if self.save_state is None or last:
            return
        every = float(os.environ.get("BENCH_CHECKPOINT_SECONDS", "30"))
        if time.monotonic() - self._last_save < every:
            return
        state = {"epoch": epoch, "model": model.state_dict(), "stateful": [o.state_dict() for o in stateful],
                 "torch_rng": torch.get_rng_state(), "numpy_rng": self.rng.bit_generator.state,
                 "history": list(self.history), "extra": extra}
        if torch.cuda.is_available():
            state["cuda_rng"] = torch.cuda.get_rng_state_all()
        self.save_state(state)
        self._last_save = time.monotonic()

    def restore(self, model: torch.nn.Module, stateful: list) -> tuple[int, dict]:
        """Load the interrupted stage's checkpoint, if any; returns (first epoch to run, ``extra``)."""
        s = self.resume
        if s is None:
            return 1, {}
        model.load_state_dict(s["model"])
        for obj, state in zip(stateful, s["stateful"], strict=True):
            obj.load_state_dict(state)
        torch.set_rng_state(s["torch_rng"])
        if "cuda_rng" in s and torch.cuda.is_available():
            torch.cuda.set_rng_state_all(s["cuda_rng"])
        self.rng.bit_generator.state = s["numpy_rng"]
        self.history[:] = s["history"]
        return s["epoch"] + 1, s["extra"]

    def record(self, metrics: dict[str, float], step: int) -> None:
        """Keep an epoch's metrics (returned with the checkpoint) and send them to the sink."""
        self.history.append({"step": step, **metrics})
        self.log(metrics, step)

    @contextmanager
    def progress(self, total: int, desc: str, epochs: int | None = None) -> Iterator[Advance]:
        """Progress of ``total`` steps (bench.core.progress); yields ``advance(epoch=…, **fields)``.
        Silent with ``quiet``."""
        with stage_progress(total, f"{self.label}: {desc}" if self.label else desc, self.quiet, epochs) as advance:
            yield advance


def seed_everything(seed: int) -> np.random.Generator:
    torch.manual_seed(seed)
    return np.random.default_rng(seed)
